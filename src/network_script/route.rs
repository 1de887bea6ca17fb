//! network-route: the host routes for its guests. `start netdev=<dev> [gateway=<addr>/<len> ...]`
//! turns on IPv4 forwarding (and IPv6 forwarding when a gateway is IPv6 or the host has global
//! IPv6) and proxy ARP on the gateway device; with `gateway=` it makes sure the gateway device
//! (default `dummy0`) exists — created as a dummy link — is up, and holds those addresses, as in
//! the Debian-Administration routed set-up. vif-route then puts the gateway address on each vif.
//!
//! The stock script did the same writes for start, stop and status alike; here `stop` puts back
//! exactly what `start` changed (old sysctl values, created link, added addresses) and `status`
//! shows the routed picture.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result, anyhow, bail};

use super::state::{Record, State, address_of, address_record};
use super::{FreeIndexes, Instance, Params, Script, Start, updown};
use crate::ifname::IfName;
use crate::log;
use crate::netlink::{Address, Link, Netlink, NewLink, RT_TABLE_MAIN};
use crate::plan::{Step, route_str};
use crate::sysctl;

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";
const DEFAULT_GATEWAY_DEV: &str = "dummy0";

/// One `gateway=` address: the address the guests use as their gateway, with its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

pub fn parse_gateway(s: &str) -> Result<Gateway> {
    let (addr, len) = s.split_once('/').ok_or_else(|| {
        anyhow!("gateway={s}: give the prefix length of the routed subnet (e.g. 10.9.0.1/29)")
    })?;
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| anyhow!("gateway={s}: {addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = len
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=max).contains(n) && len.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow!("gateway={s}: bad prefix length {len:?}"))?;
    let link_local = matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || link_local {
        bail!("gateway={s}: not a usable unicast address");
    }
    Ok(Gateway { ip, prefix_len })
}

/// The broadcast address ifupdown would give an IPv4 gateway (none for /31 and /32).
fn broadcast(g: &Gateway) -> Option<Ipv4Addr> {
    match g.ip {
        IpAddr::V4(v4) if g.prefix_len <= 30 => {
            Some(Ipv4Addr::from(u32::from(v4) | (u32::MAX >> g.prefix_len)))
        }
        _ => None,
    }
}

pub struct RouteInstance {
    pub netdev: IfName,
    pub gateways: Vec<Gateway>,
}

/// `netdev=`, else `eth<vifnum>` (the xend default), else `dummy0` when gateways are given or
/// it exists, else the device of the default route.
pub fn instance(nl: &mut Netlink, p: &Params) -> Result<RouteInstance> {
    let mut gateways: Vec<Gateway> = Vec::new();
    for g in p.all("gateway") {
        let g = parse_gateway(g)?;
        if gateways.iter().any(|o| o.ip == g.ip) {
            bail!("gateway {} is given twice", g.ip);
        }
        gateways.push(g);
    }
    let netdev = match p.netdev()? {
        Some(n) => n,
        None => {
            if !gateways.is_empty() || nl.link_by_name(DEFAULT_GATEWAY_DEV)?.is_some() {
                IfName::new(DEFAULT_GATEWAY_DEV).map_err(anyhow::Error::msg)?
            } else {
                match nl.default_route_link()? {
                    Some(l) => IfName::new(&l.name).map_err(anyhow::Error::msg)?,
                    None => bail!(
                        "no netdev= given, no dummy0 and no default route: name the gateway device"
                    ),
                }
            }
        }
    };
    Ok(RouteInstance { netdev, gateways })
}

fn has_ipv6() -> bool {
    fs::metadata(IPV6_FORWARDING).is_ok()
}

