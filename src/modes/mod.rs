//! The vif modes. Each reads what it needs into a plain struct (`observe`; [`Vif`] is what every
//! mode reads about the vif), then plans from it purely (`plan_online`, `plan_offline`: golden
//! tests beside each); `online`/`offline` are the two together. A run observes once: [`observe`]
//! gives the mode's [`Observed`], which [`plan_observed`] plans from and the hooks' variables and
//! `status` are read from. Nothing here reads argv or the environment (that is `invocation`),
//! and nothing here changes the kernel (`plan`).

pub mod bridge;
pub mod filter;
pub mod nat;
pub mod openvswitch;
pub mod route;

use std::net::IpAddr;

use anyhow::{Result, bail};

use crate::invocation::{Hotplug, Mode, TypeIf};
use crate::log;
use crate::netlink::{Address, Link, Netlink};
use crate::plan::Step;
use crate::xenstore::Store;

/// Plan the change `hp` asks for, in its mode: [`observe`], then [`plan_observed`].
pub fn plan(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_observed(&observe(nl, store, hp)?, hp)
}

/// What a run reads, in its mode: once, for the plan and for whoever reports on the run (the
/// hooks' environment, `status`).
#[derive(Clone, Debug)]
pub enum Observed {
    Bridge(bridge::Observed),
    Route(route::Observed),
    Nat(nat::Observed),
    Openvswitch(openvswitch::Observed),
}

