//! The vif modes. Each computes a plan from what the kernel has; nothing here reads argv, the
//! environment or xenstore (that is `invocation`), and nothing here changes the kernel (`plan`).

pub mod bridge;
pub mod filter;
pub mod nat;
pub mod openvswitch;
pub mod route;

use anyhow::{Result, bail};

use crate::invocation::{Hotplug, Mode, TypeIf};
use crate::log;
use crate::netlink::{Link, Netlink};
use crate::plan::Step;
use crate::xenstore::Store;

/// Plan the change `hp` asks for, in its mode.
pub fn plan(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Vec<Step>> {
    match (hp.mode, hp.command.is_up()) {
        (Mode::Bridge, true) => bridge::online(nl, hp),
        (Mode::Bridge, false) => bridge::offline(nl, hp),
        (Mode::Route, true) => route::online(nl, hp),
        (Mode::Route, false) => route::offline(nl, hp),
        (Mode::Nat, true) => nat::online(nl, hp),
        (Mode::Nat, false) => nat::offline(nl, hp),
        (Mode::Openvswitch, true) => openvswitch::online(nl, store, hp),
        (Mode::Openvswitch, false) => openvswitch::offline(nl, hp),
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

/// Find this backend's device: by netback's name (which after our rename is the device's
/// alternative name), unless what has that name provably is another backend's; or by its
/// `vifname` when the device there provably is this backend's. Online and offline act only on
/// what this returns.
pub fn find_device(nl: &mut Netlink, hp: &Hotplug) -> Result<Option<Link>> {
    if let Some(l) = nl.link_by_name(hp.kernel_name.as_str())? {
        match another_backends(&l, hp) {
            None => return Ok(Some(l)),
            Some(why) => log::debug(&format!(
                "{} is not this backend's device: {why}",
                hp.kernel_name
            )),
        }
    }
    if hp.wanted_name != hp.kernel_name {
        if let Some(l) = nl.link_by_name(hp.wanted_name.as_str())? {
            if is_this_backends(&l, hp) {
                return Ok(Some(l));
            }
        }
    }
    Ok(None)
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

/// The device must exist for online/add, and be this backend's.
pub fn require_device(nl: &mut Netlink, hp: &Hotplug) -> Result<Link> {
    if let Some(l) = find_device(nl, hp)? {
        return Ok(l);
    }
    if let Some(l) = nl.link_by_name(hp.kernel_name.as_str())? {
        if let Some(why) = another_backends(&l, hp) {
            bail!("device {} is another backend's: {why}", hp.kernel_name);
        }
    }
    bail!("device {} does not exist", hp.kernel_name)
}

/// The steps that give the link its name: down first when it is up and must be (a rename
/// always needs that; `down_anyway` for the caller's own reasons, e.g. a netback MAC change),
/// then the rename. Returns the steps and whether they take the link down, so the caller
/// brings it up again.
pub fn down_and_rename(
    nl: &mut Netlink,
    hp: &Hotplug,
    link: &Link,
    down_anyway: bool,
) -> Result<(Vec<Step>, bool)> {
    let rename = name_steps(nl, hp, link)?;
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
/// netback's name as an alternative name so `ip link show vifD.N` and offline still find it.
fn name_steps(nl: &mut Netlink, hp: &Hotplug, link: &Link) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if link.name != hp.wanted_name.as_str() {
        if let Some(other) = nl.link_by_name(hp.wanted_name.as_str())? {
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