/// Every per-device value a write to `global` also rewrites (the kernel propagates forwarding
/// to `all`, `default` and each device; IPv4 also flips `all/accept_redirects`).
fn cascade_paths(global: &str) -> Vec<String> {
    let family = if global == IP_FORWARD { "ipv4" } else { "ipv6" };
    let dir = format!("/proc/sys/net/{family}/conf");
    let mut out: Vec<String> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| format!("{dir}/{}/forwarding", e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    if family == "ipv4" {
        out.push(format!("{dir}/all/accept_redirects"));
    }
    out.retain(|p| p != global);
    out
}

pub(super) fn sysctl_step(
    steps: &mut Vec<Step>,
    records: &mut Vec<Record>,
    path: String,
    value: &str,
) {
    let old = sysctl::read(&path).unwrap_or_default();
    if old == value {
        return;
    }
    records.push(
        Record::new("sysctl")
            .set("path", &path)
            .set("old", &old)
            .set("new", value),
    );
    steps.push(Step::Sysctl {
        path,
        value: value.into(),
        old,
    });
}

/// Record the values the kernel will rewrite when `global` changes, to put them back on stop.
pub(super) fn record_cascade(records: &mut Vec<Record>, global: &str) {
    for path in cascade_paths(global) {
        if let Ok(v) = sysctl::read(&path) {
            records.push(Record::new("cascade").set("path", path).set("old", v));
        }
    }
}

fn host_has_global_ipv6(nl: &mut Netlink) -> Result<bool> {
    Ok(nl
        .addresses(None)?
        .iter()
        .any(|a| a.ip.is_ipv6() && a.scope == 0 && !a.ip.is_loopback()))
}

impl RouteInstance {
    fn wants_ipv6(&self, nl: &mut Netlink) -> Result<bool> {
        Ok(self.gateways.iter().any(|g| g.ip.is_ipv6()) || host_has_global_ipv6(nl)?)
    }
}

impl Instance for RouteInstance {
    fn script(&self) -> Script {
        Script::Route
    }

    fn key(&self) -> String {
        self.netdev.to_string()
    }

    fn params(&self) -> Vec<(String, String)> {
        let mut v = vec![("netdev".to_string(), self.netdev.to_string())];
        if !self.gateways.is_empty() {
            let g: Vec<String> = self
                .gateways
                .iter()
                .map(|g| format!("{}/{}", g.ip, g.prefix_len))
                .collect();
            v.push(("gateway".into(), g.join(",")));
        }
        v
    }

    fn plan_start(&self, nl: &mut Netlink) -> Result<Start> {
        let name = self.netdev.to_string();
        let link = nl.link_by_name(&name)?;
        if self.gateways.iter().any(|g| g.ip.is_ipv6()) && !has_ipv6() {
            bail!("an IPv6 gateway is given but the kernel has IPv6 disabled");
        }
        let mut steps = Vec::new();
        let mut records = Vec::new();
        // The link first: on a kernel without dummy support nothing else has changed yet.
        let index = match &link {
            Some(l) => l.index,
            None if self.gateways.is_empty() => {
                bail!("gateway device {name} does not exist (give gateway= to create it)")
            }
            None => {
                let index = FreeIndexes::new(nl)?.take()?;
                steps.push(Step::CreateLink {
                    name: name.clone(),
                    link: NewLink::Dummy,
                    index,
                });
                records.push(
                    Record::new("created")
                        .set("index", index)
                        .set("name", &name),
                );
                index
            }
        };
        let before = steps.len();
        sysctl_step(&mut steps, &mut records, IP_FORWARD.into(), "1");
        if steps.len() > before {
            record_cascade(&mut records, IP_FORWARD);
        }
        if has_ipv6() && self.wants_ipv6(nl)? {
            let before = steps.len();
            sysctl_step(&mut steps, &mut records, IPV6_FORWARDING.into(), "1");
            if steps.len() > before {
                record_cascade(&mut records, IPV6_FORWARDING);
            }
        }
        let proxy_arp = sysctl::ipv4_conf(&self.netdev, "proxy_arp");
        if link.is_some() {
            sysctl_step(&mut steps, &mut records, proxy_arp, "1");
        } else {
            // A new link's sysctls vanish with it: nothing to record.
            steps.push(Step::Sysctl {
                path: proxy_arp,
                value: "1".into(),
                old: "0".into(),
            });
        }
        let have = match &link {
            Some(l) => nl.addresses(Some(l.index))?,
            None => Vec::new(),
        };
        for g in &self.gateways {
            if have
                .iter()
                .any(|a| a.ip == g.ip && a.prefix_len == g.prefix_len)
            {
                continue;
            }
            let mut addr = Address::new(index, g.ip, g.prefix_len);
            addr.broadcast = broadcast(g);
            if link.is_some() {
                records.push(address_record("addr", &addr));
            }
            steps.push(Step::AddAddress {
                name: name.clone(),
                addr,
            });
        }
        if !link.as_ref().is_some_and(|l| l.up) {
            if link.is_some() {
                records.push(Record::new("up").set("index", index).set("name", &name));
            }
            steps.push(Step::SetUp {
                index,
                name: name.clone(),
                up: true,
            });
        }
        Ok(Start::Steps { steps, records })
    }

    fn is_started(&self, nl: &mut Netlink, _: &State) -> Result<bool> {
        Ok(match self.plan_start(nl)? {
            Start::Steps { steps, .. } => steps.is_empty(),
            Start::Nothing(_) => true,
        })
    }

    fn plan_stop(&self, nl: &mut Netlink, state: &State) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        let same = |l: &Option<Link>, name: &str| l.as_ref().is_some_and(|l| l.name == name);
        for r in state.of_kind("addr") {
            let a = address_of(r)?;
            let present = nl
                .addresses(Some(a.index))?
                .iter()
                .any(|h| h.ip == a.ip && h.prefix_len == a.prefix_len);
            if present {
                steps.push(Step::DelAddress {
                    name: self.netdev.to_string(),
                    addr: a,
                });
            }
        }
        for r in state.of_kind("up") {
            let (index, name) = (r.num::<u32>("index")?, r.get("name")?);
            let l = nl.link_by_index(index)?;
            if same(&l, name) && l.as_ref().is_some_and(|l| l.up) {
                steps.push(Step::SetUp {
                    index,
                    name: name.into(),
                    up: false,
                });
            }
        }
        for r in state.of_kind("created") {
            let (index, name) = (r.num::<u32>("index")?, r.get("name")?);
            if same(&nl.link_by_index(index)?, name) {
                steps.push(Step::DeleteLink {
                    index,
                    name: name.into(),
                });
            }
        }
        restore_sysctls(state, &mut steps)?;
        Ok(steps)
    }

    fn status(&self, nl: &mut Netlink, _: Option<&State>) -> Result<String> {
        let mut out = String::new();
        let read = |p: &str| sysctl::read(p).unwrap_or_else(|_| "-".into());
        match nl.link_by_name(self.netdev.as_str())? {
            Some(l) => {
                let addrs: Vec<String> = nl
                    .addresses(Some(l.index))?
                    .iter()
                    .filter(|a| !a.is_ipv6_link_local())
                    .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                    .collect();
                out.push_str(&format!(
                    "gateway device {}: {}, {}, addresses: {}\n",
                    l.name,
                    l.kind.as_deref().unwrap_or("plain"),
                    updown(&l),
                    if addrs.is_empty() {
                        "none".into()
                    } else {
                        addrs.join(" ")
                    }
                ));
            }
            None => out.push_str(&format!("gateway device {}: missing\n", self.netdev)),
        }
        out.push_str(&format!("net.ipv4.ip_forward = {}\n", read(IP_FORWARD)));
        out.push_str(&format!(
            "net.ipv6.conf.all.forwarding = {}\n",
            read(IPV6_FORWARDING)
        ));
        out.push_str(&format!(
            "net.ipv4.conf.{}.proxy_arp = {}\n",
            self.netdev,
            read(&sysctl::ipv4_conf(&self.netdev, "proxy_arp"))
        ));
        let mut routes = nl.routes(false, None)?;
        routes.extend(nl.routes(true, None)?);
        let vifs: Vec<Link> = nl.links()?.into_iter().filter(is_vif).collect();
        out.push_str(if vifs.is_empty() {
            "vifs: none\n"
        } else {
            "vifs:\n"
        });
        for v in &vifs {
            let proxy = IfName::new(&v.name)
                .map(|n| read(&sysctl::ipv4_conf(&n, "proxy_arp")))
                .unwrap_or_else(|_| "-".into());
            out.push_str(&format!("  {} {}, proxy_arp {proxy}\n", v.name, updown(v)));
            for r in routes
                .iter()
                .filter(|r| r.oif == Some(v.index) && r.table == RT_TABLE_MAIN && r.kind == 1)
                .filter(|r| !matches!(r.dst, IpAddr::V6(d) if d.segments()[0] & 0xffc0 == 0xfe80))
            {
                out.push_str(&format!("    {}\n", route_str(r, &v.name)));
            }
        }
        Ok(out)
    }
}

