//! Bridge port VLANs (`bridge vlan add/del/show`), for VLAN-filtering bridges.

use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, LinkAttribute, LinkExtentMask, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};

use super::socket::{Netlink, Result};

/// One VLAN on one bridge port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortVlan {
    pub vid: u16,
    pub pvid: bool,
    pub untagged: bool,
}

impl PortVlan {
    fn info(&self) -> BridgeVlanInfo {
        let mut flags = BridgeVlanInfoFlags::empty();
        if self.pvid {
            flags |= BridgeVlanInfoFlags::Pvid;
        }
        if self.untagged {
            flags |= BridgeVlanInfoFlags::Untagged;
        }
        BridgeVlanInfo {
            flags,
            vid: self.vid,
        }
    }
}

/// The AF_BRIDGE message that adds or removes `vlans` on port `index`.
pub fn port_vlans_message(index: u32, vlans: &[PortVlan]) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.interface_family = AddressFamily::Bridge;
    m.header.index = index;
    m.attributes.push(LinkAttribute::AfSpecBridge(
        vlans
            .iter()
            .map(|v| AfSpecBridge::VlanInfo(v.info()))
            .collect(),
    ));
    m
}

impl Netlink {
    pub fn add_port_vlans(&mut self, index: u32, vlans: &[PortVlan]) -> Result<()> {
        self.request(Rt::SetLink(port_vlans_message(index, vlans)), 0)
    }

    pub fn del_port_vlans(&mut self, index: u32, vlans: &[PortVlan]) -> Result<()> {
        self.request(Rt::DelLink(port_vlans_message(index, vlans)), 0)
    }

    /// The VLANs configured on bridge port `index`.
    pub fn port_vlans(&mut self, index: u32) -> Result<Vec<PortVlan>> {
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let mut out = Vec::new();
        for msg in self.dump(Rt::GetLink(m))? {
            let Rt::NewLink(l) = msg else { continue };
            if l.header.index != index {
                continue;
            }
            for attr in l.attributes {
                let LinkAttribute::AfSpecBridge(specs) = attr else {
                    continue;
                };
                for s in specs {
                    if let AfSpecBridge::VlanInfo(info) = s {
                        out.push(PortVlan {
                            vid: info.vid,
                            pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                            untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
