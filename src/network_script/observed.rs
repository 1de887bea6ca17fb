//! What the network scripts' planners know of the host: read once, then planned from without
//! I/O. The golden tests build one by hand.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Result, anyhow};

use super::state::{LinkId, Record, State};
use crate::netlink::{Address, Link, Netlink, PortVlan, Route, RouteProtocol, RouteType};
use crate::nftables::{self, ChainState, Nfnetlink};
use crate::plan::Step;
use crate::sysctl;

/// The links, addresses, routes and network sysctls of the host's network namespace.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    /// Both families, every table.
    pub routes: Vec<Route>,
    /// The sysctls a plan may read, by path: the forwarding globals, every device's
    /// `forwarding` (IPv4 and IPv6) and `proxy_arp`, `ipv4/conf/all/accept_redirects`,
    /// `ipv6/conf/default/disable_ipv6`, and every path the state records. A path that is not
    /// here does not exist (IPv6 disabled, a device gone).
    pub sysctls: BTreeMap<String, String>,
    /// The VLANs of bridge ports, for `status` only (read on demand: one dump per port).
    pub port_vlans: BTreeMap<u32, Vec<PortVlan>>,
    /// The family ip nf_tables chains a planner reads, by (table, chain), read on demand. One
    /// not here is absent (or the kernel has no nf_tables).
    pub ip_chains: BTreeMap<(String, String), ChainState>,
}

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
pub const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

impl Observed {
    /// Read the host, and the sysctls `state` recorded.
    pub fn read(nl: &mut Netlink, state: Option<&State>) -> Result<Observed> {
        let mut routes = nl.routes(false, None)?;
        routes.extend(nl.routes(true, None)?);
        let mut paths = vec![
            IP_FORWARD.to_string(),
            IPV6_FORWARDING.to_string(),
            sysctl::conf_path("ipv4", "all", "accept_redirects"),
            sysctl::conf_path("ipv6", "default", "disable_ipv6"),
        ];
        for (family, keys) in [
            ("ipv4", &["forwarding", "proxy_arp"][..]),
            ("ipv6", &["forwarding"][..]),
        ] {
            let dir = format!("/proc/sys/net/{family}/conf");
            for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
                let dev = e.file_name().to_string_lossy().into_owned();
                paths.extend(keys.iter().map(|k| sysctl::conf_path(family, &dev, k)));
            }
        }
        for r in state.map_or(&[][..], |s| &s.records) {
            if let Record::Sysctl { path, .. } | Record::Cascade { path, .. } = r {
                paths.push(path.clone());
            }
        }
        let sysctls = paths
            .into_iter()
            .filter_map(|p| sysctl::read(&p).ok().map(|v| (p, v)))
            .collect();
        Ok(Observed {
            links: nl.links()?,
            addresses: nl.addresses(None)?,
            routes,
            sysctls,
            port_vlans: BTreeMap::new(),
            ip_chains: BTreeMap::new(),
        })
    }

    /// Add the VLANs of the port `index` (for `status`).
    pub fn read_port_vlans(&mut self, nl: &mut Netlink, index: u32) -> Result<()> {
        self.port_vlans.insert(index, nl.port_vlans(index)?);
        Ok(())
    }

    /// Add the family ip chain `table`/`chain`, if the kernel has it. A kernel without
    /// nf_tables has no chain.
    pub fn read_ip_chain(&mut self, table: &str, chain: &str) -> Result<()> {
        let r = Nfnetlink::open().and_then(|mut nf| nf.ip_chain(table, chain));
        match r {
            Ok(Some(c)) => {
                self.ip_chains
                    .insert((table.to_string(), chain.to_string()), c);
            }
            Ok(None) => {}
            Err(e) if nftables::is_unsupported(&e) => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("read nft chain ip {table} {chain}"))
                );
            }
        }
        Ok(())
    }

    pub fn ip_chain(&self, table: &str, chain: &str) -> Option<&ChainState> {
        self.ip_chains.get(&(table.to_string(), chain.to_string()))
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_at(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The link at a recorded ifindex, if it still has the recorded name.
    pub fn recorded(&self, id: &LinkId) -> Option<&Link> {
        self.link_at(id.index)
            .filter(|l| l.name == id.name.as_str())
    }

    /// A link's name for messages; `#<index>` when it is gone.
    pub fn name_of(&self, index: u32) -> String {
        self.link_at(index)
            .map_or_else(|| format!("#{index}"), |l| l.name.clone())
    }

    /// Names of the ports of `bridge`, except `except`.
    pub fn ports(&self, bridge: u32, except: &[u32]) -> Vec<String> {
        self.links
            .iter()
            .filter(|l| l.master == Some(bridge) && !except.contains(&l.index))
            .map(|l| l.name.clone())
            .collect()
    }

    pub fn addresses_of(&self, index: u32) -> impl Iterator<Item = &Address> {
        self.addresses.iter().filter(move |a| a.index == index)
    }

    /// Whether `index` holds `ip/len` (the rest of an address does not make it another).
    pub fn has_address(&self, index: u32, a: &Address) -> bool {
        self.addresses_of(index)
            .any(|h| h.ip == a.ip && h.prefix_len == a.prefix_len)
    }

    /// The routes out of `index`.
    pub fn routes_of(&self, index: u32) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(move |r| r.oif == Some(index))
    }

    pub fn sysctl(&self, path: &str) -> Option<&str> {
        self.sysctls.get(path).map(String::as_str)
    }

    /// Whether the kernel has IPv6.
    pub fn ipv6(&self) -> bool {
        self.sysctls.contains_key(IPV6_FORWARDING)
    }

    /// The write of `value` to `path` when the host has another value there; `None` when it
    /// has this one or no such sysctl.
    pub fn sysctl_change(&self, path: &str, value: &str) -> Option<Step> {
        Step::sysctl_change(path, value, self.sysctl(path)?)
    }

    /// Ifindexes for the links a plan creates.
    pub fn free_indexes(&self) -> FreeIndexes {
        FreeIndexes(self.links.iter().map(|l| l.index).max().unwrap_or(0))
    }
}