/// The steps that put back the sysctls `state` records (`sysctl`: written by start; `cascade`:
/// rewritten by the kernel along with a global one), from what they are now.
pub(super) fn restore_sysctls(state: &State, steps: &mut Vec<Step>) -> Result<()> {
    // Globals before the per-device values their writes cascade to.
    for r in state
        .of_kind("sysctl")
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let (path, old, new) = (r.get("path")?, r.get("old")?, r.get("new")?);
        // A record naming anything else was not written by start: refuse the whole file.
        sysctl::network_sysctl(path).context("state file")?;
        let Ok(now) = sysctl::read(path) else {
            continue;
        };
        if now == new {
            steps.push(Step::Sysctl {
                path: path.into(),
                value: old.into(),
                old: now,
            });
        } else if now != old {
            log::warn(&format!(
                "{path} is {now} (start set {new}): changed since, left alone"
            ));
        }
    }
    for r in state.of_kind("cascade") {
        let (path, old) = (r.get("path")?, r.get("old")?);
        sysctl::network_sysctl(path).context("state file")?;
        if let Ok(now) = sysctl::read(path) {
            if now != old {
                steps.push(Step::Sysctl {
                    path: path.into(),
                    value: old.into(),
                    old: now,
                });
            }
        }
    }
    Ok(())
}

