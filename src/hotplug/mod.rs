//! One hotplug call, start to finish: triage → the udev gate (`udev`) → locate → read the
//! backend → validate → lock → plan → apply → report (`report`, the only writer of
//! `hotplug-error`). A bad configuration file fails an online and tears down with the stock
//! defaults (`execute`).

mod report;
mod udev;

pub use report::{Failure, one_line};

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::{self, Config};
use crate::invocation::{self, Call, Command, Hotplug, Personality, Triage, TypeIf};
use crate::lock;
use crate::log;
use crate::modes;
use crate::netlink::Netlink;
use crate::plan::{self, Step};
use crate::xenstore::{self, Store, XenStore};
use crate::{hooks, hotplug_log};

pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The environment with the configuration's defaults under it: the file's, or the stock ones
/// when the file is bad (then `execute` fails an online and tears down with stock defaults).
pub fn layered<'a>(env: Env<'a>) -> impl Fn(&str) -> Option<String> + 'a {
    config::layer(config::current().as_ref().unwrap_or(config::stock()), env)
}

/// Run a hotplug personality (vif-bridge, vif-route, vif-setup). Returns the exit status.
pub fn run_personality(personality: Personality, args: &[String], env: Env) -> i32 {
    let layered = layered(env);
    let env: Env = &layered;
    let call = match invocation::triage(personality, args, env) {
        Ok(Triage::Ignore(why)) => {
            log::debug(&why);
            return 0;
        }
        Ok(Triage::Run(c)) => c,
        Err(e) => {
            // A word that is no hotplug request (an unknown command or interface type) is the
            // caller's mistake, not the device's: log it and leave the device's status alone,
            // as the stock scripts do. Otherwise report where libxl looks.
            let backend = env("XENBUS_PATH")
                .filter(|p| invocation::parse_backend_path(p).is_ok())
                .filter(|_| invocation::is_hotplug_request(args, env));
            Failure::new(personality.name(), e, None, backend).report();
            return 1;
        }
    };
    if let Some(why) = udev::someone_else_acts(env) {
        log::debug(&why);
        return 0;
    }
    match execute(&call, env, false) {
        Ok(()) => 0,
        Err(f) => {
            f.report();
            1
        }
    }
}

/// The device name for messages before the backend has been read.
fn early_name(call: &Call, env: Env) -> String {
    let var = if call.type_if == TypeIf::Tap {
        "INTERFACE"
    } else {
        "vif"
    };
    env(var)
        .filter(|v| crate::ifname::IfName::new(v).is_ok())
        .unwrap_or_else(|| "(unknown device)".into())
}

/// Do `call` and log it (one line in the hotplug log, unless a dry run). `env` has the
/// configuration's defaults under it already ([`layered`]), as triage saw it.
pub fn execute(call: &Call, env: Env, dry_run: bool) -> Result<(), Failure> {
    let started = Instant::now();
    let stock = config::stock();
    let (cfg, result) = match config::current() {
        Ok(cfg) => (cfg, execute_with(call, env, dry_run, cfg)),
        // A bad file fails every online/add; teardown still runs, with the stock defaults.
        Err(e) if call.command.is_up() => {
            let b = env("XENBUS_PATH").filter(|p| invocation::parse_backend_path(p).is_ok());
            let prefix = format!("{} {} {}", call.script, call.command, early_name(call, env));
            let e = anyhow::anyhow!("{e}");
            (stock, Err(Failure::new(&prefix, e, None, b)))
        }
        Err(e) => {
            log::error(&format!("{e} (tearing down with the stock defaults)"));
            (stock, execute_with(call, env, dry_run, stock))
        }
    };
    if let (Some(path), false) = (&cfg.log_file, dry_run) {
        let id = invocation::locate(call, env).ok().map(|(id, _)| id);
        let device = id.map_or_else(|| "-".to_string(), |i| i.kernel_name(call.type_if));
        hotplug_log::append(
            path,
            &hotplug_log::Entry {
                script: call.script,
                call,
                domid: id.map(|i| i.domid),
                devid: id.map(|i| i.devid),
                device: &device,
                error: result.as_ref().err().map(|f| f.message.as_str()),
                duration: started.elapsed(),
            },
        );
    }
    result
}

