//! Route mode (vif-route): the host is the guest's gateway. The gateway device's address goes
//! on the vif as /32 (/128), proxy ARP (proxy NDP for IPv6) answers for the guests on the
//! gateway's network, and each guest address gets a host route over the vif.

use std::net::IpAddr;

use anyhow::{Result, bail};

use super::{down_and_rename, find_device, require_device};
use crate::ifname::IfName;
use crate::invocation::{Hotplug, TypeIf};
use crate::netlink::{Address, Link, Netlink, Route};
use crate::plan::Step;
use crate::sysctl;

const IFA_F_NODAD: u32 = 0x02;

pub use crate::addr::{GuestAddr, MAX_GUEST_ADDRS, parse_guest_addrs};

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
    let mut r = Route::via_dev(g.ip, g.prefix_len, vif);
    r.src = Some(src);
    r.metric = Some(metric(hp));
    if g.ip.is_ipv6() {
        r.scope = 0;
    }
    r
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
    let have = nl.addresses(Some(link.index))?;
    let mut gw_addrs = Vec::new();
    if wants_v4 {
        gw_addrs.extend(gw4.map(|ip| (ip, 32)));
    }
    if wants_v6 {
        gw_addrs.extend(gw6.map(|ip| (ip, 128)));
    }
    for (ip, len) in &gw_addrs {
        if !have.iter().any(|a| a.ip == *ip && a.prefix_len == *len) {
            let mut addr = Address::new(link.index, *ip, *len);
            if ip.is_ipv6() {
                // The host already owns this address on the gateway device; duplicate address
                // detection on a point-to-point vif would only delay the guest by a second.
                addr.flags = IFA_F_NODAD;
            }
            steps.push(Step::AddAddress {
                name: name.clone(),
                addr,
            });
        }
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
        let present = existing.iter().any(|e| {
            e.dst == r.dst
                && e.prefix_len == r.prefix_len
                && e.oif == r.oif
                && e.metric == r.metric
                && e.table == r.table
        });
        if !present {
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
    if old != value {
        steps.push(Step::Sysctl {
            path,
            value: value.into(),
            old,
        });
    }
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
        // Back to what a new interface gets, so a reused name inherits nothing from us.
        let default = sysctl::read(&sysctl::conf_path("ipv4", "default", "proxy_arp"))
            .unwrap_or_else(|_| "0".into());
        push_sysctl(
            &mut steps,
            sysctl::ipv4_conf(&ifname, "proxy_arp"),
            &default,
        );
    }
    if link.up {
        steps.push(Step::SetUp {
            index: link.index,
            name: link.name.clone(),
            up: false,
        });
    }
    Ok(steps)
}
