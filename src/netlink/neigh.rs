//! Proxy neighbour entries (`ip -6 neigh add proxy ADDR dev DEV`).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use super::addr::family_of;
use super::socket::{Netlink, Result};

fn proxy_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family_of(&ip);
    m.header.ifindex = index;
    m.header.flags = NeighbourFlags::Proxy;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m
}

impl Netlink {
    pub fn add_proxy_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        self.request(
            Rt::NewNeighbour(proxy_message(index, ip)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    pub fn del_proxy_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        self.request(Rt::DelNeighbour(proxy_message(index, ip)), 0)
    }
}

impl Netlink {
    /// Proxy entries (`ip neigh show proxy`) on link `index`.
    pub fn proxy_neighbours(&mut self, index: u32) -> Result<Vec<IpAddr>> {
        let mut m = NeighbourMessage::default();
        m.header.flags = NeighbourFlags::Proxy;
        let mut out = Vec::new();
        for msg in self.dump(Rt::GetNeighbour(m))? {
            let Rt::NewNeighbour(n) = msg else { continue };
            if n.header.ifindex != index || !n.header.flags.contains(NeighbourFlags::Proxy) {
                continue;
            }
            for a in n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        out.push(IpAddr::V4(v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        out.push(IpAddr::V6(v6))
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

/// A neighbour entry (`ip neigh show dev DEV`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: IpAddr,
    pub mac: Option<Vec<u8>>,
    pub permanent: bool,
}

fn entry_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family_of(&ip);
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    }));
    m
}

impl Netlink {
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`.
    pub fn set_permanent_neighbour(&mut self, index: u32, ip: IpAddr, mac: &[u8]) -> Result<()> {
        let mut m = entry_message(index, ip);
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(Rt::NewNeighbour(m), NLM_F_CREATE | NLM_F_REPLACE)
    }

    pub fn del_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        self.request(Rt::DelNeighbour(entry_message(index, ip)), 0)
    }

    /// The neighbour entries (not proxies) on link `index`.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        // The whole table, filtered here: a dump request naming the link in its header comes
        // back empty (the kernel filters by a device only for strict-checking sockets, and
        // reads this header differently otherwise).
        let m = NeighbourMessage::default();
        let mut out = Vec::new();
        for msg in self.dump(Rt::GetNeighbour(m))? {
            let Rt::NewNeighbour(n) = msg else { continue };
            if n.header.ifindex != index || n.header.flags.contains(NeighbourFlags::Proxy) {
                continue;
            }
            let mut ip = None;
            let mut mac = None;
            for a in n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        ip = Some(IpAddr::V4(v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        ip = Some(IpAddr::V6(v6))
                    }
                    NeighbourAttribute::LinkLayerAddress(l) => mac = Some(l),
                    _ => {}
                }
            }
            if let Some(ip) = ip {
                out.push(Neighbour {
                    ip,
                    mac,
                    permanent: n.header.state == NeighbourState::Permanent,
                });
            }
        }
        Ok(out)
    }
}
