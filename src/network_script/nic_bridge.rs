//! network-bridge over a NIC (xend's set-up): `start [netdev=ethX] [bridge=NAME]`. A bridge
//! takes the NIC's place: it gets the NIC's name (or `bridge=`), its MAC, its addresses and every
//! route through it; the NIC becomes `p<name>`, a port without addresses.

use anyhow::{Result, bail};
use netlink_packet_route::address::AddressFlags;

use super::observed::{Observed, bridge_line, is_kernel_route, is_unicast, updown};
use super::state::{LinkId, Record, State};
use super::{Instance, Script, Start};
use crate::ifname::IfName;
use crate::log;
use crate::netlink::{Address, NewLink, Route};
use crate::plan::{Step, route_str};

/// The routes that go with the NIC: unicast, through it, not derived by the kernel from an
/// address (those come back by themselves). Direct routes first: a gateway must be reachable
/// when its route is added.
pub fn movable_routes(o: &Observed, index: u32) -> Vec<Route> {
    let mut routes: Vec<Route> = o
        .routes_of(index)
        .filter(|r| {
            is_unicast(r) && !is_kernel_route(r) && !crate::addr::is_ipv6_link_local(&r.dst)
        })
        .cloned()
        .collect();
    routes.sort_by_key(|r| r.gateway.is_some());
    routes
}

/// An address label names its device (`eth0`, `eth0:1`): follow the device's new name.
fn relabel(label: &Option<String>, from: &str, to: &str) -> Option<String> {
    label.as_ref().map(|l| match l.strip_prefix(from) {
        Some(rest) if rest.is_empty() || rest.starts_with(':') => {
            let new = format!("{to}{rest}");
            // A label is limited like an interface name; keep the device name if it would not fit.
            if new.len() <= crate::ifname::MAX_LEN {
                new
            } else {
                to.to_string()
            }
        }
        _ => l.clone(),
    })
}

pub struct NicBridge {
    pub netdev: IfName,
    pub bridge: IfName,
    pub pdev: IfName,
    pub force: bool,
}

/// What a NIC bridge's state records of the NIC: the NIC, its new name, whether it was up and
/// its alias.
struct NicRecord<'a> {
    link: &'a LinkId,
    pdev: &'a IfName,
    up: bool,
    alias: &'a Option<String>,
}

impl NicBridge {
    fn link_records(state: &State) -> Result<(NicRecord<'_>, &LinkId)> {
        let nic = state.records.iter().find_map(|r| match r {
            Record::Nic {
                link,
                pdev,
                up,
                alias,
            } => Some(NicRecord {
                link,
                pdev,
                up: *up,
                alias,
            }),
            _ => None,
        });
        let bridge = state.records.iter().find_map(|r| match r {
            Record::Bridge { link, .. } => Some(link),
            _ => None,
        });
        match (nic, bridge) {
            (Some(n), Some(b)) => Ok((n, b)),
            (None, _) => bail!("state has no \"nic\" record"),
            (_, None) => bail!("state has no \"bridge\" record"),
        }
    }
}

impl Instance for NicBridge {
    fn script(&self) -> Script {
        Script::Bridge
    }

    fn key(&self) -> String {
        self.bridge.to_string()
    }

    fn params(&self) -> Vec<(String, String)> {
        vec![
            ("netdev".into(), self.netdev.to_string()),
            ("bridge".into(), self.bridge.to_string()),
        ]
    }

