//! Route mode (vif-route): the host is the guest's gateway. The gateway device's address goes
//! on the vif as /32 (/128), proxy ARP (proxy NDP for IPv6) answers for the guests on the
//! gateway's network, and each guest address gets a host route over the vif.

use std::net::IpAddr;

use anyhow::{Result, bail};

use super::{down_and_rename, filter, find_device, require_device};
use crate::ifname::IfName;
use crate::invocation::{Hotplug, TypeIf};
use crate::netlink::{Address, Link, Netlink, Route};
use crate::plan::Step;
use crate::sysctl;

const IFA_F_NODAD: u32 = 0x02;

/// One entry of the backend's `ip` list: an address or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl GuestAddr {
    fn overlaps(&self, other: &GuestAddr) -> bool {
        if self.ip.is_ipv4() != other.ip.is_ipv4() {
            return false;
        }
        let len = self.prefix_len.min(other.prefix_len);
        network(self.ip, len) == network(other.ip, len)
    }

    fn is_host(&self) -> bool {
        self.prefix_len == if self.ip.is_ipv4() { 32 } else { 128 }
    }
}

/// More than this is not a guest's address list but a mistake (or an attack on the host's FIB).
pub const MAX_GUEST_ADDRS: usize = 256;

/// Parse the space-separated `ip` list; every entry is checked before anything changes.
pub fn parse_guest_addrs(list: &str) -> Result<Vec<GuestAddr>> {
    let mut out: Vec<GuestAddr> = Vec::new();
    for entry in list.split_whitespace() {
        if out.len() == MAX_GUEST_ADDRS {
            bail!("ip lists more than {MAX_GUEST_ADDRS} entries");
        }
        let (addr, len) = match entry.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (entry, None),
        };
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| anyhow::anyhow!("ip entry {entry:?} is not an IPv4 or IPv6 address"))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max && l.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| anyhow::anyhow!("ip entry {entry:?}: bad prefix length {l:?}"))?,
        };
        if prefix_len == 0 {
            bail!("ip entry {entry:?} would route everything to the guest");
        }
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            bail!("ip entry {entry:?} is not a unicast address");
        }
        if network(ip, prefix_len) != ip {
            bail!(
                "ip entry {entry:?} has host bits set (the prefix is {}/{prefix_len})",
                network(ip, prefix_len)
            );
        }
        let g = GuestAddr { ip, prefix_len };
        if out.contains(&g) {
            bail!("ip entry {entry:?} is given twice");
        }
        // Overlapping entries would give one guest two routes for the same addresses, and make
        // offline of one remove the other's: refuse them.
        if let Some(o) = out.iter().find(|o| o.overlaps(&g)) {
            bail!("ip entry {entry:?} overlaps {}/{}", o.ip, o.prefix_len);
        }
        out.push(g);
    }
    Ok(out)
}

