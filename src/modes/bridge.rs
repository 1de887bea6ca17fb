//! Bridge mode (vif-bridge): the vif becomes a port of the guest's bridge. `observe` reads the
//! kernel into [`Observed`]; `plan_online` and `plan_offline` are pure (golden tests below).

use anyhow::{Result, bail};

use super::{Vif, filter, observe_vif};
use crate::invocation::Hotplug;
use crate::netlink::{Link, Netlink, PortVlan};
use crate::plan::Step;

/// The numerically largest non-broadcast MAC: the bridge never adopts it as its own address.
pub const PORT_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// The links the bridge to attach to is chosen from.
#[derive(Clone, Debug, Default)]
pub struct BridgeCandidates {
    /// When a bridge is named: the link of that name, and, when there is none and the name is
    /// `xenbrN`, the link `ethN`.
    pub named: Option<Link>,
    pub fallback: Option<Link>,
    /// When none is named: every bridge of the host.
    pub bridges: Vec<Link>,
}

/// Read the links `resolve` chooses from.
pub fn observe_bridge(nl: &mut Netlink, hp: &Hotplug) -> Result<BridgeCandidates> {
    let mut c = BridgeCandidates::default();
    let Some(name) = &hp.bridge else {
        c.bridges = nl.links()?.into_iter().filter(Link::is_bridge).collect();
        return Ok(c);
    };
    c.named = nl.link_by_name(name.as_str())?;
    if c.named.is_none() {
        if let Some(n) = name.as_str().strip_prefix("xenbr") {
            c.fallback = nl.link_by_name(&format!("eth{n}"))?;
        }
    }
    Ok(c)
}