    fn plan_start(&self, o: &Observed) -> Result<Start> {
        let (netdev, bridge, pdev) = (&self.netdev, &self.bridge, &self.pdev);
        let Some(nic) = o.link(netdev.as_str()) else {
            bail!("netdev {netdev} does not exist");
        };
        if nic.is_bridge() {
            return Ok(Start::Nothing(format!(
                "{netdev} already is a bridge (not built by xen-vif: stop leaves it alone)"
            )));
        }
        if let Some(m) = nic.master {
            bail!(
                "netdev {netdev} is a port of bridge {}: it cannot be bridged again",
                o.name_of(m)
            );
        }
        if nic.mac.len() != 6 {
            bail!("netdev {netdev} is not an Ethernet device: it cannot be a bridge port");
        }
        if o.link(pdev.as_str()).is_some() {
            bail!("{pdev} already exists and is not ours: cannot rename {netdev} to {pdev}");
        }
        if bridge != netdev && o.link(bridge.as_str()).is_some() {
            bail!("{bridge} already exists and is not ours: cannot create bridge {bridge}");
        }
        let mut addrs: Vec<Address> = o
            .addresses_of(nic.index)
            .filter(|a| !a.is_ipv6_link_local())
            .cloned()
            .collect();
        // Primaries first (as the kernel lists them): the moves below go in reverse.
        addrs.sort_by_key(|a| a.is_secondary());
        let routes = movable_routes(o, nic.index);
        let bindex = o.free_indexes().take()?;
        let (n, b, p) = (netdev.to_string(), bridge.to_string(), pdev.to_string());

        let mut steps = Vec::new();
        // Away from the NIC, newest first: gateway routes before the routes that reach the
        // gateway, secondary addresses before their primary (deleting a primary takes its
        // secondaries with it). The undo puts them back in the original order.
        for r in routes.iter().rev() {
            steps.push(Step::DelRoute {
                dev: n.clone(),
                route: r.clone(),
            });
        }
        for a in addrs.iter().rev() {
            steps.push(Step::DelAddress {
                name: n.clone(),
                addr: a.clone(),
            });
        }
        if nic.up {
            steps.push(Step::SetUp {
                index: nic.index,
                name: n.clone(),
                up: false,
            });
        }
        steps.push(Step::Rename {
            index: nic.index,
            from: n.clone(),
            to: p.clone(),
            // The NIC keeps its description (a rename without one would clear it).
            alias: nic.alias.clone(),
            old_alias: nic.alias.clone(),
        });
        steps.push(Step::CreateLink {
            name: b.clone(),
            link: NewLink::Bridge {
                vlan_filtering: false,
            },
            index: bindex,
        });
        // The bridge answers for the host as the NIC did: same MAC (DHCP leases, ARP caches).
        steps.push(Step::SetMac {
            index: bindex,
            name: b.clone(),
            mac: nic.mac.clone(),
            old: nic.mac.clone(),
            best_effort: false,
        });
        steps.push(Step::SetMaster {
            index: nic.index,
            name: p.clone(),
            master: bindex,
            master_name: b.clone(),
            old: 0,
        });
        steps.push(Step::SetUp {
            index: nic.index,
            name: p.clone(),
            up: true,
        });
        steps.push(Step::SetUp {
            index: bindex,
            name: b.clone(),
            up: true,
        });
        for a in &addrs {
            let mut moved = a.clone();
            moved.index = bindex;
            moved.label = relabel(&a.label, &n, &b);
            if a.ip.is_ipv6() {
                // The host already owned this address on this segment: no duplicate detection,
                // so it is usable at once.
                moved.flags |= AddressFlags::Nodad.bits();
            }
            steps.push(Step::AddAddress {
                name: b.clone(),
                addr: moved,
            });
        }
        for r in &routes {
            let mut moved = r.clone();
            moved.oif = Some(bindex);
            steps.push(Step::AddRoute {
                dev: b.clone(),
                route: moved,
            });
        }

        let mut records = vec![
            Record::Nic {
                link: LinkId::new(nic.index, netdev),
                pdev: pdev.clone(),
                up: nic.up,
                alias: nic.alias.clone(),
            },
            Record::Bridge {
                link: LinkId::new(bindex, bridge),
                vid: None,
                filtering: false,
            },
        ];
        records.extend(addrs.iter().cloned().map(Record::Addr));
        records.extend(routes.iter().cloned().map(Record::Route));
        Ok(Start::Steps { steps, records })
    }

    fn is_started(&self, o: &Observed, state: &State) -> Result<bool> {
        let (nic, br) = Self::link_records(state)?;
        let Some(bridge) = o.recorded(br).filter(|l| l.is_bridge()) else {
            return Ok(false);
        };
        let nic = o.link_at(nic.link.index);
        Ok(nic.is_some_and(|l| l.name == self.pdev.as_str() && l.master == Some(bridge.index)))
    }

