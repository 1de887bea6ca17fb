//! Route mode (vif-route): the host is the guest's gateway. The gateway device's address goes
//! on the vif as /32 (/128), proxy ARP (proxy NDP for IPv6) answers for the guests on the
//! gateway's network, and each guest address gets a host route over the vif.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use netlink_packet_route::address::AddressFlags;

use super::{Vif, filter, observe_vif};
use crate::ifname::IfName;
use crate::invocation::{Hotplug, TypeIf};
use crate::log;
use crate::netlink::{Address, Link, Netlink, RT_TABLE_MAIN, Route, RouteScope};
use crate::plan::Step;
use crate::sysctl;

use crate::addr::GuestAddr;

/// The device whose addresses the guests use as gateway: `gatewaydev`/`netdev`, else `dummy0`,
/// else the device of the default route. None: there is none (`plan_online` says why).
pub fn observe_gateway(nl: &mut Netlink, hp: &Hotplug) -> Result<Option<Link>> {
    if let Some(name) = &hp.gatewaydev {
        return Ok(nl.link_by_name(name.as_str())?);
    }
    if let Some(l) = nl.link_by_name("dummy0")? {
        return Ok(Some(l));
    }
    Ok(nl.default_route_link()?)
}

/// Why there is no gateway device.
fn no_gateway(hp: &Hotplug) -> anyhow::Error {
    match &hp.gatewaydev {
        Some(name) => anyhow!("gateway device {name} does not exist"),
        None => anyhow!(
            "no gateway device: set gatewaydev (netdev=), create dummy0, or add a default route"
        ),
    }
}

/// The gateway's primary IPv4 address and first global IPv6 address, from its addresses.
pub fn gateway_ips(addrs: &[Address]) -> (Option<IpAddr>, Option<IpAddr>) {
    let v4 = addrs
        .iter()
        .find(|a| a.ip.is_ipv4() && !a.is_secondary())
        .map(|a| a.ip);
    let v6 = addrs
        .iter()
        .find(|a| a.ip.is_ipv6() && a.scope == 0 && !a.is_ipv6_link_local())
        .map(|a| a.ip);
    (v4, v6)
}

/// The gateway's addresses the guests use, from the kernel.
pub fn gateway_addresses(nl: &mut Netlink, gw: &Link) -> Result<(Option<IpAddr>, Option<IpAddr>)> {
    Ok(gateway_ips(&nl.addresses(Some(gw.index))?))
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
        r.scope = RouteScope::Universe;
    }
    r
}

/// Whether `existing` has `r` already.
pub(super) fn has_route(existing: &[Route], r: &Route) -> bool {
    existing.iter().any(|e| e.same_as(r))
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
        addr.flags = AddressFlags::Nodad.bits();
    }
    Some(Step::AddAddress {
        name: name.to_string(),
        addr,
    })
}

/// What route mode reads: the vif, the gateway device and its addresses, routes, proxy
/// neighbours and sysctls.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub vif: Vif,
    /// The gateway device and its addresses the guests use (offline: when they can be read;
    /// the hooks' `netdev` and `main_ip` are theirs).
    pub gateway: Option<Link>,
    pub gateway_v4: Option<IpAddr>,
    pub gateway_v6: Option<IpAddr>,
    /// Online: every route of the families the guest's addresses are in, every table.
    /// Offline: the routes over the vif.
    pub routes: Vec<Route>,
    /// Offline: every IPv6 route, when proxy entries are weighed.
    pub ipv6_routes: Vec<Route>,
    /// The proxy neighbour entries on the gateway device.
    pub proxied: Vec<IpAddr>,
    /// The names of the links that route a guest's address elsewhere (for the refusal).
    pub link_names: BTreeMap<u32, String>,
    /// `proxy_arp` of the vif (online: under its final name, which a rename has yet to
    /// create: "0" then), and what a new interface gets.
    pub proxy_arp: String,
    pub proxy_arp_default: String,
    /// `proxy_ndp` of the gateway device.
    pub proxy_ndp: String,
}