/// Ifindexes for the links a plan creates: above every index in use, so each step after the
/// creation can name the new link.
pub struct FreeIndexes(u32);

impl FreeIndexes {
    pub fn take(&mut self) -> Result<u32> {
        self.0 = self
            .0
            .checked_add(1)
            .filter(|i| *i <= i32::MAX as u32)
            .ok_or_else(|| anyhow!("no free interface index"))?;
        Ok(self.0)
    }
}

/// A unicast route: what a host's routes through a device are (not local, broadcast, ...).
pub fn is_unicast(r: &Route) -> bool {
    r.kind == RouteType::Unicast
}

/// A route the kernel derives from an address: it follows the address by itself.
pub fn is_kernel_route(r: &Route) -> bool {
    r.protocol == RouteProtocol::Kernel
}

/// A bridge's status line, as both network-bridge set-ups show their bridges.
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

/// "up"/"down" for status lines.
pub fn updown(l: &Link) -> &'static str {
    if l.up { "up" } else { "down" }
}

/// Hosts built by hand for the planners' golden tests.
#[cfg(test)]
pub mod fixture {
    use super::super::{Instance, Start};
    use super::*;
    use crate::netlink::{NewLink, RouteScope};
    use crate::plan::Step;

    pub fn link(index: u32, name: &str, up: bool) -> Link {
        Link {
            index,
            name: name.into(),
            mac: vec![2, 0, 0, 0, 0, index as u8],
            up,
            kind: Some("veth".into()),
            ..Default::default()
        }
    }

    pub fn bridge(index: u32, name: &str, up: bool) -> Link {
        Link {
            kind: Some("bridge".into()),
            ..link(index, name, up)
        }
    }

    pub fn addr(index: u32, ip: &str, len: u8) -> Address {
        Address::new(index, ip.parse().unwrap(), len)
    }

    /// A route as an administrator adds it (`proto boot`), optionally via a gateway.
    pub fn route(oif: u32, dst: &str, len: u8, via: Option<&str>) -> Route {
        let mut r = Route::via_dev(dst.parse().unwrap(), len, oif);
        r.gateway = via.map(|g| g.parse().unwrap());
        if r.gateway.is_some() {
            r.scope = RouteScope::Universe;
        }
        r
    }

    pub fn host(links: Vec<Link>) -> Observed {
        Observed {
            links,
            ..Default::default()
        }
    }

    pub fn with_sysctls(mut o: Observed, values: &[(&str, &str)]) -> Observed {
        for (p, v) in values {
            o.sysctls.insert(p.to_string(), v.to_string());
        }
        o
    }

    use super::super::state::State;

    /// The steps and records of a start that has something to do.
    pub fn planned(start: Start) -> (Vec<Step>, Vec<Record>) {
        match start {
            Start::Steps { steps, records } => (steps, records),
            Start::Nothing(why) => panic!("nothing to do: {why}"),
        }
    }

