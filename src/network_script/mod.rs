//! xend's network scripts (`(network-script ...)` in xend-config.sxp, docs/contract.md §1 and §3):
//! `<name> start|stop|status [k=v ...]`, run once when xend starts and stops.
//!
//! - `network-bridge`: a bridge takes a NIC's place (or per-VLAN bridges on a trunk).
//! - `network-route`: forwarding and proxy ARP for routed guests, with a dummy gateway device.
//! - `network-nat`: masquerading and forwarding for NAT guests (vif-nat).
//! - `network-prebuilt`: the checking replacement for `/bin/true` (the distro built the bridges).
//!
//! Every start is a transaction: the script validates and plans from what the kernel has,
//! records in a state file what it is about to change (before the first change), applies the
//! plan with undo on failure, and marks the state complete. `stop` recomputes, from the state
//! file and the kernel, what puts the host back — so it works from a new process, after a crash
//! and after a start that was interrupted half-way. This module is the boundary: it reads argv
//! and the environment; the scripts get typed parameters.

pub mod bridge;
pub mod nat;
pub mod prebuilt;
pub mod route;
pub mod state;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::ifname::IfName;
use crate::invocation::{Personality, Words};
use crate::log;
use crate::netlink::{Link, Netlink};
use crate::plan::{self, Step, Unsupported};
use crate::xenstore::Store;
use state::{Location, Phase, Record, State};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Status,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "start" => Action::Start,
            "stop" => Action::Stop,
            "status" => Action::Status,
            _ => return None,
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Bridge,
    Route,
    Nat,
    Prebuilt,
}

impl Script {
    pub fn name(self) -> &'static str {
        match self {
            Script::Bridge => "network-bridge",
            Script::Route => "network-route",
            Script::Nat => "network-nat",
            Script::Prebuilt => "network-prebuilt",
        }
    }

    /// The `k=v` keys each script takes. xend-era keys that still mean something are accepted
    /// (`vifnum`, `antispoof=no`); anything else is refused, so a typo never silently builds
    /// the default set-up.
    /// The keys that say which instance is meant; without them it is derived from the host.
    fn naming_keys(self) -> &'static [&'static str] {
        match self {
            Script::Bridge => &["netdev", "bridge", "vifnum", "trunk"],
            Script::Route => &["netdev", "vifnum"],
            Script::Nat => &["netdev", "vifnum"],
            Script::Prebuilt => &[],
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Script::Bridge => &[
                "netdev",
                "bridge",
                "vifnum",
                "antispoof",
                "force",
                "trunk",
                "vlans",
                "bridge_template",
                "vlan_filtering",
            ],
            Script::Route => &["netdev", "gateway", "vifnum", "antispoof"],
            Script::Nat => &["netdev", "range", "vifnum", "antispoof", "dhcp"],
            Script::Prebuilt => &["bridges", "bridge"],
        }
    }
}

/// The `k=v` words of one call, checked against the keys the script knows.
#[derive(Clone, Debug, Default)]
pub struct Params {
    vars: Vec<(String, String)>,
}

impl Params {
    pub fn new(script: Script, vars: &[(String, String)]) -> Result<Params> {
        let known = script.keys();
        for (k, _) in vars {
            if !known.contains(&k.as_str()) {
                bail!(
                    "unknown parameter {k:?} ({} takes {})",
                    script.name(),
                    known.join(", ")
                );
            }
        }
        let p = Params {
            vars: vars.to_vec(),
        };
        if p.yes("antispoof")? {
            bail!(
                "antispoof=yes (iptables rules) is not supported by xen-vif; use your own firewall rules"
            );
        }
        Ok(p)
    }