fn execute_with(call: &Call, env: Env, dry_run: bool, cfg: &Config) -> Result<(), Failure> {
    let prefix = format!("{} {} {}", call.script, call.command, early_name(call, env));
    let (id, backend) = invocation::locate(call, env).map_err(|e| {
        let b = env("XENBUS_PATH").filter(|p| invocation::parse_backend_path(p).is_ok());
        Failure::new(&prefix, e, None, b)
    })?;
    let store = match XenStore::open() {
        Ok(s) => s,
        Err(e) => return Err(Failure::new(&prefix, e, None, None)),
    };
    let keys = match read_backend(&store, &backend, call) {
        Ok(k) => k,
        Err(e) => return Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    };
    let hp = match invocation::resolve(call, id, backend.clone(), env, &keys) {
        Ok(h) => Hotplug {
            antispoof: cfg.antispoof,
            ..h
        },
        Err(e) => return Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    };
    let prefix = format!("{} {} {}", call.script, call.command, hp.device());
    match act(&hp, &store, dry_run, cfg) {
        Ok(()) => {
            log::debug(&format!("{prefix}: done"));
            Ok(())
        }
        Err(e) => Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    }
}

/// The backend's keys for `call`. Teardown needs only the identity keys: for offline/remove a
/// key that cannot be read (not UTF-8, say) is logged and left out, rather than leaving the
/// device up; `invocation::resolve` treats values that do not validate the same way.
fn read_backend(store: &XenStore, backend: &str, call: &Call) -> Result<BTreeMap<String, String>> {
    let keys = invocation::backend_keys(Some(call.mode));
    let e = match xenstore::read_keys(store, backend, &keys) {
        Ok(k) => return Ok(k),
        Err(e) if call.command.is_up() => return Err(e),
        Err(e) => e,
    };
    let mut out = BTreeMap::new();
    for key in keys {
        let path = format!("{backend}/{key}");
        match store.read(&path) {
            Ok(Some(v)) => {
                out.insert(key.to_string(), v);
            }
            Ok(None) => {}
            Err(ke)
                if !invocation::IDENTITY_KEYS.contains(&key)
                    && !xenstore::is_connection_error(&ke) =>
            {
                log::warn(&format!("ignoring {path} for {}: {ke}", call.command));
            }
            Err(_) => return Err(e),
        }
    }
    Ok(out)
}

fn act(hp: &Hotplug, store: &dyn Store, dry_run: bool, cfg: &Config) -> Result<()> {
    let _lock = if dry_run {
        None
    } else {
        Some(lock::lock_device(hp.kernel_name.as_str())?)
    };
    let mut nl = Netlink::open().context("open rtnetlink")?;
    // Observed once: the plan and the hooks' environment both come from it.
    let observed = modes::observe(&mut nl, store, hp)?;
    let mut steps = modes::plan_observed(&observed, hp)?;
    // libxl waits for this; netback connects the guest once it reads `connected`.
    let connected =
        (hp.command == Command::Online && hp.type_if == TypeIf::Vif).then(|| Step::XsWrite {
            path: format!("{}/hotplug-status", hp.backend),
            value: "connected".into(),
        });
    if dry_run {
        steps.extend(connected);
        return crate::output::print(plan::render(&steps).as_bytes()).map_err(anyhow::Error::from);
    }
    if !hp.command.is_up() {
        if steps.is_empty() {
            log::debug(&format!("{}: nothing to undo (already gone)", hp.device()));
        }
        plan::teardown(&mut nl, store, &steps)?;
        return hooks::run_after(cfg.hook_dir.as_deref(), &observed, hp);
    }
    let applied = plan::apply(&mut nl, store, &steps)?;
    // As stock: the hooks run after the change and before `connected` is written. If either
    // fails, this run's changes are taken back like any other failure.
    let finish =
        hooks::run_after(cfg.hook_dir.as_deref(), &observed, hp).and_then(|()| match connected {
            Some(step) => plan::apply(&mut nl, store, &[step]).map(drop),
            None => Ok(()),
        });
    match finish {
        Ok(()) => Ok(()),
        Err(e) => Err(applied.undo(&mut nl, store, e)),
    }
}
