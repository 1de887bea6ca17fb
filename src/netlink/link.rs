//! Link operations: one small method per kernel operation.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::link::{
    InfoBridge, InfoData, InfoKind, InfoVlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo,
    LinkMessage, Prop,
};

use super::socket::{Netlink, Result};

/// What xen-vif needs to know about a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alt_names: Vec<String>,
    /// IFLA_IFALIAS (`ip link set DEV alias ...`).
    pub alias: Option<String>,
    pub mtu: u32,
    pub mac: Vec<u8>,
    /// ifindex of the bridge this link is a port of.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// ARP off (IFF_NOARP).
    pub noarp: bool,
    /// `bridge`, `dummy`, `vlan`, `veth`, ... (netback's vifs have none).
    pub kind: Option<String>,
    /// For a bridge: whether VLAN filtering is on.
    pub vlan_filtering: Option<bool>,
    /// For a bridge: the VLAN a new port gets as PVID (0: none).
    pub default_pvid: Option<u16>,
    /// For a bridge: whether STP is on, and its forward delay (centiseconds, as the kernel keeps it).
    pub stp: Option<bool>,
    pub forward_delay: Option<u32>,
    /// For a VLAN device: its id, and the link it sits on.
    pub vlan_id: Option<u16>,
    pub lower: Option<u32>,
    /// The device the link belongs to, e.g. `vif-5-0` on the `xen-backend` bus for netback.
    pub parent_dev: Option<String>,
    pub parent_bus: Option<String>,
}

impl Link {
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    fn from_message(m: LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            noarp: m.header.flags.contains(LinkFlags::Noarp),
            ..Default::default()
        };
        for attr in m.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
                LinkAttribute::Mtu(v) => link.mtu = v,
                LinkAttribute::Address(a) => link.mac = a,
                LinkAttribute::Controller(i) if i != 0 => link.master = Some(i),
                LinkAttribute::Link(i) if i != 0 => link.lower = Some(i),
                LinkAttribute::ParentDevName(n) => link.parent_dev = Some(n),
                LinkAttribute::ParentDevBusName(n) => link.parent_bus = Some(n),
                LinkAttribute::PropList(props) => {
                    for p in props {
                        if let Prop::AltIfName(n) = p {
                            link.alt_names.push(n);
                        }
                    }
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(k) => link.kind = Some(kind_name(&k)),
                            LinkInfo::Data(InfoData::Bridge(opts)) => {
                                for o in opts {
                                    match o {
                                        InfoBridge::VlanFiltering(f) => {
                                            link.vlan_filtering = Some(f)
                                        }
                                        InfoBridge::VlanDefaultPvid(p) => {
                                            link.default_pvid = Some(p)
                                        }
                                        InfoBridge::StpState(s) => {
                                            link.stp = Some(
                                                s != netlink_packet_route::link::BridgeStpState::Disabled,
                                            )
                                        }
                                        InfoBridge::ForwardDelay(d) => {
                                            link.forward_delay = Some(d)
                                        }
                                        _ => {}
                                    }
                                }
                            }
                            LinkInfo::Data(InfoData::Vlan(opts)) => {
                                for o in opts {
                                    if let InfoVlan::Id(id) = o {
                                        link.vlan_id = Some(id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Dummy => "dummy".into(),
        InfoKind::Vlan => "vlan".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// A change to one link. Each field left `None` is left alone by the kernel.
#[derive(Clone, Debug, Default)]
pub struct LinkChange {
    pub name: Option<String>,
    /// An empty alias removes it.
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    pub mac: Option<Vec<u8>>,
    /// `Some(0)` detaches from the bridge.
    pub master: Option<u32>,
    pub up: Option<bool>,
    /// ARP on or off (`ip link set DEV arp on|off`).
    pub arp: Option<bool>,
}

/// A new link to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NewLink {
    Bridge { vlan_filtering: bool },
    Dummy,
    Vlan { lower: u32, id: u16 },
}

fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

impl Netlink {
    /// The link of that name (or alternative name), if any.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(skip_stats());
        Ok(self.get(Rt::GetLink(m))?.and_then(link_of))
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(skip_stats());
        Ok(self.get(Rt::GetLink(m))?.and_then(link_of))
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let mut m = LinkMessage::default();
        m.attributes.push(skip_stats());
        self.dump_map(Rt::GetLink(m), link_of)
    }

    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(up) = change.up {
            m.header.change_mask |= LinkFlags::Up;
            if up {
                m.header.flags |= LinkFlags::Up;
            }
        }
        if let Some(arp) = change.arp {
            m.header.change_mask |= LinkFlags::Noarp;
            if !arp {
                m.header.flags |= LinkFlags::Noarp;
            }
        }
        if let Some(n) = &change.name {
            m.attributes.push(LinkAttribute::IfName(n.clone()));
        }
        if let Some(a) = &change.alias {
            m.attributes.push(LinkAttribute::IfAlias(a.clone()));
        }
        if let Some(v) = change.mtu {
            m.attributes.push(LinkAttribute::Mtu(v));
        }
        if let Some(a) = &change.mac {
            m.attributes.push(LinkAttribute::Address(a.clone()));
        }
        if let Some(i) = change.master {
            m.attributes.push(LinkAttribute::Controller(i));
        }
        self.request(Rt::SetLink(m), 0)
    }

    /// Create a link with ifindex `index` (0: the kernel picks), so a plan can name the new
    /// link's index in the steps after its creation.
    pub fn add_link_at(&mut self, name: &str, new: &NewLink, index: u32) -> Result<()> {
        self.request(
            Rt::NewLink(new_link_message(name, new, index)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.request(Rt::DelLink(m), 0)
    }

    pub fn add_alt_name(&mut self, index: u32, alt: &str) -> Result<()> {
        self.request(
            Rt::NewLinkProp(alt_name_message(index, alt)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_alt_name(&mut self, index: u32, alt: &str) -> Result<()> {
        self.request(Rt::DelLinkProp(alt_name_message(index, alt)), 0)
    }
}

/// The RTM_NEWLINK message that creates `new` as `name` (with ifindex `index`, 0: any).
pub fn new_link_message(name: &str, new: &NewLink, index: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    let info = match new {
        NewLink::Bridge { vlan_filtering } => {
            let mut opts = vec![
                // STP off and no forward delay: a vif must forward at once (as xend did).
                InfoBridge::StpState(netlink_packet_route::link::BridgeStpState::Disabled),
                InfoBridge::ForwardDelay(0),
            ];
            // Only when asked: a kernel without CONFIG_BRIDGE_VLAN_FILTERING refuses the
            // attribute (EOPNOTSUPP) even when it says "off".
            if *vlan_filtering {
                opts.push(InfoBridge::VlanFiltering(true));
            }
            vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(opts)),
            ]
        }
        NewLink::Dummy => vec![LinkInfo::Kind(InfoKind::Dummy)],
        NewLink::Vlan { lower, id } => {
            m.attributes.push(LinkAttribute::Link(*lower));
            vec![
                LinkInfo::Kind(InfoKind::Vlan),
                LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(*id)])),
            ]
        }
    };
    m.attributes.push(LinkAttribute::LinkInfo(info));
    m
}

fn alt_name_message(index: u32, alt: &str) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.attributes
        .push(LinkAttribute::PropList(vec![Prop::AltIfName(
            alt.to_string(),
        )]));
    m
}

fn link_of(m: Rt) -> Option<Link> {
    match m {
        Rt::NewLink(l) => Some(Link::from_message(l)),
        _ => None,
    }
}

#[cfg(test)]
mod wire_tests {
    use super::NewLink;
    use netlink_packet_core::Emitable;

    /// Walk netlink attributes (type, payload) in `buf`.
    fn attrs(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
            let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
            out.push((kind, buf[4..len].to_vec()));
            buf = &buf[((len + 3) & !3).min(buf.len())..];
        }
        out
    }

    fn find(a: &[(u16, Vec<u8>)], kind: u16) -> Vec<u8> {
        a.iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("attribute {kind} missing"))
    }