    /// The last non-empty value of `key` (later words override earlier ones, as in the scripts).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a key that may repeat, comma-separated lists split.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.all_of(&[key])
    }

    /// Every value of any of `keys`, in the order given.
    pub fn all_of(&self, keys: &[&str]) -> Vec<&str> {
        self.vars
            .iter()
            .filter(|(k, _)| keys.contains(&k.as_str()))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn ifname(&self, key: &str) -> Result<Option<IfName>> {
        self.get(key)
            .map(|v| IfName::new(v).map_err(|e| anyhow!("{key}: {e}")))
            .transpose()
    }

    /// `netdev=`, else xend's `eth<vifnum>`; `None` when neither is given.
    pub fn netdev(&self) -> Result<Option<IfName>> {
        match (self.ifname("netdev")?, self.get("vifnum")) {
            (Some(n), _) => Ok(Some(n)),
            (None, Some(v)) if v.bytes().all(|b| b.is_ascii_digit()) => {
                IfName::new(&format!("eth{v}"))
                    .map(Some)
                    .map_err(anyhow::Error::msg)
            }
            (None, Some(v)) => bail!("vifnum={v:?} is not a number"),
            (None, None) => Ok(None),
        }
    }

    pub fn yes(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some("no" | "0" | "false" | "off") => Ok(false),
            Some("yes" | "1" | "true" | "on") => Ok(true),
            Some(v) => bail!("{key}={v:?}: expected yes or no"),
        }
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// What a script computed for `start`.
pub enum Start {
    /// Nothing to build, and why (e.g. the NIC is already a bridge built by someone else).
    Nothing(String),
    /// The changes, and what `stop` needs to know to undo them.
    Steps {
        steps: Vec<Step>,
        records: Vec<Record>,
    },
}

/// One instance of a network script (the bridge over eth0, the gateway on dummy0, ...), its
/// parameters resolved. Each method only reads the kernel; `plan` changes it.
pub trait Instance {
    fn script(&self) -> Script;
    /// Names the instance's state file: one per bridge, trunk or gateway device.
    fn key(&self) -> String;
    /// The parameters that name this instance again (kept in the state file, so `stop` finds
    /// it even when the default it was derived from is gone).
    fn params(&self) -> Vec<(String, String)>;
    fn plan_start(&self, nl: &mut Netlink) -> Result<Start>;
    /// Whether the host still is as a completed start (this `state`) left it.
    fn is_started(&self, nl: &mut Netlink, state: &State) -> Result<bool>;
    /// What puts the host back as `state` records it, from what the kernel has now. Empty
    /// means the host already is as before start.
    fn plan_stop(&self, nl: &mut Netlink, state: &State) -> Result<Vec<Step>>;
    fn status(&self, nl: &mut Netlink, state: Option<&State>) -> Result<String>;
}

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

/// Run as the personality `network-bridge`, `network-route` or `network-prebuilt` with xend's
/// argv: `start|stop|status [k=v ...]`. Returns the exit status.
pub fn run_personality(personality: Personality, args: &[String]) -> i32 {
    let script = match personality {
        Personality::NetworkRoute => Script::Route,
        Personality::NetworkNat => Script::Nat,
        Personality::NetworkPrebuilt => Script::Prebuilt,
        _ => Script::Bridge,
    };
    // xend passes the command and k=v words only; anything else (say `--dry-run`, which only
    // `xen-vif network` knows) must not be ignored on the way to changing the host.
    if let Some(extra) = args.iter().filter(|a| !a.contains('=')).nth(1) {
        log::error(&format!(
            "unexpected argument {extra:?} (usage: {} start|stop|status [key=value ...])",
            script.name()
        ));
        return 1;
    }
    let words = Words::parse(args);
    let action = match words.command.as_deref().map(|c| (c, Action::parse(c))) {
        Some((_, Some(a))) => a,
        Some((c, None)) => {
            log::error(&format!(
                "invalid command {c:?} (expected start, stop or status)"
            ));
            return 1;
        }
        None => {
            log::error("no command given (expected start, stop or status)");
            return 1;
        }
    };
    run(script, action, &words.vars, false)
}

/// One network script call; errors are logged as one line. Returns the exit status.
pub fn run(script: Script, action: Action, vars: &[(String, String)], dry_run: bool) -> i32 {
    // A fixed place: the environment controls no paths (only XENSTORED_PATH).
    let base = PathBuf::from(crate::rundir::RUN_DIR);
    match execute(script, action, vars, dry_run, &Location::new(&base)) {
        Ok(code) => code,
        Err(e) => {
            log::error(&format!("{} {action}: {e:#}", script.name()));
            1
        }
    }
}

/// A missing kernel feature said plainly, without the netlink detail around it.
fn plainly(e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<Unsupported>() {
        Some(u) => anyhow!("{u}"),
        None => e,
    }
}

fn execute(
    script: Script,
    action: Action,
    vars: &[(String, String)],
    dry_run: bool,
    loc: &Location,
) -> Result<i32> {
    let params = Params::new(script, vars)?;
    let mut nl = Netlink::open().context("open rtnetlink")?;
    if script == Script::Prebuilt {
        return prebuilt::run(&mut nl, action, &params);
    }
    let Some(inst) = resolve(&mut nl, script, action, &params, loc)? else {
        log::info("bridge=null: nothing to do");
        return Ok(0);
    };
    let path = loc.state_file(script.name(), &inst.key());
    match action {
        Action::Status => {
            let st = State::load(&path)?;
            println!("{}", state_line(inst.as_ref(), &path, st.as_ref()));
            print!("{}", inst.status(&mut nl, st.as_ref())?);
            Ok(0)
        }
        Action::Start => start(&mut nl, inst.as_ref(), loc, &path, dry_run).map(|()| 0),
        Action::Stop => stop(&mut nl, inst.as_ref(), loc, &path, dry_run).map(|()| 0),
    }
}

fn instance(nl: &mut Netlink, script: Script, p: &Params) -> Result<Option<Box<dyn Instance>>> {
    Ok(match script {
        Script::Route => Some(Box::new(route::instance(nl, p)?)),
        Script::Nat => Some(Box::new(nat::instance(nl, p)?)),
        _ => bridge::instance(nl, p)?,
    })
}

/// The instance the parameters name, or derive from the host. A crash can take what the
/// default is derived from (the default route) away with it: when the default cannot be
/// derived — or, for stop and status, has no state — the one instance this namespace has
/// state for is meant.
fn resolve(
    nl: &mut Netlink,
    script: Script,
    action: Action,
    p: &Params,
    loc: &Location,
) -> Result<Option<Box<dyn Instance>>> {
    let derived = instance(nl, script, p);
    if script.naming_keys().iter().any(|k| p.has(k)) {
        return derived;
    }
    match &derived {
        Ok(None) => return derived,
        Ok(Some(i))
            if action == Action::Start || loc.state_file(script.name(), &i.key()).exists() =>
        {
            return derived;
        }
        _ => {}
    }
    let files = loc.state_files(script.name());
    let [only] = files.as_slice() else {
        return derived;
    };
    let Some(st) = State::load(only)? else {
        return derived;
    };
    let mut vars = st.one("instance")?.fields().to_vec();
    vars.extend(p.vars.iter().filter(|(k, _)| k == "force").cloned());
    log::debug(&format!(
        "using the instance recorded in {}",
        only.display()
    ));
    instance(nl, script, &Params::new(script, &vars)?)
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

fn start(
    nl: &mut Netlink,
    inst: &dyn Instance,
    loc: &Location,
    path: &Path,
    dry_run: bool,
) -> Result<()> {
    let name = inst.script().name();
    let _lock = if dry_run { None } else { Some(loc.lock()?) };
    if let Some(st) = State::load(path)? {
        if st.phase == Phase::Started && inst.is_started(nl, &st)? {
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
    let (steps, records) = match inst.plan_start(nl)? {
        Start::Nothing(why) => {
            log::info(&why);
            if dry_run {
                println!("# {why}");
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
    let mut named = Record::new("instance");
    for (k, v) in inst.params() {
        named = named.set(&k, v);
    }
    let mut st = State::new(std::iter::once(named).chain(records).collect());
    st.save(path, name)?;
    if let Err(e) = plan::apply(nl, &NoStore, &steps) {
        // The undo has run. What it cannot see (the kernel's sysctl cascade) the restore
        // repairs; the state goes only when the host provably is as it was.
        return match restore(nl, inst, &st) {
            Ok(()) => {
                state::remove(path)?;
                Err(plainly(e))
            }
            Err(re) => Err(e.context(format!(
                "the host is not fully restored ({re:#}): state kept in {}, run `{name} stop`",
                path.display()
            ))),
        };
    }
    st.phase = Phase::Started;
    st.save(path, name)
}

/// Passes of stop: a restored sysctl can cascade (ip_forward resets every device's forwarding),
/// so stop re-plans once to put back what the cascade overwrote.
const STOP_PASSES: usize = 3;

fn stop(
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
        plan::print(&inst.plan_stop(nl, &st)?);
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
        let steps = inst.plan_stop(nl, st)?;
        if steps.is_empty() {
            return Ok(());
        }
        plan::teardown(nl, &NoStore, &steps)?;
    }
    bail!("the host still differs from the state after {STOP_PASSES} passes")
}

/// Ifindexes for the links a plan creates: above every index in use, so each step after the
/// creation can name the new link.
pub struct FreeIndexes(u32);

impl FreeIndexes {
    pub fn new(nl: &mut Netlink) -> Result<FreeIndexes> {
        let max = nl.links()?.iter().map(|l| l.index).max().unwrap_or(0);
        Ok(FreeIndexes(max))
    }

    pub fn take(&mut self) -> Result<u32> {
        self.0 = self
            .0
            .checked_add(1)
            .filter(|i| *i <= i32::MAX as u32)
            .ok_or_else(|| anyhow!("no free interface index"))?;
        Ok(self.0)
    }
}

/// Names of the links that are ports of `bridge`, except `except`.
pub fn ports(links: &[Link], bridge: u32, except: &[u32]) -> Vec<String> {
    links
        .iter()
        .filter(|l| l.master == Some(bridge) && !except.contains(&l.index))
        .map(|l| l.name.clone())
        .collect()
}

/// "up"/"down" for status lines.
pub fn updown(l: &Link) -> &'static str {
    if l.up { "up" } else { "down" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn params_refuse_unknown_keys_and_antispoof() {
        assert!(Params::new(Script::Bridge, &vars(&[("vlan", "4")])).is_err());
        assert!(Params::new(Script::Route, &vars(&[("bridge", "x")])).is_err());
        assert!(Params::new(Script::Bridge, &vars(&[("antispoof", "yes")])).is_err());
        assert!(Params::new(Script::Bridge, &vars(&[("antispoof", "no")])).is_ok());
        let p = Params::new(Script::Bridge, &vars(&[("force", "maybe")])).unwrap();
        assert!(p.yes("force").is_err());
    }

    #[test]
    fn params_last_wins_and_lists_split() {
        let p = Params::new(
            Script::Route,
            &vars(&[
                ("netdev", "eth0"),
                ("netdev", "dummy0"),
                ("gateway", "10.0.0.1/29,2001:db8::1/64"),
                ("gateway", "10.1.0.1/24"),
            ]),
        )
        .unwrap();
        assert_eq!(p.get("netdev"), Some("dummy0"));
        assert_eq!(
            p.all("gateway"),
            vec!["10.0.0.1/29", "2001:db8::1/64", "10.1.0.1/24"]
        );
        let p = Params::new(Script::Bridge, &vars(&[("netdev", "a/b")])).unwrap();
        assert!(p.ifname("netdev").is_err());
    }
}