    fn plan_stop(&self, o: &Observed, state: &State) -> Result<Vec<Step>> {
        let (nic_rec, br_rec) = Self::link_records(state)?;
        let nindex = nic_rec.link.index;
        let (name, pdev) = (nic_rec.link.name.as_str(), nic_rec.pdev.as_str());
        let mut steps = Vec::new();
        if let Some(br) = o.recorded(br_rec).filter(|l| l.is_bridge()) {
            let others = o.ports(br.index, &[nindex]);
            if !others.is_empty() && !self.force {
                bail!(
                    "bridge {} still has vifs attached ({}): shut those guests down first, or stop with force=yes",
                    br.name,
                    others.join(", ")
                );
            }
            // The bridge's addresses and routes go with it, and it frees the NIC's name.
            steps.push(Step::DeleteLink {
                index: br.index,
                name: br.name.clone(),
            });
        }
        let Some(nic) = o
            .link_at(nindex)
            .filter(|l| l.name == name || l.name == pdev)
        else {
            log::warn(&format!(
                "the NIC {name} (index {nindex}) is gone: only the bridge is removed"
            ));
            return Ok(steps);
        };
        let alias = nic_rec.alias.clone();
        let mut up = nic.up;
        if nic.name != name {
            if nic.up {
                steps.push(Step::SetUp {
                    index: nindex,
                    name: nic.name.clone(),
                    up: false,
                });
                up = false;
            }
            steps.push(Step::Rename {
                index: nindex,
                from: nic.name.clone(),
                to: name.into(),
                alias: alias.clone(),
                old_alias: nic.alias.clone(),
            });
        } else if nic.alias != alias {
            // An undone rename clears the alias; put the NIC's own back.
            steps.push(Step::Rename {
                index: nindex,
                from: nic.name.clone(),
                to: name.into(),
                alias: Some(alias.clone().unwrap_or_default()),
                old_alias: nic.alias.clone(),
            });
        }
        let was_up = nic_rec.up;
        if was_up && !up {
            steps.push(Step::SetUp {
                index: nindex,
                name: name.into(),
                up: true,
            });
        }
        for r in &state.records {
            let Record::Addr(a) = r else { continue };
            if !o.has_address(nindex, a) {
                steps.push(Step::AddAddress {
                    name: name.into(),
                    addr: a.clone(),
                });
            }
        }
        for r in &state.records {
            let Record::Route(route) = r else { continue };
            if !o.routes_of(nindex).any(|n| n.same_as(route)) {
                steps.push(Step::AddRoute {
                    dev: name.into(),
                    route: route.clone(),
                });
            }
        }
        if !was_up && up {
            steps.push(Step::SetUp {
                index: nindex,
                name: name.into(),
                up: false,
            });
        }
        Ok(steps)
    }

