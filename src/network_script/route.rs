//! network-route: the host routes for its guests. `start netdev=<dev> [gateway=<addr>/<len> ...]`
//! turns on IPv4 forwarding (and IPv6 forwarding when a gateway is IPv6 or the host has global
//! IPv6) and proxy ARP on the gateway device; with `gateway=` it makes sure the gateway device
//! (default `dummy0`) exists — created as a dummy link — is up, and holds those addresses, as in
//! the Debian-Administration routed set-up. vif-route then puts the gateway address on each vif.
//!
//! The stock script did the same writes for start, stop and status alike; here `stop` puts back
//! exactly what `start` changed (old sysctl values, created link, added addresses) and `status`
//! shows the routed picture.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, bail};

use super::observed::{IP_FORWARD, IPV6_FORWARDING, Observed, is_unicast, updown};
use super::state::{LinkId, Record, State};
use super::{Instance, Params, Script, Start};
use crate::addr;
use crate::ifname::IfName;
use crate::log;
use crate::netlink::{Address, Link, Netlink, NewLink, RT_TABLE_MAIN};
use crate::plan::{Step, route_str};
use crate::sysctl;

const DEFAULT_GATEWAY_DEV: &str = "dummy0";

/// One `gateway=` address: the address the guests use as their gateway, with its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

pub fn parse_gateway(s: &str) -> Result<Gateway> {
    if !s.contains('/') {
        bail!("gateway={s}: give the prefix length of the routed subnet (e.g. 10.9.0.1/29)");
    }
    let (ip, prefix_len) = addr::parse_prefixed(s, &format!("gateway={s}"), false)?;
    if prefix_len == 0 {
        bail!("gateway={s}: bad prefix length \"0\"");
    }
    if addr::is_unusable(&ip) || addr::is_ipv6_link_local(&ip) {
        bail!("gateway={s}: not a usable unicast address");
    }
    Ok(Gateway { ip, prefix_len })
}

