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
//! plan, and marks the state complete. The state file is the one undo authority: a failed start
//! is put back by the same `restore` that `stop` runs. `stop` recomputes, from the state
//! file and the kernel, what puts the host back — so it works from a new process, after a crash
//! and after a start that was interrupted half-way. This module is the boundary: it reads argv
//! and the environment; the scripts get typed parameters.
//!
//! `params` (the call's words), `instance` (the `Instance` trait and which instance is meant),
//! `txn` (the transaction), `state` (its file), `observed` (the host read once; the planners
//! are pure over it), one file per set-up: `nic_bridge`, `trunk` (both chosen in `bridge`),
//! `route`, `nat`, `prebuilt`.

pub mod bridge;
pub mod instance;
pub mod nat;
pub mod nic_bridge;
pub mod observed;
pub mod params;
pub mod prebuilt;
pub mod route;
pub mod state;
pub mod trunk;
pub mod txn;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::invocation::{Personality, Words};
use crate::log;
use crate::netlink::Netlink;
pub use instance::{Instance, Start};
pub use params::{Action, Params, Script};
use state::Location;

/// Run as the personality `network-bridge`, `network-route`, `network-nat` or
/// `network-prebuilt` with xend's argv: `start|stop|status [k=v ...]`. Returns the exit status.
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
    let Some(inst) = instance::resolve(&mut nl, script, action, &params, loc)? else {
        log::info("bridge=null: nothing to do");
        return Ok(0);
    };
    let path = loc.state_file(script.name(), &inst.key());
    match action {
        Action::Status => txn::status(&mut nl, inst.as_ref(), &path).map(|()| 0),
        Action::Start => txn::start(&mut nl, inst.as_ref(), loc, &path, dry_run).map(|()| 0),
        Action::Stop => txn::stop(&mut nl, inst.as_ref(), loc, &path, dry_run).map(|()| 0),
    }
}
