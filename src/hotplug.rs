//! One hotplug call, start to finish: triage → locate → read the backend → validate → lock →
//! plan → apply → report.

use anyhow::{Context, Result};

use crate::invocation::{self, Call, Command, Hotplug, Mode, Personality, Triage, TypeIf};
use crate::lock;
use crate::log;
use crate::modes::{bridge, route};
use crate::netlink::Netlink;
use crate::plan::{self, Step};
use crate::xenstore::{self, Store, XenStore};

pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What went wrong, and where to report it.
pub struct Failure {
    pub message: String,
    store: Option<XenStore>,
    backend: Option<String>,
}

impl Failure {
    fn new(
        prefix: &str,
        e: anyhow::Error,
        store: Option<XenStore>,
        backend: Option<String>,
    ) -> Failure {
        Failure {
            message: one_line(format!("{prefix}: {e:#}")),
            store,
            backend,
        }
    }

    /// hotplug-error + hotplug-status=error, as libxl reads them, and one line in the log.
    pub fn report(self) {
        let Some(backend) = &self.backend else {
            log::error(&self.message);
            return;
        };
        let write = |store: &XenStore| -> std::io::Result<()> {
            store.write(&format!("{backend}/hotplug-error"), &self.message)?;
            store.write(&format!("{backend}/hotplug-status"), "error")
        };
        let mut result = match &self.store {
            Some(s) => write(s),
            None => Err(std::io::Error::other("no connection")),
        };
        // A connection that broke or timed out gets one fresh try: libxl must hear about it.
        if result
            .as_ref()
            .is_err_and(|e| self.store.is_none() || xenstore::is_connection_error(e))
        {
            result = XenStore::open()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))
                .and_then(|s| write(&s));
        }
        match result {
            Ok(()) => log::error(&self.message),
            Err(e) => log::error(&format!(
                "{} (and it could not be reported in {backend}: {e})",
                self.message
            )),
        }
    }
}

/// The longest hotplug-error we write: a hostile 4 KiB value quoted in a message must not make
/// the report itself too big for xenstore (4096-byte payloads) or unreadable in `xl` output.
const MAX_MESSAGE: usize = 400;

fn one_line(msg: String) -> String {
    let mut m = msg.replace(['\n', '\r'], " ");
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str("...");
    }
    m
}

/// Run a hotplug personality (vif-bridge, vif-route, vif-setup). Returns the exit status.
pub fn run_personality(personality: Personality, args: &[String], env: Env) -> i32 {
    let call = match invocation::triage(personality, args, env) {
        Ok(Triage::Ignore(why)) => {
            log::debug(&why);
            return 0;
        }
        Ok(Triage::Run(c)) => c,
        Err(e) => {
            // Report where libxl looks if the caller told us where that is.
            let backend = env("XENBUS_PATH").filter(|p| invocation::parse_backend_path(p).is_ok());
            Failure::new(personality.name(), e, None, backend).report();
            return 1;
        }
    };
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

pub fn execute(call: &Call, env: Env, dry_run: bool) -> Result<(), Failure> {
    let prefix = format!("{} {} {}", call.script, call.command, early_name(call, env));
    let (id, backend) = invocation::locate(call, env).map_err(|e| {
        let b = env("XENBUS_PATH").filter(|p| invocation::parse_backend_path(p).is_ok());
        Failure::new(&prefix, e, None, b)
    })?;
    let store = match XenStore::open() {
        Ok(s) => s,
        Err(e) => return Err(Failure::new(&prefix, e, None, None)),
    };
    let keys = match xenstore::read_keys(&store, &backend, &invocation::backend_keys()) {
        Ok(k) => k,
        Err(e) => return Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    };
    let hp = match invocation::resolve(call, id, backend.clone(), env, &keys) {
        Ok(h) => h,
        Err(e) => return Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    };
    let prefix = format!("{} {} {}", call.script, call.command, hp.device());
    match act(&hp, &store, dry_run) {
        Ok(()) => {
            log::debug(&format!("{prefix}: done"));
            Ok(())
        }
        Err(e) => Err(Failure::new(&prefix, e, Some(store), Some(backend))),
    }
}

/// Plan the change for `hp`.
pub fn plan_for(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    match (hp.mode, hp.command.is_up()) {
        (Mode::Bridge, true) => bridge::online(nl, hp),
        (Mode::Bridge, false) => bridge::offline(nl, hp),
        (Mode::Route, true) => route::online(nl, hp),
        (Mode::Route, false) => route::offline(nl, hp),
    }
}

fn act(hp: &Hotplug, store: &dyn Store, dry_run: bool) -> Result<()> {
    let _lock = if dry_run {
        None
    } else {
        Some(lock::lock_device(hp.kernel_name.as_str())?)
    };
    let mut nl = Netlink::open().context("open rtnetlink")?;
    let mut steps = plan_for(&mut nl, hp)?;
    // libxl waits for this; netback connects the guest once it reads `connected`.
    if hp.command == Command::Online && hp.type_if == TypeIf::Vif {
        steps.push(Step::XsWrite {
            path: format!("{}/hotplug-status", hp.backend),
            value: "connected".into(),
        });
    }
    if dry_run {
        plan::print(&steps);
        return Ok(());
    }
    if hp.command.is_up() {
        plan::apply(&mut nl, store, &steps)
    } else {
        if steps.is_empty() {
            log::debug(&format!("{}: nothing to undo (already gone)", hp.device()));
        }
        plan::teardown(&mut nl, store, &steps)
    }
}