    /// What the kernel does with `step`, on the model: enough of it (a deleted link takes its
    /// addresses, routes, VLAN devices and sysctls along; a forwarding global cascades) to
    /// check that a restore from the state puts the host back after any prefix of a start.
    pub fn simulate(o: &mut Observed, step: &Step) {
        fn link(o: &mut Observed, index: u32) -> &mut Link {
            o.links
                .iter_mut()
                .find(|l| l.index == index)
                .unwrap_or_else(|| panic!("no link {index}"))
        }
        match step {
            Step::SetUp { index, up, .. } => link(o, *index).up = *up,
            Step::Rename {
                index, to, alias, ..
            } => {
                let l = link(o, *index);
                l.name = to.clone();
                l.alias = alias.clone().filter(|a| !a.is_empty());
            }
            Step::SetMac { index, mac, .. } => link(o, *index).mac = mac.clone(),
            Step::SetMaster { index, master, .. } => {
                link(o, *index).master = Some(*master).filter(|m| *m != 0)
            }
            Step::CreateLink {
                name,
                link: new,
                index,
            } => {
                assert!(
                    o.link(name).is_none() && o.link_at(*index).is_none(),
                    "{step}"
                );
                let mut l = Link {
                    index: *index,
                    name: name.clone(),
                    mac: vec![2, 0xee, 0, 0, 0, *index as u8],
                    ..Default::default()
                };
                match new {
                    NewLink::Bridge { vlan_filtering } => {
                        l.kind = Some("bridge".into());
                        l.vlan_filtering = Some(*vlan_filtering);
                    }
                    NewLink::Dummy => l.kind = Some("dummy".into()),
                    NewLink::Vlan { lower, id } => {
                        l.kind = Some("vlan".into());
                        l.lower = Some(*lower);
                        l.vlan_id = Some(*id);
                    }
                }
                o.links.push(l);
                let default = o
                    .sysctl("/proc/sys/net/ipv4/conf/default/forwarding")
                    .unwrap_or("0")
                    .to_string();
                o.sysctls
                    .insert(sysctl::conf_path("ipv4", name, "forwarding"), default);
                o.sysctls
                    .insert(sysctl::conf_path("ipv4", name, "proxy_arp"), "0".into());
            }
            Step::DeleteLink { index, .. } => {
                let gone: Vec<Link> = o
                    .links
                    .iter()
                    .filter(|l| l.index == *index || l.lower == Some(*index))
                    .cloned()
                    .collect();
                for g in &gone {
                    o.links.retain(|l| l.index != g.index);
                    o.addresses.retain(|a| a.index != g.index);
                    o.routes.retain(|r| r.oif != Some(g.index));
                    o.port_vlans.remove(&g.index);
                    let dir = format!("/conf/{}/", g.name);
                    o.sysctls.retain(|p, _| !p.contains(&dir));
                    for l in &mut o.links {
                        if l.master == Some(g.index) {
                            l.master = None;
                        }
                    }
                }
            }
            Step::AddAddress { addr, .. } => {
                assert!(!o.has_address(addr.index, addr), "{step}: exists");
                o.addresses.push(addr.clone());
            }
            Step::DelAddress { addr, .. } => o.addresses.retain(|a| {
                !(a.index == addr.index && a.ip == addr.ip && a.prefix_len == addr.prefix_len)
            }),
            Step::AddRoute { route, .. } => {
                assert!(!o.routes.iter().any(|r| r.same_as(route)), "{step}: exists");
                o.routes.push(route.clone());
            }
            Step::DelRoute { route, .. } => o.routes.retain(|r| !r.same_as(route)),
            Step::AddPortVlans { index, vlans, .. } => {
                o.port_vlans.entry(*index).or_default().extend(vlans)
            }
            Step::DelPortVlans { index, vlans, .. } => o
                .port_vlans
                .entry(*index)
                .or_default()
                .retain(|v| !vlans.iter().any(|d| d.vid == v.vid)),
            Step::Sysctl { path, value, .. } => {
                let family = match path.as_str() {
                    IP_FORWARD => Some("ipv4"),
                    IPV6_FORWARDING => Some("ipv6"),
                    _ => None,
                };
                if let Some(family) = family {
                    let dir = format!("/proc/sys/net/{family}/conf/");
                    for (p, v) in o.sysctls.iter_mut() {
                        if p.starts_with(&dir) && p.ends_with("/forwarding") {
                            *v = value.clone();
                        }
                    }
                    if family == "ipv4" {
                        let redirects = if value == "1" { "0" } else { "1" };
                        o.sysctls
                            .insert(format!("{dir}all/accept_redirects"), redirects.to_string());
                    }
                }
                o.sysctls.insert(path.clone(), value.clone());
            }
            Step::Masquerade {
                chain,
                comment,
                exists,
            } => {
                let key = (chain.table.clone(), chain.name.clone());
                assert_eq!(o.ip_chains.contains_key(&key), *exists, "{step}");
                o.ip_chains.insert(
                    key,
                    ChainState {
                        devices: Vec::new(),
                        comment: Some(comment.clone()),
                        rules: Some(chain.rules.len()),
                    },
                );
            }
            Step::Unmasquerade { table, chain } => {
                o.ip_chains.remove(&(table.clone(), chain.clone()));
            }
            other => panic!("not modelled: {other}"),
        }
    }