/// A guest's device: netback's (on the xen-backend bus), or named as netback and qemu name them.
pub fn is_vif(l: &Link) -> bool {
    l.parent_bus.as_deref() == Some("xen-backend")
        || l.name.starts_with("vif")
        || l.alt_names.iter().any(|a| a.starts_with("vif"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways() {
        let g = parse_gateway("10.9.0.1/29").unwrap();
        assert_eq!(g.prefix_len, 29);
        assert_eq!(broadcast(&g), Some("10.9.0.7".parse().unwrap()));
        assert_eq!(broadcast(&parse_gateway("10.9.0.1/32").unwrap()), None);
        assert!(parse_gateway("2001:db8::1/64").unwrap().ip.is_ipv6());
        for bad in [
            "10.9.0.1",
            "10.9.0.1/33",
            "10.9.0.1/0",
            "10.9.0.1/+8",
            "x/24",
            "0.0.0.0/8",
            "127.0.0.1/8",
            "224.0.0.1/4",
            "fe80::1/64",
            "2001:db8::1/129",
        ] {
            assert!(parse_gateway(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cascade_covers_devices_but_not_the_global() {
        let p = cascade_paths(IP_FORWARD);
        assert!(!p.contains(&IP_FORWARD.to_string()));
        assert!(p.contains(&"/proc/sys/net/ipv4/conf/all/forwarding".to_string()));
        assert!(p.contains(&"/proc/sys/net/ipv4/conf/all/accept_redirects".to_string()));
        if has_ipv6() {
            let p = cascade_paths(IPV6_FORWARDING);
            assert!(!p.contains(&IPV6_FORWARDING.to_string()));
            assert!(p.contains(&"/proc/sys/net/ipv6/conf/default/forwarding".to_string()));
        }
    }
}