fn network(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// The device whose addresses the guests use as gateway: `gatewaydev`/`netdev`, else `dummy0`,
/// else the device of the default route.
pub fn gateway_device(nl: &mut Netlink, hp: &Hotplug) -> Result<Link> {
    if let Some(name) = &hp.gatewaydev {
        return match nl.link_by_name(name.as_str())? {
            Some(l) => Ok(l),
            None => bail!("gateway device {name} does not exist"),
        };
    }
    if let Some(l) = nl.link_by_name("dummy0")? {
        return Ok(l);
    }
    if let Some(l) = nl.default_route_link()? {
        return Ok(l);
    }
    bail!("no gateway device: set gatewaydev (netdev=), create dummy0, or add a default route")
}

/// The gateway's primary IPv4 address and first global IPv6 address.
pub fn gateway_addresses(nl: &mut Netlink, gw: &Link) -> Result<(Option<IpAddr>, Option<IpAddr>)> {
    let addrs = nl.addresses(Some(gw.index))?;
    let v4 = addrs
        .iter()
        .find(|a| a.ip.is_ipv4() && !a.is_secondary())
        .map(|a| a.ip);
    let v6 = addrs
        .iter()
        .find(|a| a.ip.is_ipv6() && a.scope == 0 && !a.is_ipv6_link_local())
        .map(|a| a.ip);
    Ok((v4, v6))
}

fn metric(hp: &Hotplug) -> u32 {
    // The tap of an HVM guest wins over its PV vif for the same addresses.
    match hp.type_if {
        TypeIf::Tap => 1,
        TypeIf::Vif => 2,
    }
}

fn guest_route(hp: &Hotplug, g: &GuestAddr, vif: u32, src: IpAddr) -> Route {
    host_route(g, vif, src, Some(metric(hp)))
}

/// The route to a guest's address over its vif, from the host's address on the vif (`src`).
pub(super) fn host_route(g: &GuestAddr, vif: u32, src: IpAddr, metric: Option<u32>) -> Route {
    let mut r = Route::via_dev(g.ip, g.prefix_len, vif);
    r.src = Some(src);
    r.metric = metric;
    if g.ip.is_ipv6() {
        r.scope = 0;
    }
    r
}

/// Whether `existing` has `r` already (same destination, device, metric and table).
pub(super) fn has_route(existing: &[Route], r: &Route) -> bool {
    existing.iter().any(|e| {
        e.dst == r.dst
            && e.prefix_len == r.prefix_len
            && e.oif == r.oif
            && e.metric.unwrap_or(0) == r.metric.unwrap_or(0)
            && e.table == r.table
    })
}

/// The host's own address on the vif (the guest's gateway), unless `have` has it already.
pub(super) fn address_step(
    have: &[Address],
    index: u32,
    name: &str,
    ip: IpAddr,
    len: u8,
) -> Option<Step> {
    if have.iter().any(|a| a.ip == ip && a.prefix_len == len) {
        return None;
    }
    let mut addr = Address::new(index, ip, len);
    if ip.is_ipv6() {
        // The host already owns this address on the gateway device; duplicate address
        // detection on a point-to-point vif would only delay the guest by a second.
        addr.flags = IFA_F_NODAD;
    }
    Some(Step::AddAddress {
        name: name.to_string(),
        addr,
    })
}

pub fn online(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = require_device(nl, hp)?;
    let gw = gateway_device(nl, hp)?;
    if gw.index == link.index {
        bail!("the gateway device cannot be the vif itself");
    }
    let (gw4, gw6) = gateway_addresses(nl, &gw)?;
    let wants_v6 = hp.ip.iter().any(|g| g.ip.is_ipv6());
    let wants_v4 = hp.ip.iter().any(|g| g.ip.is_ipv4()) || !wants_v6;
    if wants_v4 && gw4.is_none() {
        bail!("gateway device {} has no IPv4 address", gw.name);
    }
    if wants_v6 && gw6.is_none() {
        bail!("gateway device {} has no global IPv6 address", gw.name);
    }
    let name = hp.wanted_name.to_string();
    let (mut steps, needs_down) = down_and_rename(nl, hp, &link, false)?;
    // The filter first, before the guest gets a route.
    steps.extend(filter::online(nl, hp, &link)?);
    let have = nl.addresses(Some(link.index))?;
    let mut gw_addrs = Vec::new();
    if wants_v4 {
        gw_addrs.extend(gw4.map(|ip| (ip, 32)));
    }
    if wants_v6 {
        gw_addrs.extend(gw6.map(|ip| (ip, 128)));
    }
    for (ip, len) in &gw_addrs {
        steps.extend(address_step(&have, link.index, &name, *ip, *len));
    }
    if !link.up || needs_down {
        steps.push(Step::SetUp {
            index: link.index,
            name: name.clone(),
            up: true,
        });
    }
    let ifname = IfName::new(&name).map_err(anyhow::Error::msg)?;
    if wants_v4 {
        push_sysctl(&mut steps, sysctl::ipv4_conf(&ifname, "proxy_arp"), "1");
    }
    let mut existing = Vec::new();
    if wants_v4 {
        existing.extend(nl.routes(false, Some(link.index))?);
    }
    if wants_v6 {
        existing.extend(nl.routes(true, Some(link.index))?);
    }
    for g in &hp.ip {
        let src = if g.ip.is_ipv4() { gw4 } else { gw6 };
        let Some(src) = src else { continue };
        let r = guest_route(hp, g, link.index, src);
        if !has_route(&existing, &r) {
            steps.push(Step::AddRoute {
                dev: name.clone(),
                route: r,
            });
        }
    }
    if wants_v6 {
        let gw_name = IfName::new(&gw.name).map_err(anyhow::Error::msg)?;
        push_sysctl(&mut steps, sysctl::ipv6_conf(&gw_name, "proxy_ndp"), "1");
        let proxied = nl.proxy_neighbours(gw.index)?;
        for g in hp.ip.iter().filter(|g| g.ip.is_ipv6() && g.is_host()) {
            if !proxied.contains(&g.ip) {
                steps.push(Step::AddProxyNeighbour {
                    index: gw.index,
                    dev: gw.name.clone(),
                    ip: g.ip,
                });
            }
        }
    }
    Ok(steps)
}

fn push_sysctl(steps: &mut Vec<Step>, path: String, value: &str) {
    // The path of a renamed vif only exists after the rename; a missing file reads as "0".
    let old = sysctl::read(&path).unwrap_or_else(|_| "0".into());
    steps.extend(sysctl_step(path, value, old));
}

/// Set `path` to `value` unless it already is (`old`: what it is now).
pub(super) fn sysctl_step(path: String, value: &str, old: String) -> Option<Step> {
    (old != value).then(|| Step::Sysctl {
        path,
        value: value.into(),
        old,
    })
}

/// The proxy_arp a new interface gets: what offline puts back, so a reused name inherits
/// nothing from us.
pub(super) fn proxy_arp_default() -> String {
    sysctl::read(&sysctl::conf_path("ipv4", "default", "proxy_arp")).unwrap_or_else(|_| "0".into())
}

pub fn offline(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = find_device(nl, hp)?;
    let mut steps = Vec::new();
    // Proxy entries live on the gateway device and outlive the vif: remove them even when the
    // vif is gone.
    if hp.ip.iter().any(|g| g.ip.is_ipv6()) {
        if let Ok(gw) = gateway_device(nl, hp) {
            let proxied = nl.proxy_neighbours(gw.index)?;
            for g in hp.ip.iter().filter(|g| g.ip.is_ipv6() && g.is_host()) {
                if proxied.contains(&g.ip) {
                    steps.push(Step::DelProxyNeighbour {
                        index: gw.index,
                        dev: gw.name.clone(),
                        ip: g.ip,
                    });
                }
            }
        }
    }
    let Some(link) = link else {
        steps.extend(filter::offline(nl, hp, None)?);
        return Ok(steps);
    };
    let mut existing = nl.routes(false, Some(link.index))?;
    existing.extend(nl.routes(true, Some(link.index))?);
    for r in existing
        .into_iter()
        .filter(|r| r.oif == Some(link.index) && r.table == crate::netlink::RT_TABLE_MAIN)
    {
        let ours = hp
            .ip
            .iter()
            .any(|g| g.ip == r.dst && g.prefix_len == r.prefix_len)
            && r.metric == Some(metric(hp));
        if ours {
            steps.push(Step::DelRoute {
                dev: link.name.clone(),
                route: r,
            });
        }
    }
    for addr in nl.addresses(Some(link.index))? {
        if !addr.is_ipv6_link_local() {
            steps.push(Step::DelAddress {
                name: link.name.clone(),
                addr,
            });
        }
    }
    if let Ok(ifname) = IfName::new(&link.name) {
        push_sysctl(
            &mut steps,
            sysctl::ipv4_conf(&ifname, "proxy_arp"),
            &proxy_arp_default(),
        );
    }
    if link.up {
        steps.push(Step::SetUp {
            index: link.index,
            name: link.name.clone(),
            up: false,
        });
    }
    // The filter goes last, once the guest can no longer send anywhere.
    steps.extend(filter::offline(nl, hp, Some(&link))?);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_addresses() {
        let g =
            parse_guest_addrs("80.68.86.194  80.68.86.196/31 2001:db8::5 2001:db8:1::/64").unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[1].prefix_len, 31);
        assert!(g[0].is_host() && g[2].is_host() && !g[3].is_host());
        assert!(parse_guest_addrs("").unwrap().is_empty());
    }

    #[test]
    fn bad_guest_addresses() {
        for bad in [
            "junk",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "10.0.0.0/0",
            "10.0.0.5/24",
            "fe80::1%eth0",
            "224.0.0.1",
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.1 10.0.0.1",
            "10.0.0.1/+8",
            "10.0.0.0/24 10.0.0.5",
            "2001:db8::5 2001:db8::/64",
        ] {
            assert!(parse_guest_addrs(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
            .collect();
        assert!(parse_guest_addrs(&many.join(" ")).is_err());
    }
}
