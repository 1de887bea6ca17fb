//! network-bridge on a VLAN trunk: per-VLAN bridges (`start trunk=eth1 vlans=4,100
//! [bridge_template=br%d]` builds `eth1.4` enslaved to `br4`, ..., no addresses, all up), or with
//! `vlan_filtering=yes [bridge=xenbr0]` one VLAN-aware bridge with the trunk as a tagged port,
//! for libxl's `vlan` key.

use anyhow::{Result, anyhow, bail};

use super::observed::{FreeIndexes, Observed, bridge_line, updown};
use super::state::{LinkId, Record, State};
use super::{Instance, Params, Script, Start};
use crate::ifname::IfName;
use crate::netlink::{Link, NewLink, PortVlan};
use crate::plan::Step;
use crate::sysctl;

const DEFAULT_TEMPLATE: &str = "br%d";
/// libxl's default bridge: a VLAN-aware bridge under this name serves `vif = ['vlan=4']`.
const DEFAULT_FILTERING_BRIDGE: &str = "xenbr0";

/// A bridge port (or a bridge without IP) has no business with IPv6: no link-local address.
/// A new link starts with the `default` value.
fn no_ipv6_step(o: &Observed, dev: &str) -> Option<Step> {
    let default = sysctl::conf_path("ipv6", "default", "disable_ipv6");
    Step::sysctl_change(
        sysctl::conf_path("ipv6", dev, "disable_ipv6"),
        "1",
        o.sysctl(&default)?,
    )
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
        crate::vlanspec::parse_vid(s)
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

pub fn instance(p: &Params) -> Result<TrunkBridges> {
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

    #[test]
    fn restore_after_any_prefix_of_start() {
        let o = trunk_host();
        restores_after_any_prefix(&trunk(TrunkMode::PerVlan, vec![4, 100]), &o);
        restores_after_any_prefix(&filtering(vec![4, 100]), &o);
        let mut up = o.clone();
        up.links[1].up = true;
        restores_after_any_prefix(&filtering(vec![1, 4]), &up);
    }
}