/// Which families the guest's addresses need (none given: IPv4, as stock).
fn families(hp: &Hotplug) -> (bool, bool) {
    let wants_v6 = hp.ip.iter().any(|g| g.ip.is_ipv6());
    let wants_v4 = hp.ip.iter().any(|g| g.ip.is_ipv4()) || !wants_v6;
    (wants_v4, wants_v6)
}

/// A sysctl's value; a missing file (the path of a renamed vif only exists after the rename)
/// reads as "0".
fn read_sysctl(path: &str) -> String {
    sysctl::read(path).unwrap_or_else(|_| "0".into())
}

pub fn observe(nl: &mut Netlink, hp: &Hotplug) -> Result<Observed> {
    let vif = observe_vif(nl, hp)?;
    let mut o = Observed::default();
    let link = vif.device(hp).cloned();
    if hp.command.is_up() {
        observe_online(nl, hp, link.as_ref(), &mut o)?;
    } else {
        observe_offline(nl, hp, link.as_ref(), &mut o)?;
    }
    o.vif = vif;
    Ok(o)
}

fn observe_online(
    nl: &mut Netlink,
    hp: &Hotplug,
    link: Option<&Link>,
    o: &mut Observed,
) -> Result<()> {
    let Some(link) = link else { return Ok(()) };
    o.gateway = observe_gateway(nl, hp)?;
    let Some(gw) = &o.gateway else { return Ok(()) };
    (o.gateway_v4, o.gateway_v6) = gateway_addresses(nl, gw)?;
    let (wants_v4, wants_v6) = families(hp);
    o.proxy_arp = read_sysctl(&sysctl::ipv4_conf(&hp.wanted_name, "proxy_arp"));
    if wants_v4 {
        o.routes.extend(nl.routes(false, None)?);
    }
    if wants_v6 {
        o.routes.extend(nl.routes(true, None)?);
        if let Ok(n) = IfName::new(&gw.name) {
            o.proxy_ndp = read_sysctl(&sysctl::ipv6_conf(&n, "proxy_ndp"));
        }
        o.proxied = nl.proxy_neighbours(gw.index)?;
    }
    let elsewhere: Vec<u32> = o
        .routes
        .iter()
        .filter(|r| hp.ip.iter().any(|g| routed_elsewhere(r, g, hp, link.index)))
        .filter_map(|r| r.oif)
        .collect();
    for i in elsewhere {
        if let Some(l) = nl.link_by_index(i)? {
            o.link_names.insert(i, l.name);
        }
    }
    Ok(())
}

fn observe_offline(
    nl: &mut Netlink,
    hp: &Hotplug,
    link: Option<&Link>,
    o: &mut Observed,
) -> Result<()> {
    if let Some(l) = link {
        o.routes = nl.routes(false, Some(l.index))?;
        o.routes.extend(nl.routes(true, Some(l.index))?);
        o.proxy_arp = IfName::new(&l.name)
            .map(|n| read_sysctl(&sysctl::ipv4_conf(&n, "proxy_arp")))
            .unwrap_or_default();
        o.proxy_arp_default = proxy_arp_default();
    }
    // An unusable gateway setting only means there are no proxy entries to remove (and no
    // `netdev`/`main_ip` for the hooks but the caller's).
    let Ok(Some(gw)) = observe_gateway(nl, hp) else {
        return Ok(());
    };
    if let Ok((v4, v6)) = gateway_addresses(nl, &gw) {
        (o.gateway_v4, o.gateway_v6) = (v4, v6);
    }
    let on_vif = guest_routes(&o.routes, hp, link.map(|l| l.index));
    if !proxied_addresses(hp, &on_vif).is_empty() {
        o.proxied = nl.proxy_neighbours(gw.index)?;
        o.ipv6_routes = nl.routes(true, None)?;
    }
    o.gateway = Some(gw);
    Ok(())
}