    /// What restoring compares: every link's identity and state, addresses, routes, sysctls.
    pub fn picture(o: &Observed) -> String {
        let mut links: Vec<String> = o
            .links
            .iter()
            .map(|l| {
                format!(
                    "{} {} up={} master={:?} alias={:?} mac={:?} kind={:?}",
                    l.index, l.name, l.up, l.master, l.alias, l.mac, l.kind
                )
            })
            .collect();
        links.sort();
        let mut addrs: Vec<String> = o
            .addresses
            .iter()
            .map(|a| format!("{} {}/{}", a.index, a.ip, a.prefix_len))
            .collect();
        addrs.sort();
        let mut routes: Vec<String> = o
            .routes
            .iter()
            .map(|r| {
                format!(
                    "{:?} {}/{} via {:?} metric {:?} table {}",
                    r.oif, r.dst, r.prefix_len, r.gateway, r.metric, r.table
                )
            })
            .collect();
        routes.sort();
        format!(
            "{links:#?}\n{addrs:#?}\n{routes:#?}\n{:#?}\n{:#?}",
            o.sysctls, o.ip_chains
        )
    }

    /// Start interrupted after each of its steps (and after none), then restored from the
    /// state as `txn::restore` does: the host is as before, within three passes.
    pub fn restores_after_any_prefix(inst: &dyn Instance, before: &Observed) {
        let (steps, records) = planned(inst.plan_start(before).unwrap());
        let state = State::new(records);
        for done in 0..=steps.len() {
            let mut o = before.clone();
            for s in &steps[..done] {
                simulate(&mut o, s);
            }
            let mut passes = 0;
            loop {
                let stop = inst.plan_stop(&o, &state).unwrap();
                if stop.is_empty() {
                    break;
                }
                passes += 1;
                assert!(passes <= 3, "after {done} steps: still {:?}", shown(&stop));
                for s in &stop {
                    simulate(&mut o, s);
                }
            }
            assert_eq!(picture(&o), picture(before), "after {done} steps");
        }
    }

    /// Steps as the commands they print.
    pub fn shown(steps: &[Step]) -> Vec<String> {
        steps.iter().map(Step::to_string).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    #[test]
    fn what_makes_a_route_another() {
        let want = route(3, "192.168.5.0", 24, Some("10.0.0.1"));
        let mut have = want.clone();
        // Filled in by the kernel: the same route.
        have.protocol = RouteProtocol::Kernel;
        have.scope = crate::netlink::RouteScope::Host;
        have.src = Some("10.0.0.2".parse().unwrap());
        assert!(have.same_as(&want));
        // The kernel lists an IPv4 route of metric 0 without one.
        assert!(
            Route {
                metric: Some(0),
                ..want.clone()
            }
            .same_as(&want)
        );
        let others = [
            route(4, "192.168.5.0", 24, Some("10.0.0.1")),
            route(3, "192.168.6.0", 24, Some("10.0.0.1")),
            route(3, "192.168.5.0", 25, Some("10.0.0.1")),
            route(3, "192.168.5.0", 24, Some("10.0.0.9")),
            route(3, "192.168.5.0", 24, None),
            Route {
                metric: Some(5),
                ..want.clone()
            },
            Route {
                table: 100,
                ..want.clone()
            },
        ];
        for o in &others {
            assert!(!o.same_as(&want), "{o:?}");
        }
        assert!(is_unicast(&want) && !is_kernel_route(&want));
    }

    #[test]
    fn a_sysctl_change_only_where_the_value_differs() {
        let o = with_sysctls(host(vec![]), &[(IP_FORWARD, "0")]);
        assert_eq!(
            o.sysctl_change(IP_FORWARD, "1"),
            Some(Step::Sysctl {
                path: IP_FORWARD.into(),
                value: "1".into(),
                old: "0".into()
            })
        );
        assert_eq!(o.sysctl_change(IP_FORWARD, "0"), None);
        assert_eq!(o.sysctl_change(IPV6_FORWARDING, "1"), None, "no IPv6");
        assert!(!o.ipv6());
    }
}
