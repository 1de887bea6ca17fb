//! Bridge mode (vif-bridge): the vif becomes a port of the guest's bridge.

use anyhow::{Result, bail};

use super::{down_and_rename, filter, find_device, require_device};
use crate::invocation::Hotplug;
use crate::netlink::{Link, Netlink, PortVlan};
use crate::plan::Step;

/// The numerically largest non-broadcast MAC: the bridge never adopts it as its own address.
pub const PORT_MAC: [u8; 6] = [0xfe, 0xff, 0xff, 0xff, 0xff, 0xff];

/// The bridge to attach to: the one named (`xenbrN` falls back to a bridge `ethN`, as xend's
/// network-bridge named them), else the host's only bridge.
pub fn resolve_bridge(nl: &mut Netlink, hp: &Hotplug) -> Result<Link> {
    let Some(name) = &hp.bridge else {
        let bridges: Vec<Link> = nl.links()?.into_iter().filter(Link::is_bridge).collect();
        return match bridges.as_slice() {
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
    match nl.link_by_name(name.as_str())? {
        Some(l) if l.is_bridge() => Ok(l),
        Some(l) => bail!(
            "{name} is not a bridge (it is a {} link)",
            l.kind.as_deref().unwrap_or("plain")
        ),
        None => {
            if let Some(n) = name.as_str().strip_prefix("xenbr") {
                if let Some(l) = nl.link_by_name(&format!("eth{n}"))? {
                    if l.is_bridge() {
                        return Ok(l);
                    }
                }
            }
            bail!("bridge {name} does not exist")
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
/// down, so the caller brings it up again.
pub fn prepare_port(
    nl: &mut Netlink,
    hp: &Hotplug,
    link: &Link,
    mtu: u32,
) -> Result<(Vec<Step>, bool)> {
    let set_mac = link.mac != PORT_MAC;
    // Changing a netback device's MAC needs the link down (as renaming does); otherwise a
    // second online leaves a working port alone.
    let (mut steps, needs_down) = down_and_rename(nl, hp, link, set_mac)?;
    // The filter first, while the port is down and before it joins the bridge (or switch).
    steps.extend(filter::online(nl, hp, link)?);
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
    for addr in nl.addresses(Some(link.index))? {
        if !addr.is_ipv6_link_local() {
            steps.push(Step::DelAddress {
                name: name.clone(),
                addr,
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
    let link = require_device(nl, hp)?;
    let bridge = resolve_bridge(nl, hp)?;
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
    let (mut steps, needs_down) = prepare_port(nl, hp, &link, mtu)?;
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
            nl.port_vlans(link.index)?
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

pub fn offline(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    let Some(link) = find_device(nl, hp)? else {
        return filter::offline(nl, hp, None);
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
    steps.extend(filter::offline(nl, hp, Some(&link))?);
    Ok(steps)
}