impl Observed {
    /// The gateway device's name and its main address (IPv4, else IPv6), as the stock
    /// script's `netdev` and `main_ip`; None without a gateway device.
    pub fn gateway_for_hooks(&self) -> Option<(String, Option<IpAddr>)> {
        self.gateway
            .as_ref()
            .map(|gw| (gw.name.clone(), self.gateway_v4.or(self.gateway_v6)))
    }
}

/// Whether `r` routes the guest's address `g` at this device kind's metric to another device
/// than the vif (`index`): another guest's (the tap and the vif of one guest differ in metric).
fn routed_elsewhere(r: &Route, g: &GuestAddr, hp: &Hotplug, index: u32) -> bool {
    r.dst == g.ip
        && r.prefix_len == g.prefix_len
        && r.table == RT_TABLE_MAIN
        && r.metric == Some(metric(hp))
        && r.oif.is_some_and(|o| o != index)
}

/// The guest routes, from the kernel: every main-table route over the vif at this device
/// kind's metric is one online added. Offline must work when the `ip` key has gone bad since
/// (then it is empty here), and must not trust it to name what to delete.
fn guest_routes(routes: &[Route], hp: &Hotplug, vif: Option<u32>) -> Vec<Route> {
    let Some(vif) = vif else { return Vec::new() };
    routes
        .iter()
        .filter(|r| r.oif == Some(vif) && r.table == RT_TABLE_MAIN && r.metric == Some(metric(hp)))
        .cloned()
        .collect()
}

/// The IPv6 host addresses the guest had proxied: the `ip` key's, and those routed over the
/// vif (the same, unless the key went bad).
fn proxied_addresses(hp: &Hotplug, on_vif: &[Route]) -> Vec<IpAddr> {
    let mut v6: Vec<IpAddr> = hp
        .ip
        .iter()
        .filter(|g| g.ip.is_ipv6() && g.is_host())
        .map(|g| g.ip)
        .collect();
    for r in on_vif
        .iter()
        .filter(|r| r.dst.is_ipv6() && r.prefix_len == 128)
    {
        if !v6.contains(&r.dst) {
            v6.push(r.dst);
        }
    }
    v6
}

pub fn online(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_online(&observe(nl, hp)?, hp)
}

pub fn offline(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_offline(&observe(nl, hp)?, hp)
}