/// The broadcast address ifupdown would give an IPv4 gateway (none for /31 and /32).
fn broadcast(g: &Gateway) -> Option<Ipv4Addr> {
    addr::broadcast(g.ip, g.prefix_len)
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

/// Every per-device value a write to `global` also rewrites (the kernel propagates forwarding
/// to `all`, `default` and each device; IPv4 also flips `all/accept_redirects`), as the host
/// has them.
fn cascade_paths(o: &Observed, global: &str) -> Vec<String> {
    let family = if global == IP_FORWARD { "ipv4" } else { "ipv6" };
    let dir = format!("/proc/sys/net/{family}/conf/");
    let mut out: Vec<String> = o
        .sysctls
        .keys()
        .filter(|p| {
            p.strip_prefix(&dir)
                .and_then(|rest| rest.strip_suffix("/forwarding"))
                .is_some_and(|dev| !dev.contains('/'))
        })
        .cloned()
        .collect();
    if family == "ipv4" {
        out.push(format!("{dir}all/accept_redirects"));
    }
    out.retain(|p| p != global && o.sysctl(p).is_some());
    out
}

/// Set `path` to `value` if it differs, recording the old value for stop.
fn sysctl_step(
    o: &Observed,
    steps: &mut Vec<Step>,
    records: &mut Vec<Record>,
    path: &str,
    value: &str,
) {
    if let Some(step) = o.sysctl_change(path, value) {
        if let Step::Sysctl { old, .. } = &step {
            records.push(Record::Sysctl {
                path: path.to_string(),
                old: old.clone(),
                new: value.into(),
            });
        }
        steps.push(step);
    }
}

/// Turn a forwarding global on, recording the values the kernel will rewrite with it, to put
/// them back on stop.
pub(super) fn forwarding_step(
    o: &Observed,
    steps: &mut Vec<Step>,
    records: &mut Vec<Record>,
    global: &str,
) {
    let before = steps.len();
    sysctl_step(o, steps, records, global, "1");
    if steps.len() > before {
        for path in cascade_paths(o, global) {
            let old = o.sysctl(&path).unwrap_or_default().to_string();
            records.push(Record::Cascade { path, old });
        }
    }
}

fn host_has_global_ipv6(o: &Observed) -> bool {
    o.addresses
        .iter()
        .any(|a| a.ip.is_ipv6() && a.scope == 0 && !a.ip.is_loopback())
}

impl RouteInstance {
    fn wants_ipv6(&self, o: &Observed) -> bool {
        self.gateways.iter().any(|g| g.ip.is_ipv6()) || host_has_global_ipv6(o)
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

    fn plan_start(&self, o: &Observed) -> Result<Start> {
        let name = self.netdev.to_string();
        let link = o.link(&name);
        if self.gateways.iter().any(|g| g.ip.is_ipv6()) && !o.ipv6() {
            bail!("an IPv6 gateway is given but the kernel has IPv6 disabled");
        }
        let mut steps = Vec::new();
        let mut records = Vec::new();
        // The link first: on a kernel without dummy support nothing else has changed yet.
        let index = match link {
            Some(l) => l.index,
            None if self.gateways.is_empty() => {
                bail!("gateway device {name} does not exist (give gateway= to create it)")
            }
            None => {
                let index = o.free_indexes().take()?;
                steps.push(Step::CreateLink {
                    name: name.clone(),
                    link: NewLink::Dummy,
                    index,
                });
                records.push(Record::Created(LinkId::new(index, &self.netdev)));
                index
            }
        };
        forwarding_step(o, &mut steps, &mut records, IP_FORWARD);
        if o.ipv6() && self.wants_ipv6(o) {
            forwarding_step(o, &mut steps, &mut records, IPV6_FORWARDING);
        }
        let proxy_arp = sysctl::ipv4_conf(&self.netdev, "proxy_arp");
        if link.is_some() {
            sysctl_step(o, &mut steps, &mut records, &proxy_arp, "1");
        } else {
            // A new link's sysctls vanish with it: nothing to record.
            steps.push(Step::Sysctl {
                path: proxy_arp,
                value: "1".into(),
                old: "0".into(),
            });
        }
        for g in &self.gateways {
            let mut addr = Address::new(index, g.ip, g.prefix_len);
            if link.is_some() && o.has_address(index, &addr) {
                continue;
            }
            addr.broadcast = broadcast(g);
            if link.is_some() {
                records.push(Record::Addr(addr.clone()));
            }
            steps.push(Step::AddAddress {
                name: name.clone(),
                addr,
            });
        }
        if !link.is_some_and(|l| l.up) {
            if link.is_some() {
                records.push(Record::Up(LinkId::new(index, &self.netdev)));
            }
            steps.push(Step::SetUp {
                index,
                name: name.clone(),
                up: true,
            });
        }
        Ok(Start::Steps { steps, records })
    }

    fn plan_stop(&self, o: &Observed, state: &State) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        for r in &state.records {
            let Record::Addr(a) = r else { continue };
            if o.has_address(a.index, a) {
                steps.push(Step::DelAddress {
                    name: self.netdev.to_string(),
                    addr: a.clone(),
                });
            }
        }
        for r in &state.records {
            let Record::Up(link) = r else { continue };
            if o.recorded(link).is_some_and(|l| l.up) {
                steps.push(Step::SetUp {
                    index: link.index,
                    name: link.name.to_string(),
                    up: false,
                });
            }
        }
        for r in &state.records {
            let Record::Created(link) = r else { continue };
            if o.recorded(link).is_some() {
                steps.push(Step::DeleteLink {
                    index: link.index,
                    name: link.name.to_string(),
                });
            }
        }
        restore_sysctls(o, state, &mut steps);
        Ok(steps)
    }

    fn status(&self, o: &Observed, _: Option<&State>) -> Result<String> {
        let mut out = String::new();
        let read = |p: &str| o.sysctl(p).unwrap_or("-").to_string();
        match o.link(self.netdev.as_str()) {
            Some(l) => {
                let addrs: Vec<String> = o
                    .addresses_of(l.index)
                    .filter(|a| !a.is_ipv6_link_local())
                    .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                    .collect();
                out.push_str(&format!(
                    "gateway device {}: {}, {}, addresses: {}\n",
                    l.name,
                    l.kind.as_deref().unwrap_or("plain"),
                    updown(l),
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
        let vifs: Vec<&Link> = o.links.iter().filter(|l| is_vif(l)).collect();
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
            for r in o
                .routes_of(v.index)
                .filter(|r| r.table == RT_TABLE_MAIN && is_unicast(r))
                .filter(|r| !crate::addr::is_ipv6_link_local(&r.dst))
            {
                out.push_str(&format!("    {}\n", route_str(r, &v.name)));
            }
        }
        Ok(out)
    }
}

/// The steps that put back the sysctls `state` records (`Sysctl`: written by start; `Cascade`:
/// rewritten by the kernel along with a global one), from what they are now: globals before the
/// per-device values their writes cascade to. The paths are network sysctls: the state file's
/// codec refuses any other.
pub(super) fn restore_sysctls(o: &Observed, state: &State, steps: &mut Vec<Step>) {
    for r in state.records.iter().rev() {
        let Record::Sysctl { path, old, new } = r else {
            continue;
        };
        let Some(now) = o.sysctl(path) else {
            continue;
        };
        if now == new {
            steps.push(Step::Sysctl {
                path: path.clone(),
                value: old.clone(),
                old: now.to_string(),
            });
        } else if now != old {
            log::warn(&format!(
                "{path} is {now} (start set {new}): changed since, left alone"
            ));
        }
    }
    for r in &state.records {
        if let Record::Cascade { path, old } = r {
            steps.extend(o.sysctl_change(path, old));
        }
    }
}

/// A guest's device: netback's (on the xen-backend bus), or named as netback and qemu name them.
pub fn is_vif(l: &Link) -> bool {
    l.parent_bus.as_deref() == Some("xen-backend")
        || l.name.starts_with("vif")
        || l.alt_names.iter().any(|a| a.starts_with("vif"))
}

#[cfg(test)]
mod tests {
    use super::super::observed::fixture::*;
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

    const CONF: &str = "/proc/sys/net/ipv4/conf";

    fn routed(netdev: &str, gateways: &[&str]) -> RouteInstance {
        RouteInstance {
            netdev: IfName::new(netdev).unwrap(),
            gateways: gateways.iter().map(|g| parse_gateway(g).unwrap()).collect(),
        }
    }

    /// lo and eth0 on a host without IPv6; forwarding off except on eth0.
    fn ipv4_host() -> Observed {
        with_sysctls(
            host(vec![link(1, "lo", true), link(2, "eth0", true)]),
            &[
                (IP_FORWARD, "0"),
                ("/proc/sys/net/ipv4/conf/all/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/default/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/eth0/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/lo/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/all/accept_redirects", "1"),
                ("/proc/sys/net/ipv4/conf/eth0/proxy_arp", "0"),
            ],
        )
    }

    /// Writing ip_forward rewrites every device's forwarding (and all/accept_redirects):
    /// start records those values, stop puts them back, also after its own write of
    /// ip_forward cascaded again.
    #[test]
    fn the_forwarding_cascade_is_recorded_and_put_back() {
        let inst = routed("eth0", &[]);
        let (steps, records) = planned(inst.plan_start(&ipv4_host()).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
                "echo 1 > /proc/sys/net/ipv4/conf/eth0/proxy_arp",
            ]
        );
        let cascade: Vec<(&str, &str)> = records
            .iter()
            .filter_map(|r| match r {
                Record::Cascade { path, old } => Some((path.as_str(), old.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            cascade,
            vec![
                ("/proc/sys/net/ipv4/conf/all/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/default/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/eth0/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/lo/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/all/accept_redirects", "1"),
            ]
        );
        let state = State::new(records);
        // As the kernel left it after start: everything forwards, no redirects.
        let started = with_sysctls(
            ipv4_host(),
            &[
                (IP_FORWARD, "1"),
                ("/proc/sys/net/ipv4/conf/all/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/default/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/lo/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/all/accept_redirects", "0"),
                ("/proc/sys/net/ipv4/conf/eth0/proxy_arp", "1"),
            ],
        );
        assert!(inst.is_started(&started, &state).unwrap());
        assert!(planned(inst.plan_start(&started).unwrap()).0.is_empty());
        assert_eq!(
            shown(&inst.plan_stop(&started, &state).unwrap()),
            vec![
                "echo 0 > /proc/sys/net/ipv4/conf/eth0/proxy_arp",
                "echo 0 > /proc/sys/net/ipv4/ip_forward",
                "echo 0 > /proc/sys/net/ipv4/conf/all/forwarding",
                "echo 0 > /proc/sys/net/ipv4/conf/default/forwarding",
                "echo 0 > /proc/sys/net/ipv4/conf/lo/forwarding",
                "echo 1 > /proc/sys/net/ipv4/conf/all/accept_redirects",
            ]
        );
        // The write of ip_forward=0 turned eth0's forwarding off too: the next pass of stop
        // puts it back.
        let cascaded = with_sysctls(
            ipv4_host(),
            &[("/proc/sys/net/ipv4/conf/eth0/forwarding", "0")],
        );
        assert_eq!(
            shown(&inst.plan_stop(&cascaded, &state).unwrap()),
            vec!["echo 1 > /proc/sys/net/ipv4/conf/eth0/forwarding"]
        );
        assert!(inst.plan_stop(&ipv4_host(), &state).unwrap().is_empty());
        // A value changed by someone else since start is left alone.
        let changed = with_sysctls(started, &[(IP_FORWARD, "2")]);
        assert!(
            !shown(&inst.plan_stop(&changed, &state).unwrap())
                .contains(&"echo 0 > /proc/sys/net/ipv4/ip_forward".to_string())
        );
    }

    #[test]
    fn a_gateway_device_is_created_with_its_addresses() {
        let inst = routed("gw0", &["10.9.0.1/29", "2001:db8:9::1/64"]);
        let mut o = ipv4_host();
        o.sysctls.insert(IPV6_FORWARDING.into(), "0".into());
        o.sysctls
            .insert(format!("{CONF}/all/forwarding"), "1".into());
        let (steps, records) = planned(inst.plan_start(&o).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "ip link add gw0 index 3 type dummy",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
                "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
                "echo 1 > /proc/sys/net/ipv4/conf/gw0/proxy_arp",
                "ip address add 10.9.0.1/29 dev gw0",
                "ip address add 2001:db8:9::1/64 dev gw0",
                "ip link set gw0 up",
            ]
        );
        // What goes with the new link is not recorded: deleting it takes it all away.
        assert!(matches!(
            records[0],
            Record::Created(LinkId { index: 3, .. })
        ));
        assert!(
            !records
                .iter()
                .any(|r| matches!(r, Record::Addr(_) | Record::Up(_)))
        );
        // Without IPv6 in the kernel an IPv6 gateway is refused before any change.
        let e = inst.plan_start(&ipv4_host()).err().unwrap().to_string();
        assert_eq!(
            e,
            "an IPv6 gateway is given but the kernel has IPv6 disabled"
        );
    }

    #[test]
    fn an_existing_gateway_device_gets_what_it_lacks() {
        let inst = routed("gw0", &["10.9.0.1/29", "10.8.0.1/24"]);
        let mut o = with_sysctls(
            ipv4_host(),
            &[(IP_FORWARD, "1"), (&format!("{CONF}/gw0/proxy_arp"), "1")],
        );
        o.links.push(link(5, "gw0", false));
        o.addresses.push(addr(5, "10.9.0.1", 29));
        let (steps, records) = planned(inst.plan_start(&o).unwrap());
        assert_eq!(
            shown(&steps),
            vec!["ip address add 10.8.0.1/24 dev gw0", "ip link set gw0 up"]
        );
        let state = State::new(records);
        let mut started = o.clone();
        started.links[2].up = true;
        started.addresses.push(addr(5, "10.8.0.1", 24));
        assert!(inst.is_started(&started, &state).unwrap());
        assert_eq!(
            shown(&inst.plan_stop(&started, &state).unwrap()),
            vec!["ip address del 10.8.0.1/24 dev gw0", "ip link set gw0 down"]
        );
    }

    #[test]
    fn restore_after_any_prefix_of_start() {
        let o = ipv4_host();
        restores_after_any_prefix(&routed("eth0", &[]), &o);
        restores_after_any_prefix(&routed("gw0", &["10.9.0.1/29", "10.8.0.1/24"]), &o);
        let mut v6 = with_sysctls(
            o.clone(),
            &[
                (IPV6_FORWARDING, "0"),
                ("/proc/sys/net/ipv6/conf/default/forwarding", "0"),
                ("/proc/sys/net/ipv6/conf/eth0/forwarding", "1"),
            ],
        );
        restores_after_any_prefix(&routed("gw0", &["10.9.0.1/29", "2001:db8:9::1/64"]), &v6);
        v6.links.push(link(5, "gw0", false));
        v6.addresses.push(addr(5, "10.9.0.1", 29));
        v6.sysctls
            .insert(format!("{CONF}/gw0/proxy_arp"), "0".into());
        restores_after_any_prefix(&routed("gw0", &["10.9.0.1/29", "2001:db8:9::1/64"]), &v6);
    }
}
