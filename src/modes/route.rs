//! Route mode (vif-route): the host is the guest's gateway. The gateway device's address goes
//! on the vif as /32 (/128), proxy ARP (proxy NDP for IPv6) answers for the guests on the
//! gateway's network, and each guest address gets a host route over the vif.

use std::net::IpAddr;

use anyhow::{Result, bail};
use netlink_packet_route::address::AddressFlags;

use super::{down_and_rename, filter, find_device, require_device};
use crate::ifname::IfName;
use crate::invocation::{Hotplug, TypeIf};
use crate::log;
use crate::netlink::{Address, Link, Netlink, Route, RouteScope};
use crate::plan::Step;
use crate::sysctl;

use crate::addr::GuestAddr;

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
        r.scope = RouteScope::Universe;
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
        addr.flags = AddressFlags::Nodad.bits();
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
        existing.extend(nl.routes(false, None)?);
    }
    if wants_v6 {
        existing.extend(nl.routes(true, None)?);
    }
    // An address already routed to another device at our metric is another guest's (the tap
    // and the vif of one guest differ in metric): refuse, rather than fail half way on the
    // kernel's EEXIST, or later take its proxy entry away.
    for g in &hp.ip {
        if let Some(r) = existing.iter().find(|e| {
            e.dst == g.ip
                && e.prefix_len == g.prefix_len
                && e.table == crate::netlink::RT_TABLE_MAIN
                && e.metric == Some(metric(hp))
                && e.oif.is_some_and(|o| o != link.index)
        }) {
            let other = match r.oif {
                Some(o) => nl.link_by_index(o)?.map_or(format!("link {o}"), |l| l.name),
                None => "another device".to_string(),
            };
            bail!(
                "ip entry {}/{} is already routed to {other} (another guest's address?)",
                g.ip,
                g.prefix_len
            );
        }
    }
    existing.retain(|e| e.oif == Some(link.index));
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
    // The guest routes, from the kernel: every main-table route over the vif at this device
    // kind's metric is one online added. Offline must work when the `ip` key has gone bad
    // since (then it is empty here), and must not trust it to name what to delete.
    let mut on_vif = Vec::new();
    if let Some(l) = &link {
        on_vif = nl.routes(false, Some(l.index))?;
        on_vif.extend(nl.routes(true, Some(l.index))?);
        on_vif.retain(|r| {
            r.oif == Some(l.index)
                && r.table == crate::netlink::RT_TABLE_MAIN
                && r.metric == Some(metric(hp))
        });
    }
    // The IPv6 host addresses the guest had proxied: the `ip` key's, and those routed over the
    // vif (the same, unless the key went bad).
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
    // Proxy entries live on the gateway device and outlive the vif: remove them even when the
    // vif is gone, but only when no other device still routes the address (the same guest's
    // tap or vif, or another guest given the same address whose online failed: its offline
    // runs all the same and must not cut the first guest off).
    if !v6.is_empty() {
        if let Ok(gw) = gateway_device(nl, hp) {
            let proxied = nl.proxy_neighbours(gw.index)?;
            let routes6 = nl.routes(true, None)?;
            let ours = link.as_ref().map(|l| l.index);
            for ip in v6 {
                let needed_elsewhere = routes6.iter().any(|r| {
                    r.dst == ip
                        && r.prefix_len == 128
                        && r.table == crate::netlink::RT_TABLE_MAIN
                        && r.oif.is_some_and(|o| Some(o) != ours)
                });
                if needed_elsewhere {
                    log::debug(&format!(
                        "keeping proxy {ip} dev {}: another device still routes it",
                        gw.name
                    ));
                } else if proxied.contains(&ip) {
                    steps.push(Step::DelProxyNeighbour {
                        index: gw.index,
                        dev: gw.name.clone(),
                        ip,
                    });
                }
            }
        }
    }
    let Some(link) = link else {
        steps.extend(filter::offline(nl, hp, None)?);
        return Ok(steps);
    };
    for route in on_vif {
        steps.push(Step::DelRoute {
            dev: link.name.clone(),
            route,
        });
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