/// The bridge to attach to: the one named (`xenbrN` falls back to a bridge `ethN`, as xend's
/// network-bridge named them), else the host's only bridge. Pure.
pub fn resolve(c: &BridgeCandidates, hp: &Hotplug) -> Result<Link> {
    let Some(name) = &hp.bridge else {
        return match c.bridges.as_slice() {
            [] => bail!("no bridge given (xenstore bridge or bridge=) and the host has none"),
            [one] => Ok(one.clone()),
            many => bail!(
                "no bridge given (xenstore bridge or bridge=) and the host has several: {}",
                many.iter()
                    .map(|b| b.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
    };
    match &c.named {
        Some(l) if l.is_bridge() => Ok(l.clone()),
        Some(l) => bail!(
            "{name} is not a bridge (it is a {} link)",
            l.kind.as_deref().unwrap_or("plain")
        ),
        None => match &c.fallback {
            Some(l) if l.is_bridge() => Ok(l.clone()),
            _ => bail!("bridge {name} does not exist"),
        },
    }
}

/// What bridge mode reads: the vif, the bridge candidates, and the port's VLANs when it is a
/// port of the bridge already and online asks for VLANs.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub vif: Vif,
    pub bridge: BridgeCandidates,
    pub port_vlans: Vec<PortVlan>,
}

/// Offline reads the bridge candidates too, only for the hooks' `bridge` (the stock script
/// resolves it for every command); one that cannot be read leaves the caller's bridge there.
pub fn observe(nl: &mut Netlink, hp: &Hotplug) -> Result<Observed> {
    let vif = observe_vif(nl, hp)?;
    let mut o = Observed {
        bridge: if hp.command.is_up() {
            observe_bridge(nl, hp)?
        } else {
            observe_bridge(nl, hp).unwrap_or_default()
        },
        ..Default::default()
    };
    if let (true, Some(l), Ok(b), Some(_)) = (
        hp.command.is_up(),
        vif.device(hp),
        resolve(&o.bridge, hp),
        &hp.vlan,
    ) {
        if l.master == Some(b.index) {
            o.port_vlans = nl.port_vlans(l.index)?;
        }
    }
    o.vif = vif;
    Ok(o)
}

impl Observed {
    /// The bridge's name as the stock script has it: the one resolved, else (none resolves,
    /// e.g. it is gone at offline) the one the caller named.
    pub fn bridge_name(&self, hp: &Hotplug) -> Option<String> {
        match resolve(&self.bridge, hp) {
            Ok(b) => Some(b.name),
            Err(_) => hp.bridge.as_ref().map(ToString::to_string),
        }
    }
}

/// The port's VLAN changes: from `current` to exactly `wanted`.
pub fn vlan_steps(link: &Link, current: &[PortVlan], wanted: &[PortVlan]) -> Vec<Step> {
    let del: Vec<PortVlan> = current
        .iter()
        .filter(|c| !wanted.iter().any(|w| w.vid == c.vid))
        .copied()
        .collect();
    let add: Vec<PortVlan> = wanted
        .iter()
        .filter(|w| !current.contains(w))
        .copied()
        .collect();
    let mut steps = Vec::new();
    // Add first: a port briefly with two PVIDs is impossible (the kernel moves it), and one
    // with none would drop untagged frames.
    if !add.is_empty() {
        steps.push(Step::AddPortVlans {
            index: link.index,
            name: link.name.clone(),
            vlans: add,
        });
    }
    if !del.is_empty() {
        steps.push(Step::DelPortVlans {
            index: link.index,
            name: link.name.clone(),
            vlans: del,
        });
    }
    steps
}

/// What a vif needs before it joins a switch (a Linux bridge or Open vSwitch): its name, the
/// port MAC, no addresses, the MTU `mtu`. Returns the steps and whether they take the link
/// down, so the caller brings it up again. Pure.
pub fn prepare_port(vif: &Vif, hp: &Hotplug, link: &Link, mtu: u32) -> Result<(Vec<Step>, bool)> {
    let set_mac = link.mac != PORT_MAC;
    // Changing a netback device's MAC needs the link down (as renaming does); otherwise a
    // second online leaves a working port alone.
    let (mut steps, needs_down) = vif.down_and_rename(hp, link, set_mac)?;
    // The filter first, while the port is down and before it joins the bridge (or switch).
    steps.extend(filter::plan_online(&vif.filter, hp, link));
    let name = hp.wanted_name.to_string();
    if set_mac {
        steps.push(Step::SetMac {
            index: link.index,
            name: name.clone(),
            mac: PORT_MAC.to_vec(),
            old: link.mac.clone(),
            best_effort: true,
        });
    }
    // A bridge port carries no addresses (the kernel's IPv6 link-local ones come and go with it).
    for addr in &vif.addresses {
        if !addr.is_ipv6_link_local() {
            steps.push(Step::DelAddress {
                name: name.clone(),
                addr: addr.clone(),
            });
        }
    }
    if link.mtu != mtu {
        steps.push(Step::SetMtu {
            index: link.index,
            name,
            mtu,
            old: link.mtu,
        });
    }
    Ok((steps, needs_down))
}

pub fn online(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_online(&observe(nl, hp)?, hp)
}

pub fn offline(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_offline(&observe(nl, hp)?, hp)
}

/// online: the port prepared (name, MAC, filter, no addresses, MTU), then it joins the bridge
/// with its VLANs, comes up, and the guest is told its MTU. Pure.
pub fn plan_online(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = o.vif.require(hp)?;
    let bridge = resolve(&o.bridge, hp)?;
    if bridge.index == link.index {
        bail!("{} cannot be a port of itself", bridge.name);
    }
    if hp.vlan.is_some() && bridge.vlan_filtering != Some(true) {
        bail!(
            "vlan is set but bridge {} does not filter VLANs (xen-vif never switches filtering on for a bridge it did not build)",
            bridge.name
        );
    }
    let mtu = hp.mtu.unwrap_or(bridge.mtu);
    let (mut steps, needs_down) = prepare_port(&o.vif, hp, link, mtu)?;
    let name = hp.wanted_name.to_string();
    let enslaved = link.master == Some(bridge.index);
    if !enslaved {
        steps.push(Step::SetMaster {
            index: link.index,
            name: name.clone(),
            master: bridge.index,
            master_name: bridge.name.clone(),
            old: link.master.unwrap_or(0),
        });
    }
    if let Some(wanted) = &hp.vlan {
        let current = if enslaved {
            o.port_vlans.clone()
        } else {
            // What the kernel gives a new port: the bridge's default PVID, untagged.
            bridge
                .default_pvid
                .filter(|v| *v != 0)
                .map(|vid| {
                    vec![PortVlan {
                        vid,
                        pvid: true,
                        untagged: true,
                    }]
                })
                .unwrap_or_default()
        };
        let mut named = link.clone();
        named.name = name.clone();
        steps.extend(vlan_steps(&named, &current, wanted));
    }
    if !link.up || needs_down {
        steps.push(Step::SetUp {
            index: link.index,
            name: name.clone(),
            up: true,
        });
    }
    steps.extend(super::frontend_mtu_step(hp, mtu));
    Ok(steps)
}

/// offline: down, out of the bridge, then the filter. Pure.
pub fn plan_offline(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let Some(link) = o.vif.device(hp) else {
        return Ok(filter::plan_offline(&o.vif.filter, hp, None));
    };
    let mut steps = Vec::new();
    if link.up {
        steps.push(Step::SetUp {
            index: link.index,
            name: link.name.clone(),
            up: false,
        });
    }
    if let Some(m) = link.master {
        steps.push(Step::SetMaster {
            index: link.index,
            name: link.name.clone(),
            master: 0,
            master_name: String::new(),
            old: m,
        });
    }
    // The filter goes last, once the guest can no longer send anywhere.
    steps.extend(filter::plan_offline(&o.vif.filter, hp, Some(link)));
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::addr::parse_guest_addrs;
    use crate::invocation::{Command, Mode};
    use crate::modes::fixture::{addr, error, hp, name, netback, text, vif};
    use crate::nftables::ChainState;

    fn bridge(index: u32, name: &str, mtu: u32) -> Link {
        Link {
            index,
            name: name.into(),
            mtu,
            up: true,
            kind: Some("bridge".into()),
            ..Default::default()
        }
    }

    fn online(bridge_name: Option<&str>) -> Hotplug {
        let mut h = hp(Mode::Bridge, Command::Online);
        h.bridge = bridge_name.map(name);
        h
    }

    /// `link` to be attached to the bridge `xenbr0` (index 3, MTU 9000), named.
    fn observed(link: Link) -> Observed {
        Observed {
            vif: vif(link),
            bridge: BridgeCandidates {
                named: Some(bridge(3, "xenbr0", 9000)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn vlans(v: &[(u16, bool)]) -> Vec<PortVlan> {
        v.iter()
            .map(|&(vid, pvid)| PortVlan {
                vid,
                pvid,
                untagged: pvid,
            })
            .collect()
    }

    #[test]
    fn golden_online_of_a_fresh_netback_device() {
        let mut h = online(Some("xenbr0"));
        h.wanted_name = name("web0");
        h.antispoof = true;
        h.mac = Some([0x00, 0x16, 0x3e, 0, 0, 5]);
        h.ip = parse_guest_addrs("10.0.0.5").unwrap();
        let mut o = observed(netback(true));
        o.vif.filter.sysctls = BTreeMap::from([("accept_ra", "1".into())]);
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            [
                "ip link set vif5.0 down",
                "ip link set vif5.0 name web0 alias \"xen-vif vif5.0\"",
                "ip link property add dev web0 altname vif5.0",
                "nft add table netdev xen-vif-vif5.0 with chain vif5.0 on web0 (18 rules)",
                "echo 0 > /proc/sys/net/ipv6/conf/web0/accept_ra",
                "ip link set web0 address fe:ff:ff:ff:ff:ff",
                "ip link set web0 mtu 9000",
                "ip link set web0 master xenbr0",
                "ip link set web0 up",
                "xenstore-write /local/domain/5/device/vif/0/mtu 9000",
            ]
        );
    }

    #[test]
    fn a_second_online_changes_nothing() {
        let mut h = online(Some("xenbr0"));
        h.wanted_name = name("web0");
        h.antispoof = true;
        h.mac = Some([0x00, 0x16, 0x3e, 0, 0, 5]);
        let want = filter::ruleset("vif5.0", "web0", h.mac, &h.ip).unwrap();
        let mut link = netback(true);
        link.name = "web0".into();
        link.alias = Some("xen-vif vif5.0".into());
        link.alt_names = vec!["vif5.0".into()];
        link.mac = PORT_MAC.to_vec();
        link.mtu = 9000;
        link.master = Some(3);
        let mut o = observed(link.clone());
        o.vif.at_wanted_name = Some(link);
        o.vif.addresses = vec![addr(7, "fe80::fcff:ffff:feff:ffff", 64)];
        o.vif.filter.table = true;
        o.vif.filter.chain = Some(ChainState {
            devices: vec!["web0".into()],
            comment: Some(filter::fingerprint(&want)),
            rules: Some(want.rules.len()),
        });
        o.vif.filter.sysctls = BTreeMap::from([("accept_ra", "0".into())]);
        // Only the frontend's MTU is written again (it is no kernel state).
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            ["xenstore-write /local/domain/5/device/vif/0/mtu 9000"]
        );
    }

    #[test]
    fn a_mac_change_takes_the_link_down_and_addresses_go_but_link_local_ones() {
        let mut link = netback(true);
        link.mtu = 9000;
        link.master = Some(3);
        let mut o = observed(link);
        o.vif.addresses = vec![
            addr(7, "192.0.2.7", 24),
            addr(7, "fe80::1", 64),
            addr(7, "2001:db8::7", 64),
        ];
        assert_eq!(
            text(&plan_online(&o, &online(Some("xenbr0"))).unwrap()),
            [
                "ip link set vif5.0 down",
                "ip link set vif5.0 address fe:ff:ff:ff:ff:ff",
                "ip address del 192.0.2.7/24 dev vif5.0",
                "ip address del 2001:db8::7/64 dev vif5.0",
                "ip link set vif5.0 up",
                "xenstore-write /local/domain/5/device/vif/0/mtu 9000",
            ]
        );
    }

    #[test]
    fn vlans_are_added_before_others_are_deleted() {
        let mut h = online(Some("xenbr0"));
        h.vlan = Some(vlans(&[(10, true), (20, false)]));
        h.mtu = Some(1500);
        let mut link = netback(false);
        link.mac = PORT_MAC.to_vec();
        link.master = Some(3);
        let mut o = observed(link);
        o.bridge.named.as_mut().unwrap().vlan_filtering = Some(true);
        o.port_vlans = vlans(&[(1, true), (20, false)]);
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            [
                "bridge vlan add dev vif5.0 vid 10 pvid untagged",
                "bridge vlan del dev vif5.0 vid 1 pvid untagged",
                "ip link set vif5.0 up",
                "xenstore-write /local/domain/5/device/vif/0/mtu 1500",
            ]
        );
        // A new port starts from the bridge's default PVID.
        let mut link = netback(false);
        link.mac = PORT_MAC.to_vec();
        let mut o = observed(link);
        let br = o.bridge.named.as_mut().unwrap();
        br.vlan_filtering = Some(true);
        br.default_pvid = Some(1);
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            [
                "ip link set vif5.0 master xenbr0",
                "bridge vlan add dev vif5.0 vid 10 pvid untagged, 20",
                "bridge vlan del dev vif5.0 vid 1 pvid untagged",
                "ip link set vif5.0 up",
                "xenstore-write /local/domain/5/device/vif/0/mtu 1500",
            ]
        );
    }

    #[test]
    fn which_bridge() {
        let plain = |index, name: &str| Link {
            index,
            name: name.into(),
            ..Default::default()
        };
        let with = |c: BridgeCandidates, br: Option<&str>| {
            let o = Observed {
                vif: vif(netback(false)),
                bridge: c,
                ..Default::default()
            };
            plan_online(&o, &online(br))
        };
        assert_eq!(
            error(with(BridgeCandidates::default(), None)),
            "no bridge given (xenstore bridge or bridge=) and the host has none"
        );
        let two = BridgeCandidates {
            bridges: vec![bridge(3, "xenbr0", 1500), bridge(4, "xenbr1", 1500)],
            ..Default::default()
        };
        assert_eq!(
            error(with(two, None)),
            "no bridge given (xenstore bridge or bridge=) and the host has several: xenbr0, xenbr1"
        );
        let one = BridgeCandidates {
            bridges: vec![bridge(4, "xenbr1", 1500)],
            ..Default::default()
        };
        assert!(
            text(&with(one, None).unwrap()).contains(&"ip link set vif5.0 master xenbr1".into())
        );
        let mut dummy = plain(3, "xenbr0");
        dummy.kind = Some("dummy".into());
        let not_a_bridge = BridgeCandidates {
            named: Some(dummy),
            ..Default::default()
        };
        assert_eq!(
            error(with(not_a_bridge, Some("xenbr0"))),
            "xenbr0 is not a bridge (it is a dummy link)"
        );
        let eth0 = BridgeCandidates {
            fallback: Some(bridge(2, "eth0", 1500)),
            ..Default::default()
        };
        assert!(
            text(&with(eth0, Some("xenbr0")).unwrap())
                .contains(&"ip link set vif5.0 master eth0".into())
        );
        let eth0_a_nic = BridgeCandidates {
            fallback: Some(plain(2, "eth0")),
            ..Default::default()
        };
        assert_eq!(
            error(with(eth0_a_nic, Some("xenbr0"))),
            "bridge xenbr0 does not exist"
        );
        let itself = BridgeCandidates {
            named: Some(bridge(7, "vif5.0", 1500)),
            ..Default::default()
        };
        assert_eq!(
            error(with(itself, Some("vif5.0"))),
            "vif5.0 cannot be a port of itself"
        );
        let mut h = online(Some("xenbr0"));
        h.vlan = Some(vlans(&[(10, true)]));
        assert_eq!(
            error(plan_online(&observed(netback(false)), &h)),
            "vlan is set but bridge xenbr0 does not filter VLANs (xen-vif never switches filtering on for a bridge it did not build)"
        );
    }

    #[test]
    fn whose_device() {
        let h = online(Some("xenbr0"));
        let gone = Observed::default();
        assert_eq!(
            error(plan_online(&gone, &h)),
            "device vif5.0 does not exist"
        );
        let mut other = netback(false);
        other.parent_dev = Some("vif-6-0".into());
        assert_eq!(
            error(plan_online(&observed(other), &h)),
            "device vif5.0 is another backend's: vif5.0 belongs to the xen-backend device vif-6-0"
        );
        let mut renamed = online(Some("xenbr0"));
        renamed.wanted_name = name("web0");
        let mut o = observed(netback(false));
        o.vif.at_wanted_name = Some(Link {
            index: 9,
            name: "web0".into(),
            ..Default::default()
        });
        assert_eq!(
            error(plan_online(&o, &renamed)),
            "cannot rename vif5.0 to web0: another link already has that name"
        );
    }

    #[test]
    fn golden_offline() {
        let mut h = hp(Mode::Bridge, Command::Offline);
        h.ip = parse_guest_addrs("10.0.0.5").unwrap();
        let mut link = netback(true);
        link.master = Some(3);
        let mut o = observed(link);
        o.vif.filter.table = true;
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "ip link set vif5.0 down",
                "ip link set vif5.0 nomaster",
                "nft delete table netdev xen-vif-vif5.0",
                "conntrack -D --orig-src 10.0.0.5; conntrack -D --orig-dst 10.0.0.5",
            ]
        );
        // Gone: only the filter is left.
        o.vif.at_kernel_name = None;
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "nft delete table netdev xen-vif-vif5.0",
                "conntrack -D --orig-src 10.0.0.5; conntrack -D --orig-dst 10.0.0.5",
            ]
        );
    }
}