    fn status(&self, o: &Observed, state: Option<&State>) -> Result<String> {
        let name = state
            .and_then(|s| Self::link_records(s).ok())
            .map_or(self.bridge.as_str(), |(_, b)| b.name.as_str())
            .to_string();
        let links = &o.links;
        let Some(br) = o.link(&name) else {
            return Ok(format!("{name}: missing\n"));
        };
        if !br.is_bridge() {
            return Ok(format!(
                "{name}: not a bridge ({} link, {})\n",
                br.kind.as_deref().unwrap_or("plain"),
                updown(br)
            ));
        }
        let mut out = bridge_line(br);
        for p in links.iter().filter(|l| l.master == Some(br.index)) {
            let role = if p.name == self.pdev.as_str() {
                " (the NIC)"
            } else {
                ""
            };
            out.push_str(&format!("  port {} {}{role}\n", p.name, updown(p)));
        }
        for a in o.addresses_of(br.index) {
            if !a.is_ipv6_link_local() {
                out.push_str(&format!("  address {}/{}\n", a.ip, a.prefix_len));
            }
        }
        for r in o
            .routes_of(br.index)
            .filter(|r| is_unicast(r) && !crate::addr::is_ipv6_link_local(&r.dst))
        {
            out.push_str(&format!("  route {}\n", route_str(r, &br.name)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::observed::fixture::*;
    use super::*;

    #[test]
    fn labels_follow_the_device() {
        let l = |s: &str| Some(s.to_string());
        assert_eq!(relabel(&l("eth0"), "eth0", "xenbr0"), l("xenbr0"));
        assert_eq!(relabel(&l("eth0:web"), "eth0", "xenbr0"), l("xenbr0:web"));
        assert_eq!(relabel(&l("eth01"), "eth0", "xenbr0"), l("eth01"));
        assert_eq!(relabel(&None, "eth0", "xenbr0"), None);
        assert_eq!(
            relabel(&l("eth0:abcdefghij"), "eth0", "xenbr0"),
            l("xenbr0")
        );
    }
    const SECONDARY: u32 = 0x01;

    /// eth0 (index 2, `up`, alias `uplink`) with two IPv4 addresses and one IPv6, a kernel
    /// route, a direct route and two routes through the gateway 10.0.0.1.
    fn nic_host(up: bool) -> Observed {
        let mut eth0 = link(2, "eth0", up);
        eth0.alias = Some("uplink".into());
        let mut secondary = addr(2, "10.0.0.3", 24);
        secondary.flags |= SECONDARY;
        let mut kernel = route(2, "10.0.0.0", 24, None);
        kernel.protocol = crate::netlink::RouteProtocol::Kernel;
        Observed {
            addresses: vec![
                secondary,
                addr(2, "10.0.0.2", 24),
                addr(2, "2001:db8::2", 64),
                addr(2, "fe80::1", 64),
            ],
            routes: vec![
                kernel,
                route(2, "0.0.0.0", 0, Some("10.0.0.1")),
                route(2, "192.168.5.0", 24, Some("10.0.0.1")),
                route(2, "10.1.0.0", 16, None),
                route(1, "127.0.0.0", 8, None),
            ],
            ..host(vec![link(1, "lo", true), eth0])
        }
    }

    fn nic_bridge(force: bool) -> NicBridge {
        NicBridge {
            netdev: IfName::new("eth0").unwrap(),
            bridge: IfName::new("eth0").unwrap(),
            pdev: IfName::new("peth0").unwrap(),
            force,
        }
    }

    /// The host after a start: peth0 a port of the bridge eth0 (index 3), which holds the
    /// addresses and routes.
    fn bridged(nic_up: bool) -> Observed {
        let mut o = nic_host(nic_up);
        o.links[1].name = "peth0".into();
        o.links[1].up = true;
        o.links[1].master = Some(3);
        o.links.push(bridge(3, "eth0", true));
        for a in &mut o.addresses {
            a.index = 3;
        }
        for r in &mut o.routes {
            if r.oif == Some(2) {
                r.oif = Some(3);
            }
        }
        o
    }

    #[test]
    fn nic_bridge_start_moves_secondaries_and_gateway_routes_first() {
        let (steps, records) = planned(nic_bridge(false).plan_start(&nic_host(true)).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "ip route del 192.168.5.0/24 via 10.0.0.1 dev eth0",
                "ip route del 0.0.0.0/0 via 10.0.0.1 dev eth0",
                "ip route del 10.1.0.0/16 dev eth0",
                "ip address del 10.0.0.3/24 dev eth0",
                "ip address del 2001:db8::2/64 dev eth0",
                "ip address del 10.0.0.2/24 dev eth0",
                "ip link set eth0 down",
                "ip link set eth0 name peth0 alias \"uplink\"",
                "ip link add eth0 index 3 type bridge stp_state 0 forward_delay 0",
                "ip link set eth0 address 02:00:00:00:00:02",
                "ip link set peth0 master eth0",
                "ip link set peth0 up",
                "ip link set eth0 up",
                "ip address add 10.0.0.2/24 dev eth0",
                "ip address add 2001:db8::2/64 dev eth0",
                "ip address add 10.0.0.3/24 dev eth0",
                "ip route add 10.1.0.0/16 dev eth0",
                "ip route add 0.0.0.0/0 via 10.0.0.1 dev eth0",
                "ip route add 192.168.5.0/24 via 10.0.0.1 dev eth0",
            ]
        );
        assert_eq!(records.len(), 2 + 3 + 3);
    }

    #[test]
    fn nic_bridge_stop_puts_primaries_and_direct_routes_back_first() {
        let inst = nic_bridge(false);
        let (_, records) = planned(inst.plan_start(&nic_host(true)).unwrap());
        let state = State::new(records);
        let o = bridged(true);
        assert!(inst.is_started(&o, &state).unwrap());
        // Started: nothing to build again (the NIC's name now is the bridge's).
        assert!(matches!(inst.plan_start(&o).unwrap(), Start::Nothing(_)));
        assert_eq!(
            shown(&inst.plan_stop(&o, &state).unwrap()),
            vec![
                "ip link del eth0",
                "ip link set peth0 down",
                "ip link set peth0 name eth0 alias \"uplink\"",
                "ip link set eth0 up",
                "ip address add 10.0.0.2/24 dev eth0",
                "ip address add 2001:db8::2/64 dev eth0",
                "ip address add 10.0.0.3/24 dev eth0",
                "ip route add 10.1.0.0/16 dev eth0",
                "ip route add 0.0.0.0/0 via 10.0.0.1 dev eth0",
                "ip route add 192.168.5.0/24 via 10.0.0.1 dev eth0",
            ]
        );
    }

    /// A NIC is renamed only while down: a down NIC is not taken down first, and stays down
    /// after stop.
    #[test]
    fn a_down_nic_stays_down() {
        let inst = nic_bridge(false);
        let (steps, records) = planned(inst.plan_start(&nic_host(false)).unwrap());
        assert_eq!(
            shown(&steps[6..8]),
            vec![
                "ip link set eth0 name peth0 alias \"uplink\"",
                "ip link add eth0 index 3 type bridge stp_state 0 forward_delay 0",
            ]
        );
        let state = State::new(records);
        let stop = shown(&inst.plan_stop(&bridged(false), &state).unwrap());
        assert_eq!(
            stop[..3],
            [
                "ip link del eth0",
                "ip link set peth0 down",
                "ip link set peth0 name eth0 alias \"uplink\"",
            ]
        );
        assert!(!stop.iter().any(|s| s == "ip link set eth0 up"), "{stop:?}");
        // Interrupted right after the rename: the NIC is put back, nothing else exists.
        let o = nic_host(false);
        let mut renamed = o.clone();
        renamed.links[1].name = "peth0".into();
        renamed.addresses.clear();
        renamed.routes.retain(|r| r.oif != Some(2));
        let stop = shown(&inst.plan_stop(&renamed, &state).unwrap());
        assert_eq!(stop[0], "ip link set peth0 name eth0 alias \"uplink\"");
        assert_eq!(stop.len(), 1 + 3 + 3, "{stop:?}");
        // Before any change: nothing to do.
        assert!(inst.plan_stop(&o, &state).unwrap().is_empty());
    }

    #[test]
    fn nic_bridge_stop_refuses_attached_vifs_unless_forced() {
        let (_, records) = planned(nic_bridge(false).plan_start(&nic_host(true)).unwrap());
        let state = State::new(records);
        let mut o = bridged(true);
        let mut vif = link(9, "vif5.0", true);
        vif.master = Some(3);
        o.links.push(vif);
        assert_eq!(
            nic_bridge(false)
                .plan_stop(&o, &state)
                .unwrap_err()
                .to_string(),
            "bridge eth0 still has vifs attached (vif5.0): shut those guests down first, or stop with force=yes"
        );
        let steps = shown(&nic_bridge(true).plan_stop(&o, &state).unwrap());
        assert_eq!(steps[0], "ip link del eth0");
    }

    /// A start interrupted after any step (a crash, or a failed step: the state file is the
    /// one undo authority) is put back by restore.
    #[test]
    fn restore_after_any_prefix_of_start() {
        restores_after_any_prefix(&nic_bridge(false), &nic_host(true));
        restores_after_any_prefix(&nic_bridge(false), &nic_host(false));
    }
}
