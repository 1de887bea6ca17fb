//! network-bridge, two set-ups:
//!
//! - Over a NIC (xend's): `start [netdev=ethX] [bridge=NAME]`. A bridge takes the NIC's place:
//!   it gets the NIC's name (or `bridge=`), its MAC, its addresses and every route through it;
//!   the NIC becomes `p<name>`, a port without addresses. `bridge=null` does nothing (xend).
//! - Per-VLAN bridges on a trunk (`eth1.4` in `br4`, one bridge per VLAN): `start trunk=eth1 vlans=4,100
//!   [bridge_template=br%d]` builds `eth1.4` enslaved to `br4`, ... (no addresses, all up);
//!   with `vlan_filtering=yes [bridge=xenbr0]` one VLAN-aware bridge with the trunk as a
//!   tagged port, for libxl's `vlan` key.
//!
//! Validation happens before any change; every change is a plan step, undone on failure.

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use netlink_packet_route::address::AddressFlags;

use super::observed::{FreeIndexes, Observed, is_kernel_route, is_unicast, same_route, updown};
use super::state::{LinkId, Record, State};
use super::{Instance, Params, Script, Start};
use crate::ifname::IfName;
use crate::log;
use crate::netlink::{Address, Link, Netlink, NewLink, PortVlan, Route};
use crate::plan::{Step, route_str};
use crate::sysctl;

const DEFAULT_TEMPLATE: &str = "br%d";
/// libxl's default bridge: a VLAN-aware bridge under this name serves `vif = ['vlan=4']`.
const DEFAULT_FILTERING_BRIDGE: &str = "xenbr0";

