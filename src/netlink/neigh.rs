//! Proxy neighbour entries (`ip -6 neigh add proxy ADDR dev DEV`).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
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