    // From linux/if_link.h.
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINK: u16 = 5;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_VLAN_ID: u16 = 1;
    const IFLA_BR_FORWARD_DELAY: u16 = 1;
    const IFLA_BR_STP_STATE: u16 = 5;
    const IFLA_BR_VLAN_FILTERING: u16 = 7;
    /// struct ifinfomsg: family, pad, type, index, flags, change.
    const IFINFOMSG_LEN: usize = 16;

    fn wire(name: &str, new: &NewLink, index: u32) -> (i32, Vec<(u16, Vec<u8>)>) {
        let m = super::new_link_message(name, new, index);
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let ifindex = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        (ifindex, attrs(&buf[IFINFOMSG_LEN..]))
    }

    #[test]
    fn vlan_newlink_message_on_the_wire() {
        let (ifindex, a) = wire("eth1.4", &NewLink::Vlan { lower: 3, id: 4 }, 11);
        assert_eq!(ifindex, 11);
        assert_eq!(find(&a, IFLA_IFNAME), b"eth1.4\0");
        assert_eq!(find(&a, IFLA_LINK), 3u32.to_ne_bytes());
        let info = attrs(&find(&a, IFLA_LINKINFO));
        assert_eq!(find(&info, IFLA_INFO_KIND), b"vlan\0");
        let data = attrs(&find(&info, IFLA_INFO_DATA));
        assert_eq!(find(&data, IFLA_VLAN_ID), 4u16.to_ne_bytes());
    }

    #[test]
    fn bridge_newlink_message_on_the_wire() {
        for filtering in [false, true] {
            let (ifindex, a) = wire(
                "xenbr0",
                &NewLink::Bridge {
                    vlan_filtering: filtering,
                },
                0,
            );
            assert_eq!(ifindex, 0);
            let info = attrs(&find(&a, IFLA_LINKINFO));
            assert_eq!(find(&info, IFLA_INFO_KIND), b"bridge\0");
            let data = attrs(&find(&info, IFLA_INFO_DATA));
            assert_eq!(find(&data, IFLA_BR_STP_STATE), 0u32.to_ne_bytes());
            assert_eq!(find(&data, IFLA_BR_FORWARD_DELAY), 0u32.to_ne_bytes());
            // Sent only to turn filtering on: kernels without it refuse even "off".
            let vf = data.iter().find(|(k, _)| *k == IFLA_BR_VLAN_FILTERING);
            assert_eq!(vf.map(|(_, v)| v.clone()), filtering.then(|| vec![1u8]));
        }
        let (_, a) = wire("dummy0", &NewLink::Dummy, 0);
        let info = attrs(&find(&a, IFLA_LINKINFO));
        assert_eq!(find(&info, IFLA_INFO_KIND), b"dummy\0");
    }
}