/// Read what the change `hp` asks for needs, in its mode.
pub fn observe(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Observed> {
    Ok(match hp.mode {
        Mode::Bridge => Observed::Bridge(bridge::observe(nl, hp)?),
        Mode::Route => Observed::Route(route::observe(nl, hp)?),
        Mode::Nat => Observed::Nat(nat::observe(nl, hp)?),
        Mode::Openvswitch => Observed::Openvswitch(openvswitch::observe(nl, store, hp)?),
    })
}

/// The change `hp` asks for, from what was observed (in `hp`'s mode). Pure.
pub fn plan_observed(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let up = hp.command.is_up();
    match o {
        Observed::Bridge(o) if up => bridge::plan_online(o, hp),
        Observed::Bridge(o) => bridge::plan_offline(o, hp),
        Observed::Route(o) if up => route::plan_online(o, hp),
        Observed::Route(o) => route::plan_offline(o, hp),
        Observed::Nat(o) if up => nat::plan_online(o, hp),
        Observed::Nat(o) => nat::plan_offline(o, hp),
        Observed::Openvswitch(o) if up => openvswitch::plan_online(o, hp),
        Observed::Openvswitch(o) => openvswitch::plan_offline(o, hp),
    }
}

impl Observed {
    /// What every mode reads about the vif.
    pub fn vif(&self) -> &Vif {
        match self {
            Observed::Bridge(o) => &o.vif,
            Observed::Route(o) => &o.vif,
            Observed::Nat(o) => &o.vif,
            Observed::Openvswitch(o) => &o.vif,
        }
    }

    /// The switch the vif is (to be) a port of, as the stock scripts name it: in bridge mode
    /// the bridge resolved, else the caller's; in Open vSwitch mode the caller's. Route and
    /// NAT mode have none (libxl's default `xenbr0` is in every backend; the stock scripts
    /// ignore it there).
    pub fn bridge_name(&self, hp: &Hotplug) -> Option<String> {
        match self {
            Observed::Bridge(o) => o.bridge_name(hp),
            Observed::Openvswitch(_) => hp.bridge.as_ref().map(ToString::to_string),
            Observed::Route(_) | Observed::Nat(_) => None,
        }
    }

    /// Route mode: the gateway device's name and its main address (see
    /// [`route::Observed::gateway_for_hooks`]).
    pub fn gateway(&self) -> Option<(String, Option<IpAddr>)> {
        match self {
            Observed::Route(o) => o.gateway_for_hooks(),
            _ => None,
        }
    }

    /// Open vSwitch mode: the port as the database has it under the name observed (online:
    /// `vifname`; offline: the device's).
    pub fn ovs_port(&self) -> Option<&crate::ovsdb::Port> {
        match self {
            Observed::Openvswitch(o) => o.db.port.as_ref(),
            _ => None,
        }
    }
}

/// Tell the guest the MTU its port got: its frontend directory, found by domid/devid (the stock
/// script derives the path from the device name, wrong when vifname is set). A tap has none.
pub fn frontend_mtu_step(hp: &Hotplug, mtu: u32) -> Option<Step> {
    (hp.type_if == TypeIf::Vif).then(|| Step::XsWrite {
        path: hp.id.frontend_mtu_path(),
        value: mtu.to_string(),
    })
}

/// What every mode reads about this backend's device, once; the rules that pick the device,
/// refuse another backend's and rename it are pure over it.
#[derive(Clone, Debug, Default)]
pub struct Vif {
    /// The link netback's name finds (its name or an alternative name), whoever's it is.
    pub at_kernel_name: Option<Link>,
    /// The link `vifname` finds, when it differs from netback's name.
    pub at_wanted_name: Option<Link>,
    /// The device's addresses (none when there is no device).
    pub addresses: Vec<Address>,
    /// The anti-spoofing filter's kernel state, and the device's hygiene sysctls.
    pub filter: filter::Observed,
}

/// Read what every mode needs about this backend's device.
pub fn observe_vif(nl: &mut Netlink, hp: &Hotplug) -> Result<Vif> {
    let mut vif = observe_names(nl, hp)?;
    let link = vif.device(hp).cloned();
    if let Some(l) = &link {
        vif.addresses = nl.addresses(Some(l.index))?;
    }
    vif.filter = filter::observe_vif(nl, hp, link.as_ref())?;
    Ok(vif)
}

/// The links of netback's name and of `vifname`.
fn observe_names(nl: &mut Netlink, hp: &Hotplug) -> Result<Vif> {
    let mut vif = Vif {
        at_kernel_name: nl.link_by_name(hp.kernel_name.as_str())?,
        ..Default::default()
    };
    if hp.wanted_name != hp.kernel_name {
        vif.at_wanted_name = nl.link_by_name(hp.wanted_name.as_str())?;
    }
    if let Some(why) = vif.foreign(hp) {
        log::debug(&format!(
            "{} is not this backend's device: {why}",
            hp.kernel_name
        ));
    }
    Ok(vif)
}

impl Vif {
    /// This backend's device: the link of netback's name (which after our rename is the
    /// device's alternative name), unless it provably is another backend's; or the link of its
    /// `vifname` when that provably is this backend's. Online and offline act only on it.
    pub fn device(&self, hp: &Hotplug) -> Option<&Link> {
        if let Some(l) = &self.at_kernel_name {
            if another_backends(l, hp).is_none() {
                return Some(l);
            }
        }
        self.at_wanted_name
            .as_ref()
            .filter(|l| hp.wanted_name != hp.kernel_name && is_this_backends(l, hp))
    }

    /// Why the link of netback's name is another backend's, when it is.
    pub fn foreign(&self, hp: &Hotplug) -> Option<String> {
        self.at_kernel_name
            .as_ref()
            .and_then(|l| another_backends(l, hp))
    }

    /// The device must exist for online/add, and be this backend's.
    pub fn require(&self, hp: &Hotplug) -> Result<&Link> {
        if let Some(l) = self.device(hp) {
            return Ok(l);
        }
        if let Some(why) = self.foreign(hp) {
            bail!("device {} is another backend's: {why}", hp.kernel_name);
        }
        bail!("device {} does not exist", hp.kernel_name)
    }

    /// The link that has the name `vifname` now (netback's name's link when there is no
    /// vifname).
    fn name_holder(&self, hp: &Hotplug) -> Option<&Link> {
        if hp.wanted_name != hp.kernel_name {
            self.at_wanted_name.as_ref()
        } else {
            self.at_kernel_name.as_ref()
        }
    }

    /// The steps that give the link its name: down first when it is up and must be (a rename
    /// always needs that; `down_anyway` for the caller's own reasons, e.g. a netback MAC
    /// change), then the rename. Returns the steps and whether they take the link down, so the
    /// caller brings it up again.
    pub fn down_and_rename(
        &self,
        hp: &Hotplug,
        link: &Link,
        down_anyway: bool,
    ) -> Result<(Vec<Step>, bool)> {
        let rename = self.name_steps(hp, link)?;
        let needs_down =
            link.up && (down_anyway || rename.iter().any(|s| matches!(s, Step::Rename { .. })));
        let mut steps = Vec::new();
        if needs_down {
            steps.push(Step::SetUp {
                index: link.index,
                name: link.name.clone(),
                up: false,
            });
        }
        steps.extend(rename);
        Ok((steps, needs_down))
    }

    /// Rename to `vifname` (the link must be down: `down_and_rename` orders that), keeping
    /// netback's name as an alternative name so `ip link show vifD.N` and offline still find
    /// it.
    fn name_steps(&self, hp: &Hotplug, link: &Link) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        if link.name != hp.wanted_name.as_str() {
            if let Some(other) = self.name_holder(hp) {
                if other.index != link.index {
                    bail!(
                        "cannot rename {} to {}: another link already has that name",
                        link.name,
                        hp.wanted_name
                    );
                }
            }
            steps.push(Step::Rename {
                index: link.index,
                from: link.name.clone(),
                to: hp.wanted_name.to_string(),
                alias: Some(owner_alias(hp)),
                old_alias: link.alias.clone(),
            });
        }
        if hp.wanted_name != hp.kernel_name
            && !link.alt_names.iter().any(|a| a == hp.kernel_name.as_str())
        {
            steps.push(Step::AddAltName {
                index: link.index,
                name: hp.wanted_name.to_string(),
                alt: hp.kernel_name.to_string(),
            });
        }
        Ok(steps)
    }
}