/// online: the name and the filter first (before the guest gets a route), the gateway's
/// addresses on the vif, up, proxy ARP, the guest routes, proxy NDP. Pure.
pub fn plan_online(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = o.vif.require(hp)?;
    let Some(gw) = &o.gateway else {
        return Err(no_gateway(hp));
    };
    if gw.index == link.index {
        bail!("the gateway device cannot be the vif itself");
    }
    let (gw4, gw6) = (o.gateway_v4, o.gateway_v6);
    let (wants_v4, wants_v6) = families(hp);
    if wants_v4 && gw4.is_none() {
        bail!("gateway device {} has no IPv4 address", gw.name);
    }
    if wants_v6 && gw6.is_none() {
        bail!("gateway device {} has no global IPv6 address", gw.name);
    }
    let name = hp.wanted_name.to_string();
    let (mut steps, needs_down) = o.vif.down_and_rename(hp, link, false)?;
    // The filter first, before the guest gets a route.
    steps.extend(filter::plan_online(&o.vif.filter, hp, link));
    let mut gw_addrs = Vec::new();
    if wants_v4 {
        gw_addrs.extend(gw4.map(|ip| (ip, 32)));
    }
    if wants_v6 {
        gw_addrs.extend(gw6.map(|ip| (ip, 128)));
    }
    for (ip, len) in &gw_addrs {
        steps.extend(address_step(&o.vif.addresses, link.index, &name, *ip, *len));
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
        steps.extend(Step::sysctl_change(
            sysctl::ipv4_conf(&ifname, "proxy_arp"),
            "1",
            &o.proxy_arp,
        ));
    }
    // An address already routed to another device at our metric is another guest's: refuse,
    // rather than fail half way on the kernel's EEXIST, or later take its proxy entry away.
    for g in &hp.ip {
        if let Some(r) = o
            .routes
            .iter()
            .find(|r| routed_elsewhere(r, g, hp, link.index))
        {
            let other = match r.oif {
                Some(i) => o
                    .link_names
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| format!("link {i}")),
                None => "another device".to_string(),
            };
            bail!(
                "ip entry {}/{} is already routed to {other} (another guest's address?)",
                g.ip,
                g.prefix_len
            );
        }
    }
    let existing: Vec<Route> = o
        .routes
        .iter()
        .filter(|e| e.oif == Some(link.index))
        .cloned()
        .collect();
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
        steps.extend(Step::sysctl_change(
            sysctl::ipv6_conf(&gw_name, "proxy_ndp"),
            "1",
            &o.proxy_ndp,
        ));
        for g in hp.ip.iter().filter(|g| g.ip.is_ipv6() && g.is_host()) {
            if !o.proxied.contains(&g.ip) {
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

/// The proxy_arp a new interface gets: what offline puts back, so a reused name inherits
/// nothing from us.
pub(super) fn proxy_arp_default() -> String {
    read_sysctl(&sysctl::conf_path("ipv4", "default", "proxy_arp"))
}

/// offline: the proxy entries no other device needs, the guest routes, the vif's addresses,
/// proxy_arp put back, down, then the filter. A vif that is gone leaves only the proxy entries
/// and the filter. Pure.
pub fn plan_offline(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = o.vif.device(hp);
    let ours = link.map(|l| l.index);
    let mut steps = Vec::new();
    let on_vif = guest_routes(&o.routes, hp, ours);
    // Proxy entries live on the gateway device and outlive the vif: remove them even when the
    // vif is gone, but only when no other device still routes the address (the same guest's
    // tap or vif, or another guest given the same address whose online failed: its offline
    // runs all the same and must not cut the first guest off).
    if let Some(gw) = &o.gateway {
        for ip in proxied_addresses(hp, &on_vif) {
            let needed_elsewhere = o.ipv6_routes.iter().any(|r| {
                r.dst == ip
                    && r.prefix_len == 128
                    && r.table == RT_TABLE_MAIN
                    && r.oif.is_some_and(|o| Some(o) != ours)
            });
            if needed_elsewhere {
                log::debug(&format!(
                    "keeping proxy {ip} dev {}: another device still routes it",
                    gw.name
                ));
            } else if o.proxied.contains(&ip) {
                steps.push(Step::DelProxyNeighbour {
                    index: gw.index,
                    dev: gw.name.clone(),
                    ip,
                });
            }
        }
    }
    let Some(link) = link else {
        steps.extend(filter::plan_offline(&o.vif.filter, hp, None));
        return Ok(steps);
    };
    for route in on_vif {
        steps.push(Step::DelRoute {
            dev: link.name.clone(),
            route,
        });
    }
    for addr in &o.vif.addresses {
        if !addr.is_ipv6_link_local() {
            steps.push(Step::DelAddress {
                name: link.name.clone(),
                addr: addr.clone(),
            });
        }
    }
    if let Ok(ifname) = IfName::new(&link.name) {
        steps.extend(Step::sysctl_change(
            sysctl::ipv4_conf(&ifname, "proxy_arp"),
            &o.proxy_arp_default,
            &o.proxy_arp,
        ));
    }
    if link.up {
        steps.push(Step::SetUp {
            index: link.index,
            name: link.name.clone(),
            up: false,
        });
    }
    // The filter goes last, once the guest can no longer send anywhere.
    steps.extend(filter::plan_offline(&o.vif.filter, hp, Some(link)));
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_guest_addrs;
    use crate::invocation::{Command, Mode};
    use crate::modes::fixture::{addr, error, hp, name, netback, text, vif};
    use crate::netlink::Neighbour;

    fn eth0() -> Link {
        Link {
            index: 2,
            name: "eth0".into(),
            up: true,
            ..Default::default()
        }
    }

    fn guest(command: Command, ip: &str) -> Hotplug {
        let mut h = hp(Mode::Route, command);
        h.ip = parse_guest_addrs(ip).unwrap();
        h
    }

    /// A fresh vif (down) with eth0 (10.0.0.1, 2001:db8::1) as its gateway.
    fn fresh() -> Observed {
        Observed {
            vif: vif(netback(false)),
            gateway: Some(eth0()),
            gateway_v4: Some("10.0.0.1".parse().unwrap()),
            gateway_v6: Some("2001:db8::1".parse().unwrap()),
            proxy_arp: "0".into(),
            proxy_ndp: "0".into(),
            ..Default::default()
        }
    }

    fn route(dst: &str, len: u8, oif: u32, metric: u32) -> Route {
        let mut r = Route::via_dev(dst.parse().unwrap(), len, oif);
        r.metric = Some(metric);
        r
    }

    #[test]
    fn golden_online_of_a_vif_with_both_families() {
        let h = guest(Command::Online, "10.0.0.5 2001:db8::5");
        let steps = plan_online(&fresh(), &h).unwrap();
        assert_eq!(
            text(&steps),
            [
                "ip address add 10.0.0.1/32 dev vif5.0",
                "ip address add 2001:db8::1/128 dev vif5.0",
                "ip link set vif5.0 up",
                "echo 1 > /proc/sys/net/ipv4/conf/vif5.0/proxy_arp",
                "ip route add 10.0.0.5/32 dev vif5.0 src 10.0.0.1 metric 2",
                "ip route add 2001:db8::5/128 dev vif5.0 src 2001:db8::1 metric 2",
                "echo 1 > /proc/sys/net/ipv6/conf/eth0/proxy_ndp",
                "ip neigh add proxy 2001:db8::5 dev eth0",
            ]
        );
        // The IPv6 gateway address skips duplicate address detection; the IPv4 one has no flags.
        let flags: Vec<u32> = steps
            .iter()
            .filter_map(|s| match s {
                Step::AddAddress { addr, .. } => Some(addr.flags),
                _ => None,
            })
            .collect();
        assert_eq!(flags, [0, AddressFlags::Nodad.bits()]);
    }

    #[test]
    fn the_tap_routes_at_metric_1_and_a_second_online_changes_nothing() {
        let mut h = guest(Command::Add, "10.0.0.5");
        h.type_if = TypeIf::Tap;
        h.kernel_name = name("vif5.0-emu");
        h.wanted_name = h.kernel_name.clone();
        let mut tap = netback(false);
        tap.name = "vif5.0-emu".into();
        tap.parent_bus = None;
        let mut o = fresh();
        o.vif = vif(tap.clone());
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            [
                "ip address add 10.0.0.1/32 dev vif5.0-emu",
                "ip link set vif5.0-emu up",
                "echo 1 > /proc/sys/net/ipv4/conf/vif5.0-emu/proxy_arp",
                "ip route add 10.0.0.5/32 dev vif5.0-emu src 10.0.0.1 metric 1",
            ]
        );
        tap.up = true;
        o.vif = vif(tap);
        o.vif.addresses = vec![addr(7, "10.0.0.1", 32)];
        o.proxy_arp = "1".into();
        // The vif's route at metric 2 is the same guest's, not another's.
        o.routes = vec![route("10.0.0.5", 32, 7, 1), route("10.0.0.5", 32, 8, 2)];
        assert_eq!(text(&plan_online(&o, &h).unwrap()), Vec::<String>::new());
    }

    #[test]
    fn an_address_routed_to_another_device_is_refused() {
        let h = guest(Command::Online, "10.0.0.5");
        let mut o = fresh();
        o.routes = vec![route("10.0.0.5", 32, 9, 2)];
        o.link_names.insert(9, "vif6.0".into());
        assert_eq!(
            error(plan_online(&o, &h)),
            "ip entry 10.0.0.5/32 is already routed to vif6.0 (another guest's address?)"
        );
    }

    #[test]
    fn gateway_errors() {
        let h = guest(Command::Online, "10.0.0.5 2001:db8::5");
        let mut o = fresh();
        o.gateway_v6 = None;
        assert_eq!(
            error(plan_online(&o, &h)),
            "gateway device eth0 has no global IPv6 address"
        );
        o.gateway = None;
        assert_eq!(
            error(plan_online(&o, &h)),
            "no gateway device: set gatewaydev (netdev=), create dummy0, or add a default route"
        );
        let mut named = h.clone();
        named.gatewaydev = Some(name("eth9"));
        assert_eq!(
            error(plan_online(&o, &named)),
            "gateway device eth9 does not exist"
        );
        let mut o = fresh();
        o.gateway = Some(netback(false));
        assert_eq!(
            error(plan_online(&o, &h)),
            "the gateway device cannot be the vif itself"
        );
    }

    #[test]
    fn golden_offline_deletes_its_metric_and_keeps_what_another_device_routes() {
        let h = guest(Command::Offline, "10.0.0.5 2001:db8::5 2001:db8::6");
        let mut link = netback(true);
        link.name = "vif5.0".into();
        let mut o = Observed {
            vif: vif(link),
            gateway: Some(eth0()),
            proxy_arp: "1".into(),
            proxy_arp_default: "0".into(),
            proxied: vec![
                "2001:db8::5".parse().unwrap(),
                "2001:db8::6".parse().unwrap(),
            ],
            routes: vec![
                route("10.0.0.5", 32, 7, 2),
                // Another metric (an administrator's): not online's.
                route("10.0.0.9", 32, 7, 100),
                route("2001:db8::5", 128, 7, 2),
                route("2001:db8::6", 128, 7, 2),
            ],
            ipv6_routes: vec![
                route("2001:db8::5", 128, 7, 2),
                route("2001:db8::6", 128, 7, 2),
                // The guest's tap still routes ::5: its proxy entry stays.
                route("2001:db8::5", 128, 8, 1),
            ],
            ..Default::default()
        };
        o.vif.addresses = vec![
            addr(7, "10.0.0.1", 32),
            addr(7, "2001:db8::1", 128),
            addr(7, "fe80::1", 64),
        ];
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "ip neigh del proxy 2001:db8::6 dev eth0",
                "ip route del 10.0.0.5/32 dev vif5.0 metric 2",
                "ip route del 2001:db8::5/128 dev vif5.0 metric 2",
                "ip route del 2001:db8::6/128 dev vif5.0 metric 2",
                "ip address del 10.0.0.1/32 dev vif5.0",
                "ip address del 2001:db8::1/128 dev vif5.0",
                "echo 0 > /proc/sys/net/ipv4/conf/vif5.0/proxy_arp",
                "ip link set vif5.0 down",
                "conntrack -D --orig-src 10.0.0.5; conntrack -D --orig-dst 10.0.0.5; \
                 conntrack -D --orig-src 2001:db8::5; conntrack -D --orig-dst 2001:db8::5; \
                 conntrack -D --orig-src 2001:db8::6; conntrack -D --orig-dst 2001:db8::6",
            ]
        );
    }

    #[test]
    fn offline_of_a_vanished_vif_cleans_only_the_proxy_entries_and_the_filter() {
        let mut h = guest(Command::Offline, "2001:db8::5");
        h.antispoof = true;
        let mut o = Observed {
            gateway: Some(eth0()),
            proxied: vec!["2001:db8::5".parse().unwrap()],
            ..Default::default()
        };
        o.vif.filter.table = true;
        // Pinned neighbours go with the device: none to remove.
        o.vif.filter.neighbours = vec![Neighbour {
            ip: "2001:db8::5".parse().unwrap(),
            mac: None,
            permanent: true,
        }];
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "ip neigh del proxy 2001:db8::5 dev eth0",
                "nft delete table netdev xen-vif-vif5.0",
                "conntrack -D --orig-src 2001:db8::5; conntrack -D --orig-dst 2001:db8::5",
            ]
        );
    }
}
