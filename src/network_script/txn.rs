//! The transaction of a network script: `start` records in the state file what it is about
//! to change (before the first change), applies the plan and marks the state complete; a
//! failed start and `stop` both `restore` from the state file and the kernel — the one undo
//! authority, which also serves after a crash or an interrupted start.

use std::io;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use super::instance::{Instance, Start};
use super::observed::Observed;
use super::state::{self, Location, Phase, Record, State};
use crate::log;
use crate::netlink::Netlink;
use crate::output;
use crate::plan::{self, Unsupported};
use crate::xenstore::Store;

/// Network scripts never touch xenstore; the plan executor wants a store all the same.
struct NoStore;

impl Store for NoStore {
    fn read(&self, _: &str) -> io::Result<Option<String>> {
        Ok(None)
    }
    fn write(&self, path: &str, _: &str) -> io::Result<()> {
        Err(io::Error::other(format!(
            "network scripts do not write xenstore ({path})"
        )))
    }
    fn directory(&self, _: &str) -> io::Result<Option<Vec<String>>> {
        Ok(None)
    }
}

/// A missing kernel feature said plainly, without the netlink detail around it.
pub fn plainly(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<Unsupported>() {
        Some(u) => anyhow!("{u}"),
        None => e,
    }
}

/// The host as `inst`'s planners see it, with the sysctls `st` recorded.
fn observe(nl: &mut Netlink, inst: &dyn Instance, st: Option<&State>) -> Result<Observed> {
    let mut o = Observed::read(nl, st)?;
    for (table, chain) in inst.ip_chains(st) {
        o.read_ip_chain(&table, &chain)?;
    }
    Ok(o)
}

/// `status`: whether this instance was started by xen-vif, then the host as it is.
pub fn status(nl: &mut Netlink, inst: &dyn Instance, path: &Path) -> Result<()> {
    let st = State::load(path)?;
    let mut o = observe(nl, inst, st.as_ref())?;
    for port in inst.vlan_ports() {
        if let Some(index) = o.link(port.as_str()).map(|l| l.index) {
            o.read_port_vlans(nl, index)?;
        }
    }
    let text = format!(
        "{}\n{}",
        state_line(inst, path, st.as_ref()),
        inst.status(&o, st.as_ref())?
    );
    output::print(text.as_bytes()).map_err(anyhow::Error::from)
}

fn state_line(inst: &dyn Instance, path: &Path, st: Option<&State>) -> String {
    let what = format!("{} {}", inst.script().name(), inst.key());
    match st.map(|s| s.phase) {
        None => format!("{what}: not started by xen-vif (no {})", path.display()),
        Some(Phase::Started) => format!("{what}: started by xen-vif ({})", path.display()),
        Some(Phase::Starting) => format!(
            "{what}: a start was interrupted ({}); run `{} stop` to restore the host",
            path.display(),
            inst.script().name()
        ),
    }
}

pub fn start(
    nl: &mut Netlink,
    inst: &dyn Instance,
    loc: &Location,
    path: &Path,
    dry_run: bool,
) -> Result<()> {
    let name = inst.script().name();
    let _lock = if dry_run { None } else { Some(loc.lock()?) };
    if let Some(st) = State::load(path)? {
        if st.phase == Phase::Started && inst.is_started(&observe(nl, inst, Some(&st))?, &st)? {
            log::info(&format!("{} is already started: nothing to do", inst.key()));
            return Ok(());
        }
        let why = match st.phase {
            Phase::Starting => "was interrupted",
            Phase::Started => "no longer matches the host",
        };
        bail!(
            "{} records a start of {} that {why}; run `{name} stop` first",
            path.display(),
            inst.key()
        );
    }
    let (steps, records) = match inst.plan_start(&observe(nl, inst, None)?)? {
        Start::Nothing(why) => {
            log::info(&why);
            if dry_run {
                output::print_or_exit(format!("# {why}\n").as_bytes());
            }
            return Ok(());
        }
        Start::Steps { steps, records } => (steps, records),
    };
    if dry_run {
        plan::print(&steps);
        return Ok(());
    }
    if steps.is_empty() {
        log::info(&format!("{}: the host already is set up", inst.key()));
        return Ok(());
    }
    let named = Record::Instance(inst.params());
    let mut st = State::new(std::iter::once(named).chain(records).collect());
    st.save(path, name)?;
    if let Err(e) = plan::apply_until_failure(nl, &NoStore, &steps) {
        // The state file is the one undo authority: restore plans from it and the kernel, as
        // `stop` does after a crash at this very step (it also sees what the kernel changed by
        // itself, such as the sysctl cascade). The state goes only when the host provably is
        // as it was. The failure may be the budget running out: the restore gets the cleanup
        // extension.
        crate::deadline::enter_cleanup();
        let e = plainly(e);
        return match restore(nl, inst, &st) {
            Ok(()) => {
                state::remove(path)?;
                Err(e)
            }
            Err(re) => Err(anyhow!(
                "{e:#}; the host is not fully restored ({re:#}): state kept in {}, run `{name} stop`",
                path.display()
            )),
        };
    }
    st.phase = Phase::Started;
    st.save(path, name)
}

/// Passes of stop: a restored sysctl can cascade (ip_forward resets every device's forwarding),
/// so stop re-plans once to put back what the cascade overwrote.
const STOP_PASSES: usize = 3;

pub fn stop(
    nl: &mut Netlink,
    inst: &dyn Instance,
    loc: &Location,
    path: &Path,
    dry_run: bool,
) -> Result<()> {
    let _lock = if dry_run { None } else { Some(loc.lock()?) };
    let Some(st) = State::load(path)? else {
        log::info(&format!(
            "{} was not started by xen-vif (no {}): nothing to undo",
            inst.key(),
            path.display()
        ));
        return Ok(());
    };
    if dry_run {
        plan::print(&inst.plan_stop(&observe(nl, inst, Some(&st))?, &st)?);
        return Ok(());
    }
    restore(nl, inst, &st).with_context(|| {
        format!(
            "state kept in {}: fix the cause and run stop again",
            path.display()
        )
    })?;
    state::remove(path)
}

/// Put the host back as `st` records it: plan from what the kernel has, apply every step
/// (collecting errors), and plan again until nothing is left.
fn restore(nl: &mut Netlink, inst: &dyn Instance, st: &State) -> Result<()> {
    for _ in 0..STOP_PASSES {
        let steps = inst.plan_stop(&observe(nl, inst, Some(st))?, st)?;
        if steps.is_empty() {
            return Ok(());
        }
        plan::teardown(nl, &NoStore, &steps)?;
    }
    bail!("the host still differs from the state after {STOP_PASSES} passes")
}