/// The alias a device renamed by xen-vif carries: `xen-vif vif5.0`.
fn owner_alias(hp: &Hotplug) -> String {
    format!("{ALIAS_PREFIX}{}", hp.kernel_name)
}

const ALIAS_PREFIX: &str = "xen-vif ";

/// Netback's devices hang off the xenbus device `vif-D-N`; a device we renamed carries our
/// alias (set in the same message as the new name) and netback's name as an alternative name.
/// Anything else under that name is not ours to touch.
fn is_this_backends(l: &Link, hp: &Hotplug) -> bool {
    l.alias.as_deref() == Some(owner_alias(hp).as_str())
        || l.alt_names.iter().any(|a| a == hp.kernel_name.as_str())
        || (hp.type_if == TypeIf::Vif
            && l.parent_bus.as_deref() == Some("xen-backend")
            && l.parent_dev.as_deref() == Some(&format!("vif-{}-{}", hp.id.domid, hp.id.devid)))
}

/// Why the link found under this backend's kernel name is provably another backend's: it
/// carries xen-vif's alias for another device (a rename of that one to our name, e.g. an old
/// `vifname=vif6.0` on domain 5), or hangs off another xenbus device. A link with neither
/// (netback's own device before any rename, the emulated NIC's tap, a test's veth) is taken to
/// be the one netback or qemu created under this name.
fn another_backends(l: &Link, hp: &Hotplug) -> Option<String> {
    if let Some(a) = l.alias.as_deref() {
        if a.starts_with(ALIAS_PREFIX) && a != owner_alias(hp) {
            return Some(format!("{} carries the alias {a:?}", l.name));
        }
    }
    if l.parent_bus.as_deref() == Some("xen-backend") {
        let ours = format!("vif-{}-{}", hp.id.domid, hp.id.devid);
        if let Some(p) = l.parent_dev.as_deref().filter(|p| *p != ours) {
            return Some(format!("{} belongs to the xen-backend device {p}", l.name));
        }
    }
    None
}

/// Backends and devices built by hand for the planners' golden tests.
#[cfg(test)]
pub mod fixture {
    use super::*;
    use crate::ifname::IfName;
    use crate::invocation::{Command, DeviceId};