/// `None` for `bridge=null`.
pub fn instance(nl: &mut Netlink, p: &Params) -> Result<Option<Box<dyn Instance>>> {
    if p.get("bridge") == Some("null") {
        return Ok(None);
    }
    if p.has("trunk") {
        return Ok(Some(Box::new(trunk_instance(p)?)));
    }
    for k in ["vlans", "bridge_template", "vlan_filtering"] {
        if p.has(k) {
            bail!("{k}= only goes with trunk= (per-VLAN bridges on a trunk)");
        }
    }
    let netdev = match p.netdev()? {
        Some(n) => n,
        None => match nl.default_route_link()? {
            Some(l) => IfName::new(&l.name).map_err(anyhow::Error::msg)?,
            None => bail!("no netdev= given and the host has no default route to take it from"),
        },
    };
    let bridge = p.ifname("bridge")?.unwrap_or_else(|| netdev.clone());
    let pdev = IfName::new(&format!("p{netdev}"))
        .map_err(|e| anyhow!("netdev {netdev}: the NIC's new name: {e}"))?;
    Ok(Some(Box::new(NicBridge {
        netdev,
        bridge,
        pdev,
        force: p.yes("force")?,
    })))
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// The routes that go with the NIC: unicast, through it, not derived by the kernel from an
/// address (those come back by themselves). Direct routes first: a gateway must be reachable
/// when its route is added.
pub fn movable_routes(o: &Observed, index: u32) -> Vec<Route> {
    let mut routes: Vec<Route> = o
        .routes_of(index)
        .filter(|r| is_unicast(r) && !is_kernel_route(r) && !is_v6_link_local(&r.dst))
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

/// A bridge port (or a bridge without IP) has no business with IPv6: no link-local address.
/// A new link starts with the `default` value.
fn no_ipv6_step(o: &Observed, dev: &str) -> Option<Step> {
    let default = sysctl::conf_path("ipv6", "default", "disable_ipv6");
    let old = o.sysctl(&default)?;
    (old != "1").then(|| Step::Sysctl {
        path: sysctl::conf_path("ipv6", dev, "disable_ipv6"),
        value: "1".into(),
        old: old.to_string(),
    })
}

/// A new bridge `name` (ifindex `index`, without IPv6: it carries guests' traffic, not the
/// host's) with the existing link `port` as its port.
fn bridge_with_port(
    o: &Observed,
    name: &str,
    index: u32,
    vlan_filtering: bool,
    port: u32,
    port_name: &str,
) -> Vec<Step> {
    let mut steps = vec![Step::CreateLink {
        name: name.into(),
        link: NewLink::Bridge { vlan_filtering },
        index,
    }];
    steps.extend(no_ipv6_step(o, name));
    steps.push(Step::SetMaster {
        index: port,
        name: port_name.into(),
        master: index,
        master_name: name.into(),
        old: 0,
    });
    steps
}

// ---------------------------------------------------------------------------------------------
// The bridge over a NIC

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
        addrs.sort_by_key(|a| a.flags & AddressFlags::Secondary.bits() != 0);
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
            if !o.routes_of(nindex).any(|n| same_route(n, route)) {
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
            .filter(|r| is_unicast(r) && !is_v6_link_local(&r.dst))
        {
            out.push_str(&format!("  route {}\n", route_str(r, &br.name)));
        }
        Ok(out)
    }
}

fn bridge_line(br: &Link) -> String {
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

// ---------------------------------------------------------------------------------------------
// Bridges on a VLAN trunk

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrunkMode {
    /// One 802.1q device and one bridge per VLAN.
    PerVlan,
    /// One VLAN-aware bridge; the trunk is its port, tagged member of each VLAN.
    Filtering { bridge: IfName },
}

#[derive(Clone, Debug)]
pub struct TrunkBridges {
    pub trunk: IfName,
    pub vlans: Vec<u16>,
    pub template: String,
    pub mode: TrunkMode,
    pub force: bool,
}

/// `4,100` or ranges `10-12`; every id 1..=4094, each once.
pub fn parse_vlans(list: &[&str]) -> Result<Vec<u16>> {
    let id = |s: &str| -> Result<u16> {
        s.parse::<u16>()
            .ok()
            .filter(|v| (1..=4094).contains(v) && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| anyhow!("vlans: {s:?} is not a VLAN id (1..4094)"))
    };
    let mut out: Vec<u16> = Vec::new();
    for term in list {
        let (a, b) = match term.split_once('-') {
            Some((a, b)) => (id(a)?, id(b)?),
            None => (id(term)?, id(term)?),
        };
        if a > b {
            bail!("vlans: range {term:?} runs backwards");
        }
        for v in a..=b {
            if out.contains(&v) {
                bail!("vlans: VLAN {v} is given twice");
            }
            out.push(v);
        }
    }
    if out.is_empty() {
        bail!("trunk= needs vlans= (e.g. vlans=4,100)");
    }
    Ok(out)
}

/// `br%d` → `br4`: exactly one `%d`, and the result must be an interface name.
pub fn bridge_name(template: &str, vid: u16) -> Result<IfName> {
    if template.matches("%d").count() != 1 || template.replace("%d", "").contains('%') {
        bail!("bridge_template {template:?} must contain %d exactly once (e.g. br%d)");
    }
    IfName::new(&template.replace("%d", &vid.to_string()))
        .map_err(|e| anyhow!("bridge_template {template:?} for VLAN {vid}: {e}"))
}

/// `eth1` + 4 → `eth1.4`, as vconfig and ifupdown name them.
pub fn vlan_device_name(trunk: &IfName, vid: u16) -> Result<IfName> {
    IfName::new(&format!("{trunk}.{vid}"))
        .map_err(|e| anyhow!("the VLAN {vid} device on {trunk}: {e}"))
}

fn trunk_instance(p: &Params) -> Result<TrunkBridges> {
    let trunk = p
        .ifname("trunk")?
        .ok_or_else(|| anyhow!("trunk= is empty"))?;
    if p.has("netdev") {
        bail!("netdev= and trunk= are two different set-ups: give one");
    }
    let vlans = parse_vlans(&p.all("vlans"))?;
    let filtering = p.yes("vlan_filtering")?;
    let template = p.get("bridge_template").unwrap_or(DEFAULT_TEMPLATE);
    let mode = if filtering {
        if p.has("bridge_template") {
            bail!("bridge_template= names per-VLAN bridges; with vlan_filtering=yes give bridge=");
        }
        let bridge = match p.ifname("bridge")? {
            Some(b) => b,
            None => IfName::new(DEFAULT_FILTERING_BRIDGE).map_err(anyhow::Error::msg)?,
        };
        TrunkMode::Filtering { bridge }
    } else {
        if p.has("bridge") {
            bail!(
                "bridge= names the one VLAN-aware bridge (vlan_filtering=yes); per-VLAN bridges are named by bridge_template="
            );
        }
        let mut names: Vec<IfName> = Vec::new();
        for v in &vlans {
            let b = bridge_name(template, *v)?;
            vlan_device_name(&trunk, *v)?;
            if names.contains(&b) {
                bail!("bridge_template {template:?} gives {b} twice");
            }
            names.push(b);
        }
        TrunkMode::PerVlan
    };
    Ok(TrunkBridges {
        trunk,
        vlans,
        template: template.to_string(),
        mode,
        force: p.yes("force")?,
    })
}

impl TrunkBridges {
    /// The plan for `trunk` (already validated as a usable trunk) with `indexes` for new links.
    pub fn steps_for(
        &self,
        o: &Observed,
        trunk: &Link,
        indexes: &mut FreeIndexes,
    ) -> Result<(Vec<Step>, Vec<Record>)> {
        let t = trunk.name.clone();
        let mut steps = Vec::new();
        let mut records = vec![Record::Trunk {
            link: LinkId::new(trunk.index, &self.trunk),
            up: trunk.up,
        }];
        let mut ups = Vec::new();
        match &self.mode {
            TrunkMode::PerVlan => {
                for vid in &self.vlans {
                    let vdev = vlan_device_name(&self.trunk, *vid)?;
                    let bdev = bridge_name(&self.template, *vid)?;
                    let (vname, bname) = (vdev.to_string(), bdev.to_string());
                    let (vi, bi) = (indexes.take()?, indexes.take()?);
                    steps.push(Step::CreateLink {
                        name: vname.clone(),
                        link: NewLink::Vlan {
                            lower: trunk.index,
                            id: *vid,
                        },
                        index: vi,
                    });
                    steps.extend(no_ipv6_step(o, &vname));
                    steps.extend(bridge_with_port(o, &bname, bi, false, vi, &vname));
                    records.push(Record::Vlan {
                        link: LinkId::new(vi, &vdev),
                        vid: *vid,
                        bridge: bi,
                    });
                    records.push(Record::Bridge {
                        link: LinkId::new(bi, &bdev),
                        vid: Some(*vid),
                        filtering: false,
                    });
                    ups.push((vi, vname));
                    ups.push((bi, bname));
                }
            }
            TrunkMode::Filtering { bridge } => {
                let b = bridge.to_string();
                let bi = indexes.take()?;
                steps.extend(bridge_with_port(o, &b, bi, true, trunk.index, &t));
                // A new port gets the bridge's default PVID 1 untagged; a trunk carries exactly
                // the VLANs named, tagged.
                steps.push(Step::AddPortVlans {
                    index: trunk.index,
                    name: t.clone(),
                    vlans: self
                        .vlans
                        .iter()
                        .map(|v| PortVlan {
                            vid: *v,
                            pvid: false,
                            untagged: false,
                        })
                        .collect(),
                });
                if !self.vlans.contains(&1) {
                    steps.push(Step::DelPortVlans {
                        index: trunk.index,
                        name: t.clone(),
                        vlans: vec![PortVlan {
                            vid: 1,
                            pvid: true,
                            untagged: true,
                        }],
                    });
                }
                records.push(Record::Bridge {
                    link: LinkId::new(bi, bridge),
                    vid: None,
                    filtering: true,
                });
                ups.push((bi, b));
            }
        }
        if !trunk.up {
            steps.push(Step::SetUp {
                index: trunk.index,
                name: t,
                up: true,
            });
        }
        for (index, name) in ups {
            steps.push(Step::SetUp {
                index,
                name,
                up: true,
            });
        }
        Ok((steps, records))
    }

    fn names(&self) -> Result<Vec<IfName>> {
        match &self.mode {
            TrunkMode::Filtering { bridge } => Ok(vec![bridge.clone()]),
            TrunkMode::PerVlan => {
                let mut v = Vec::new();
                for vid in &self.vlans {
                    v.push(vlan_device_name(&self.trunk, *vid)?);
                    v.push(bridge_name(&self.template, *vid)?);
                }
                Ok(v)
            }
        }
    }
}

impl Instance for TrunkBridges {
    fn script(&self) -> Script {
        Script::Bridge
    }

    fn key(&self) -> String {
        format!("trunk:{}", self.trunk)
    }

    fn params(&self) -> Vec<(String, String)> {
        let vlans: Vec<String> = self.vlans.iter().map(u16::to_string).collect();
        let mut v = vec![
            ("trunk".into(), self.trunk.to_string()),
            ("vlans".into(), vlans.join(",")),
        ];
        match &self.mode {
            TrunkMode::PerVlan => v.push(("bridge_template".into(), self.template.clone())),
            TrunkMode::Filtering { bridge } => {
                v.push(("vlan_filtering".into(), "yes".into()));
                v.push(("bridge".into(), bridge.to_string()));
            }
        }
        v
    }

    fn plan_start(&self, o: &Observed) -> Result<Start> {
        let t = &self.trunk;
        let Some(trunk) = o.link(t.as_str()) else {
            bail!("trunk {t} does not exist");
        };
        if trunk.is_bridge() {
            bail!("trunk {t} is a bridge: name the NIC that carries the VLANs");
        }
        if let Some(m) = trunk.master {
            bail!("trunk {t} is a port of bridge {}", o.name_of(m));
        }
        for name in self.names()? {
            if let Some(l) = o.link(name.as_str()) {
                let hint = if l.is_bridge() {
                    " (for bridges the distro builds, use network-prebuilt to check them)"
                } else {
                    ""
                };
                bail!("{name} already exists and is not ours{hint}");
            }
        }
        if self.mode == TrunkMode::PerVlan {
            for vid in &self.vlans {
                if let Some(l) = o
                    .links
                    .iter()
                    .find(|l| l.lower == Some(trunk.index) && l.vlan_id == Some(*vid))
                {
                    bail!("{t} already has a device for VLAN {vid}: {}", l.name);
                }
            }
        } else {
            let addrs: Vec<String> = o
                .addresses_of(trunk.index)
                .filter(|a| !a.is_ipv6_link_local())
                .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                .collect();
            if !addrs.is_empty() {
                bail!(
                    "trunk {t} has addresses ({}) and would become a bridge port, which carries none",
                    addrs.join(" ")
                );
            }
        }
        let (steps, records) = self.steps_for(o, trunk, &mut o.free_indexes())?;
        Ok(Start::Steps { steps, records })
    }

    fn is_started(&self, o: &Observed, state: &State) -> Result<bool> {
        for r in &state.records {
            let there = match r {
                Record::Bridge { link, .. } => o.recorded(link).is_some(),
                Record::Vlan { link, bridge, .. } => {
                    o.recorded(link).and_then(|l| l.master) == Some(*bridge)
                }
                _ => true,
            };
            if !there {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn plan_stop(&self, o: &Observed, state: &State) -> Result<Vec<Step>> {
        let (trunk, trunk_up) = state
            .records
            .iter()
            .find_map(|r| match r {
                Record::Trunk { link, up } => Some((link, *up)),
                _ => None,
            })
            .ok_or_else(|| anyhow!("state has no \"trunk\" record"))?;
        let tindex = trunk.index;
        let vlan_devs: Vec<&LinkId> = state
            .records
            .iter()
            .filter_map(|r| match r {
                Record::Vlan { link, .. } => Some(link),
                _ => None,
            })
            .collect();
        let mut steps = Vec::new();
        let mut busy = Vec::new();
        for r in &state.records {
            let Record::Bridge { link, .. } = r else {
                continue;
            };
            if let Some(br) = o.recorded(link).filter(|l| l.is_bridge()) {
                let mut own: Vec<u32> = vlan_devs.iter().map(|l| l.index).collect();
                own.push(tindex);
                let others = o.ports(br.index, &own);
                if !others.is_empty() {
                    busy.push(format!("{} ({})", br.name, others.join(", ")));
                }
                steps.push(Step::DeleteLink {
                    index: br.index,
                    name: br.name.clone(),
                });
            }
        }
        if !busy.is_empty() && !self.force {
            bail!(
                "vifs are still attached to {}: shut those guests down first, or stop with force=yes",
                busy.join(", ")
            );
        }
        for link in vlan_devs {
            if let Some(l) = o.recorded(link) {
                steps.push(Step::DeleteLink {
                    index: l.index,
                    name: l.name.clone(),
                });
            }
        }
        if let Some(t) = o.recorded(trunk) {
            if t.up && !trunk_up {
                steps.push(Step::SetUp {
                    index: t.index,
                    name: t.name.clone(),
                    up: false,
                });
            }
        }
        Ok(steps)
    }

    fn vlan_ports(&self) -> Vec<&IfName> {
        match self.mode {
            TrunkMode::Filtering { .. } => vec![&self.trunk],
            TrunkMode::PerVlan => Vec::new(),
        }
    }

    fn status(&self, o: &Observed, _: Option<&State>) -> Result<String> {
        let links = &o.links;
        let find = |n: &IfName| links.iter().find(|l| l.name == n.as_str());
        let mut out = match find(&self.trunk) {
            Some(t) => format!("trunk {}: {}\n", t.name, updown(t)),
            None => format!("trunk {}: missing\n", self.trunk),
        };
        let show_ports = |out: &mut String, br: &Link| {
            for p in links.iter().filter(|l| l.master == Some(br.index)) {
                out.push_str(&format!("  port {} {}\n", p.name, updown(p)));
            }
        };
        match &self.mode {
            TrunkMode::Filtering { bridge } => match find(bridge) {
                Some(br) => {
                    out.push_str(&bridge_line(br));
                    show_ports(&mut out, br);
                    if let Some(t) = find(&self.trunk).filter(|t| t.master == Some(br.index)) {
                        let v: Vec<String> = o
                            .port_vlans
                            .get(&t.index)
                            .into_iter()
                            .flatten()
                            .map(|v| v.vid.to_string())
                            .collect();
                        out.push_str(&format!("  trunk VLANs: {}\n", v.join(",")));
                    }
                }
                None => out.push_str(&format!("bridge {bridge}: missing\n")),
            },
            TrunkMode::PerVlan => {
                for vid in &self.vlans {
                    let vname = vlan_device_name(&self.trunk, *vid)?;
                    let bname = bridge_name(&self.template, *vid)?;
                    out.push_str(&format!(
                        "VLAN {vid}: {} {}\n",
                        vname,
                        find(&vname).map_or("missing", updown)
                    ));
                    match find(&bname) {
                        Some(br) => {
                            out.push_str(&bridge_line(br));
                            show_ports(&mut out, br);
                        }
                        None => out.push_str(&format!("bridge {bname}: missing\n")),
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::observed::fixture::*;
    use super::*;
    use netlink_packet_core::Emitable;

    #[test]
    fn vlan_lists() {
        assert_eq!(parse_vlans(&["4", "100"]).unwrap(), vec![4, 100]);
        assert_eq!(parse_vlans(&["10-12", "4"]).unwrap(), vec![10, 11, 12, 4]);
        for bad in [
            vec!["0"],
            vec!["4095"],
            vec!["4", "4"],
            vec!["3-1"],
            vec!["x"],
            vec!["+4"],
            vec!["1-2-3"],
            vec![],
        ] {
            assert!(parse_vlans(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_from_templates() {
        assert_eq!(bridge_name("br%d", 4).unwrap().as_str(), "br4");
        assert_eq!(
            bridge_name("vlan%d-br", 100).unwrap().as_str(),
            "vlan100-br"
        );
        for bad in ["br", "br%d%d", "br%s%d", "very-long-name%d"] {
            assert!(bridge_name(bad, 4000).is_err(), "{bad}");
        }
        let t = IfName::new("eth1").unwrap();
        assert_eq!(vlan_device_name(&t, 4).unwrap().as_str(), "eth1.4");
        let long = IfName::new("enp0s31f6abcd").unwrap();
        assert!(vlan_device_name(&long, 4000).is_err());
    }

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

    fn trunk(mode: TrunkMode, vlans: Vec<u16>) -> TrunkBridges {
        TrunkBridges {
            trunk: IfName::new("eth1").unwrap(),
            vlans,
            template: "br%d".into(),
            mode,
            force: false,
        }
    }

    fn filtering(vlans: Vec<u16>) -> TrunkBridges {
        trunk(
            TrunkMode::Filtering {
                bridge: IfName::new("xenbr0").unwrap(),
            },
            vlans,
        )
    }

    const NO_IPV6: &str = "/proc/sys/net/ipv6/conf/default/disable_ipv6";

    /// eth1 (index 3, down) and a link at index 10, on a host with IPv6.
    fn trunk_host() -> Observed {
        with_sysctls(
            host(vec![
                link(1, "lo", true),
                link(3, "eth1", false),
                link(10, "eth9", true),
            ]),
            &[(NO_IPV6, "0")],
        )
    }

    fn planned(start: Start) -> (Vec<Step>, Vec<Record>) {
        match start {
            Start::Steps { steps, records } => (steps, records),
            Start::Nothing(why) => panic!("nothing to do: {why}"),
        }
    }

    #[test]
    fn per_vlan_plan() {
        let t = trunk(TrunkMode::PerVlan, vec![4, 100]);
        let (steps, records) = planned(t.plan_start(&trunk_host()).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "ip link add eth1.4 index 11 type vlan id 4",
                "echo 1 > /proc/sys/net/ipv6/conf/eth1.4/disable_ipv6",
                "ip link add br4 index 12 type bridge stp_state 0 forward_delay 0",
                "echo 1 > /proc/sys/net/ipv6/conf/br4/disable_ipv6",
                "ip link set eth1.4 master br4",
                "ip link add eth1.100 index 13 type vlan id 100",
                "echo 1 > /proc/sys/net/ipv6/conf/eth1.100/disable_ipv6",
                "ip link add br100 index 14 type bridge stp_state 0 forward_delay 0",
                "echo 1 > /proc/sys/net/ipv6/conf/br100/disable_ipv6",
                "ip link set eth1.100 master br100",
                "ip link set eth1 up",
                "ip link set eth1.4 up",
                "ip link set br4 up",
                "ip link set eth1.100 up",
                "ip link set br100 up",
            ]
        );
        assert!(steps.contains(&Step::CreateLink {
            name: "eth1.4".into(),
            link: NewLink::Vlan { lower: 3, id: 4 },
            index: 11
        }));
        assert_eq!(records.len(), 5);
        assert!(matches!(records[0], Record::Trunk { up: false, .. }));
        assert!(matches!(
            records[1],
            Record::Vlan {
                vid: 4,
                bridge: 12,
                ..
            }
        ));
        assert!(matches!(records[4], Record::Bridge { vid: Some(100), .. }));
    }

    /// A new port is an untagged member of VLAN 1 with PVID 1: a trunk carries exactly the
    /// VLANs named, tagged, so VLAN 1 goes unless it is one of them.
    #[test]
    fn filtering_plan_and_vlan_1() {
        let mut o = trunk_host();
        o.links[1].up = true;
        let (steps, _) = planned(filtering(vec![4, 100]).plan_start(&o).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "ip link add xenbr0 index 11 type bridge stp_state 0 forward_delay 0 vlan_filtering 1",
                "echo 1 > /proc/sys/net/ipv6/conf/xenbr0/disable_ipv6",
                "ip link set eth1 master xenbr0",
                "bridge vlan add dev eth1 vid 4, 100",
                "bridge vlan del dev eth1 vid 1 pvid untagged",
                "ip link set xenbr0 up",
            ]
        );
        // VLAN 1 named: it stays (now tagged), and no IPv6 to turn off on a host without it.
        o.sysctls.clear();
        let (steps, _) = planned(filtering(vec![1, 4]).plan_start(&o).unwrap());
        assert_eq!(
            shown(&steps),
            vec![
                "ip link add xenbr0 index 11 type bridge stp_state 0 forward_delay 0 vlan_filtering 1",
                "ip link set eth1 master xenbr0",
                "bridge vlan add dev eth1 vid 1, 4",
                "ip link set xenbr0 up",
            ]
        );
    }

    #[test]
    fn trunk_stop_and_attached_vifs() {
        let t = trunk(TrunkMode::PerVlan, vec![4]);
        let (_, records) = planned(t.plan_start(&trunk_host()).unwrap());
        let state = State::new(records);
        let mut o = trunk_host();
        o.links.extend([
            link(11, "eth1.4", true),
            bridge(12, "br4", true),
            link(20, "vif5.0", true),
        ]);
        o.links[1].up = true;
        o.links[3].master = Some(12);
        assert!(t.is_started(&o, &state).unwrap());
        // The start brought the trunk up, so stop takes it down; the VLAN device goes after
        // its bridge.
        assert_eq!(
            shown(&t.plan_stop(&o, &state).unwrap()),
            vec![
                "ip link del br4",
                "ip link del eth1.4",
                "ip link set eth1 down"
            ]
        );
        o.links[5].master = Some(12);
        let e = t.plan_stop(&o, &state).unwrap_err().to_string();
        assert_eq!(
            e,
            "vifs are still attached to br4 (vif5.0): shut those guests down first, or stop with force=yes"
        );
        let forced = TrunkBridges { force: true, ..t };
        assert_eq!(forced.plan_stop(&o, &state).unwrap().len(), 3);
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
        kernel.protocol = u8::from(netlink_packet_route::route::RouteProtocol::Kernel);
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

    /// Walk netlink attributes (type, payload) in `buf`.
    fn attrs(mut buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
            let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
            out.push((kind, buf[4..len].to_vec()));
            buf = &buf[((len + 3) & !3).min(buf.len())..];
        }
        out
    }

    fn find(a: &[(u16, Vec<u8>)], kind: u16) -> Vec<u8> {
        a.iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("attribute {kind} missing"))
    }

    // From linux/if_link.h.
    const IFLA_IFNAME: u16 = 3;
    const IFLA_LINK: u16 = 5;
    const IFLA_LINKINFO: u16 = 18;
    const IFLA_INFO_KIND: u16 = 1;
    const IFLA_INFO_DATA: u16 = 2;
    const IFLA_VLAN_ID: u16 = 1;
    const IFLA_BR_FORWARD_DELAY: u16 = 1;
    const IFLA_BR_STP_STATE: u16 = 5;
    const IFLA_BR_VLAN_FILTERING: u16 = 7;
    /// struct ifinfomsg: family, pad, type, index, flags, change.
    const IFINFOMSG_LEN: usize = 16;

    fn wire(name: &str, new: &NewLink, index: u32) -> (i32, Vec<(u16, Vec<u8>)>) {
        let m = crate::netlink::new_link_message(name, new, index);
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        let ifindex = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        (ifindex, attrs(&buf[IFINFOMSG_LEN..]))
    }

    #[test]
    fn vlan_newlink_message_on_the_wire() {
        let (ifindex, a) = wire("eth1.4", &NewLink::Vlan { lower: 3, id: 4 }, 11);
        assert_eq!(ifindex, 11);
        assert_eq!(find(&a, IFLA_IFNAME), b"eth1.4\0");
        assert_eq!(find(&a, IFLA_LINK), 3u32.to_ne_bytes());
        let info = attrs(&find(&a, IFLA_LINKINFO));
        assert_eq!(find(&info, IFLA_INFO_KIND), b"vlan\0");
        let data = attrs(&find(&info, IFLA_INFO_DATA));
        assert_eq!(find(&data, IFLA_VLAN_ID), 4u16.to_ne_bytes());
    }

    #[test]
    fn bridge_newlink_message_on_the_wire() {
        for filtering in [false, true] {
            let (ifindex, a) = wire(
                "xenbr0",
                &NewLink::Bridge {
                    vlan_filtering: filtering,
                },
                0,
            );
            assert_eq!(ifindex, 0);
            let info = attrs(&find(&a, IFLA_LINKINFO));
            assert_eq!(find(&info, IFLA_INFO_KIND), b"bridge\0");
            let data = attrs(&find(&info, IFLA_INFO_DATA));
            assert_eq!(find(&data, IFLA_BR_STP_STATE), 0u32.to_ne_bytes());
            assert_eq!(find(&data, IFLA_BR_FORWARD_DELAY), 0u32.to_ne_bytes());
            // Sent only to turn filtering on: kernels without it refuse even "off".
            let vf = data.iter().find(|(k, _)| *k == IFLA_BR_VLAN_FILTERING);
            assert_eq!(vf.map(|(_, v)| v.clone()), filtering.then(|| vec![1u8]));
        }
        let (_, a) = wire("dummy0", &NewLink::Dummy, 0);
        let info = attrs(&find(&a, IFLA_LINKINFO));
        assert_eq!(find(&info, IFLA_INFO_KIND), b"dummy\0");
    }
}
