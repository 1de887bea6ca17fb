//! network-bridge, two set-ups: a bridge over a NIC (`nic_bridge`, xend's) or bridges on a
//! VLAN trunk (`trunk`). Here: which one the parameters name, and what both show.
//!
//! Validation happens before any change; every change is a plan step.

use anyhow::{Result, anyhow, bail};

use super::nic_bridge::NicBridge;
use super::observed::updown;
use super::{Instance, Params};
use crate::ifname::IfName;
use crate::netlink::{Link, Netlink};

/// `None` for `bridge=null`.
pub fn instance(nl: &mut Netlink, p: &Params) -> Result<Option<Box<dyn Instance>>> {
    if p.get("bridge") == Some("null") {
        return Ok(None);
    }
    if p.has("trunk") {
        return Ok(Some(Box::new(super::trunk::instance(p)?)));
    }
    for k in ["vlans", "bridge_template", "vlan_filtering"] {
        if p.has(k) {
            bail!("{k}= only goes with trunk= (per-VLAN bridges on a trunk)");
        }
    }
    let netdev = match p.netdev()? {
        Some(n) => n,
        None => match nl.default_route_link()? {
            Some(l) => IfName::new(&l.name).map_err(anyhow::Error::msg)?,
            None => bail!("no netdev= given and the host has no default route to take it from"),
        },
    };
    let bridge = p.ifname("bridge")?.unwrap_or_else(|| netdev.clone());
    let pdev = IfName::new(&format!("p{netdev}"))
        .map_err(|e| anyhow!("netdev {netdev}: the NIC's new name: {e}"))?;
    Ok(Some(Box::new(NicBridge {
        netdev,
        bridge,
        pdev,
        force: p.yes("force")?,
    })))
}

pub fn bridge_line(br: &Link) -> String {
    let mac: Vec<String> = br.mac.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "bridge {}: {}, stp {}, forward delay {} s, vlan filtering {}, mac {}\n",
        br.name,
        updown(br),
        match br.stp {
            Some(true) => "on",
            Some(false) => "off",
            None => "?",
        },
        br.forward_delay
            .map_or("?".into(), |d| (d / 100).to_string()),
        if br.vlan_filtering == Some(true) {
            "on"
        } else {
            "off"
        },
        mac.join(":")
    )
}

#[cfg(test)]
mod tests {
    use crate::netlink::NewLink;
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
        let m = crate::netlink::new_link_message(name, new, index);
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