    /// Domain 5's first vif (`vif5.0`) in `mode`, no vifname, no filter.
    pub fn hp(mode: Mode, command: Command) -> Hotplug {
        let name = IfName::new("vif5.0").unwrap();
        Hotplug {
            script: "vif-setup",
            mode,
            command,
            type_if: TypeIf::Vif,
            id: DeviceId { domid: 5, devid: 0 },
            backend: "backend/vif/5/0".into(),
            kernel_name: name.clone(),
            wanted_name: name,
            bridge: None,
            gatewaydev: None,
            ip: Vec::new(),
            mtu: None,
            vlan: None,
            mac: None,
            antispoof: false,
            ovs_vlans: Default::default(),
        }
    }

    pub fn name(n: &str) -> IfName {
        IfName::new(n).unwrap()
    }

    /// Netback's device as it comes: `vif5.0`, index 7, on the xenbus device `vif-5-0`, a
    /// MAC that is not the port MAC, MTU 1500.
    pub fn netback(up: bool) -> Link {
        Link {
            index: 7,
            name: "vif5.0".into(),
            mac: vec![0x02, 0, 0, 0, 0, 7],
            mtu: 1500,
            up,
            parent_bus: Some("xen-backend".into()),
            parent_dev: Some("vif-5-0".into()),
            ..Default::default()
        }
    }

    /// The vif observed with `link` under netback's name.
    pub fn vif(link: Link) -> Vif {
        Vif {
            at_kernel_name: Some(link),
            ..Default::default()
        }
    }

    pub fn addr(index: u32, ip: &str, len: u8) -> Address {
        Address::new(index, ip.parse().unwrap(), len)
    }

    /// The plan as `--dry-run` words it, one line per step (a filter chain by its label).
    pub fn text(steps: &[Step]) -> Vec<String> {
        steps.iter().map(Step::label).collect()
    }

    /// The plan's error, as the one line the caller sees.
    pub fn error(r: Result<Vec<Step>>) -> String {
        format!("{:#}", r.unwrap_err())
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{hp, name, netback};
    use super::*;
    use crate::invocation::Command;

    #[test]
    fn the_device_is_this_backends_only_provably() {
        let mut h = hp(Mode::Bridge, Command::Online);
        h.wanted_name = name("web0");
        // Renamed by an earlier online: found under vifname by our alias.
        let mut renamed = netback(true);
        renamed.name = "web0".into();
        renamed.alias = Some("xen-vif vif5.0".into());
        let v = Vif {
            at_wanted_name: Some(renamed.clone()),
            ..Default::default()
        };
        assert_eq!(v.device(&h), Some(&renamed));
        // A stranger called web0 is not ours.
        let stranger = Link {
            index: 9,
            name: "web0".into(),
            ..Default::default()
        };
        let v = Vif {
            at_wanted_name: Some(stranger),
            ..Default::default()
        };
        assert_eq!(v.device(&h), None);
        // Under netback's name, a device another vif was renamed to is that vif's.
        let mut other = netback(true);
        other.alias = Some("xen-vif vif6.0".into());
        let v = Vif {
            at_kernel_name: Some(other),
            ..Default::default()
        };
        assert_eq!(v.device(&h), None);
        assert_eq!(
            format!("{:#}", v.require(&h).unwrap_err()),
            "device vif5.0 is another backend's: vif5.0 carries the alias \"xen-vif vif6.0\""
        );
    }

    #[test]
    fn golden_rename_keeps_netbacks_name_as_an_alternative_one() {
        let mut h = hp(Mode::Bridge, Command::Online);
        h.wanted_name = name("web0");
        let link = netback(false);
        let v = Vif {
            at_kernel_name: Some(link.clone()),
            ..Default::default()
        };
        let (steps, downs) = v.down_and_rename(&h, &link, false).unwrap();
        assert_eq!(
            fixture::text(&steps),
            [
                "ip link set vif5.0 name web0 alias \"xen-vif vif5.0\"",
                "ip link property add dev web0 altname vif5.0",
            ]
        );
        // Down already: nothing to bring up again.
        assert!(!downs);
        // Named already, its alternative name there: nothing, even when asked to go down
        // (a down link stays down).
        let mut named = link.clone();
        named.name = "web0".into();
        named.alt_names = vec!["vif5.0".into()];
        assert_eq!(
            v.down_and_rename(&h, &named, true).unwrap(),
            (vec![], false)
        );
    }
}
