//! Route operations.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as Rt};

use super::addr::family_of;
use super::socket::{Netlink, Result};

pub const RT_TABLE_MAIN: u32 = 254;

/// One unicast route with the fields xen-vif reads and writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: IpAddr,
    pub prefix_len: u8,
    pub oif: Option<u32>,
    pub gateway: Option<IpAddr>,
    pub src: Option<IpAddr>,
    pub metric: Option<u32>,
    pub table: u32,
    pub protocol: RouteProtocol,
    pub scope: RouteScope,
    pub kind: RouteType,
}

impl Route {
    /// Whether this route (as the kernel lists it) is `want`: the same destination, table,
    /// metric, gateway and device. What the kernel fills in (protocol, scope, a preferred
    /// source) does not make it another route, and no metric is metric 0 (the kernel lists an
    /// IPv4 route of metric 0 without one).
    pub fn same_as(&self, want: &Route) -> bool {
        self.dst == want.dst
            && self.prefix_len == want.prefix_len
            && self.table == want.table
            && self.metric.unwrap_or(0) == want.metric.unwrap_or(0)
            && self.gateway == want.gateway
            && self.oif == want.oif
    }

    /// A host or prefix route through a device, as `ip route add DST dev DEV src SRC metric M`.
    pub fn via_dev(dst: IpAddr, prefix_len: u8, oif: u32) -> Route {
        Route {
            dst,
            prefix_len,
            oif: Some(oif),
            gateway: None,
            src: None,
            metric: None,
            table: RT_TABLE_MAIN,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Link,
            kind: RouteType::Unicast,
        }
    }

    fn message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(&self.dst);
        m.header.destination_prefix_length = self.prefix_len;
        m.header.table = if self.table < 256 {
            self.table as u8
        } else {
            252
        };
        m.header.protocol = self.protocol;
        m.header.scope = self.scope;
        m.header.kind = self.kind;
        m.attributes.push(RouteAttribute::Table(self.table));
        if self.prefix_len > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(self.dst)));
        }
        if let Some(o) = self.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(g) = self.gateway {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        if let Some(s) = self.src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
        }
        if let Some(p) = self.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        m
    }
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(v6)),
        _ => None,
    }
}

impl Netlink {
    /// Every route of one family (`v6`), in every table; only those through link `oif` when
    /// given (the kernel filters, so one vif's routes cost the same with a thousand guests).
    pub fn routes(&mut self, v6: bool, oif: Option<u32>) -> Result<Vec<Route>> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        if let Some(o) = oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        let mut out = Vec::new();
        for msg in self.dump(Rt::GetRoute(m))? {
            let Rt::NewRoute(r) = msg else { continue };
            let mut route = Route {
                dst: if v6 {
                    IpAddr::V6(0.into())
                } else {
                    IpAddr::V4(0.into())
                },
                prefix_len: r.header.destination_prefix_length,
                oif: None,
                gateway: None,
                src: None,
                metric: None,
                table: u32::from(r.header.table),
                protocol: r.header.protocol,
                scope: r.header.scope,
                kind: r.header.kind,
            };
            let mut via_oif = oif.is_none();
            for attr in r.attributes {
                match attr {
                    RouteAttribute::Destination(a) => {
                        if let Some(ip) = ip_of(a) {
                            route.dst = ip;
                        }
                    }
                    RouteAttribute::Gateway(a) => route.gateway = ip_of(a),
                    RouteAttribute::PrefSource(a) => route.src = ip_of(a),
                    RouteAttribute::Oif(o) => {
                        route.oif = Some(o);
                        via_oif |= oif == Some(o);
                    }
                    RouteAttribute::Priority(p) => route.metric = Some(p),
                    RouteAttribute::Table(t) => route.table = t,
                    _ => {}
                }
            }
            // Older kernels ignore the filter: apply it here too.
            if via_oif {
                out.push(route);
            }
        }
        Ok(out)
    }

    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        self.request(Rt::NewRoute(r.message()), NLM_F_CREATE | NLM_F_EXCL)
    }

    pub fn del_route(&mut self, r: &Route) -> Result<()> {
        let mut m = r.message();
        // Deletion matches on what is given; protocol and scope must not narrow it.
        m.header.protocol = RouteProtocol::Unspec;
        m.header.scope = RouteScope::NoWhere;
        self.request(Rt::DelRoute(m), 0)
    }

    /// The link of the main table's default route (IPv4 first, then IPv6), if any.
    pub fn default_route_link(&mut self) -> Result<Option<super::Link>> {
        for v6 in [false, true] {
            let oif = self
                .routes(v6, None)?
                .into_iter()
                .filter(|r| {
                    r.prefix_len == 0 && r.table == RT_TABLE_MAIN && r.kind == RouteType::Unicast
                })
                .find_map(|r| r.oif);
            if let Some(i) = oif {
                return self.link_by_index(i);
            }
        }
        Ok(None)
    }
}
