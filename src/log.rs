//! Logging to syslog (facility daemon, ident = the Xen script name) and stderr. Logging can
//! never fail or stall a hotplug: a missing /dev/log is silently skipped, syslog is only
//! connected once something is logged at the level in force, and its socket never blocks: a
//! syslog daemon that stopped reading costs the lines it did not take, not the run.

use std::io::Write;
use std::sync::Mutex;

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

struct State {
    ident: &'static str,
    syslog_level: Level,
    stderr_level: Level,
    syslog: Option<Logger<LoggerBackend, Formatter3164>>,
    syslog_tried: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    ident: "xen-vif",
    syslog_level: Level::Info,
    stderr_level: Level::Warn,
    syslog: None,
    syslog_tried: false,
});

/// `verbose` (or `XEN_VIF_LOG=debug`) sends debug detail to both syslog and stderr.
pub fn init(ident: &'static str, verbose: bool) {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    s.ident = ident;
    if verbose {
        s.syslog_level = Level::Debug;
        s.stderr_level = Level::Debug;
    }
}

pub fn log(level: Level, msg: &str) {
    let mut s = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if level <= s.stderr_level {
        let _ = writeln!(std::io::stderr(), "{}: {msg}", s.ident);
    }
    if level > s.syslog_level {
        return;
    }
    if !s.syslog_tried {
        s.syslog_tried = true;
        // /dev/log only: Linux has no other syslog socket, and probing the BSD paths costs two
        // failed connects on every call of a host without syslog.
        s.syslog = syslog::unix_custom(
            Formatter3164 {
                facility: Facility::LOG_DAEMON,
                hostname: None,
                process: s.ident.to_string(),
                pid: std::process::id(),
            },
            "/dev/log",
        )
        .ok()
        .filter(|l| nonblocking(&l.backend));
    }
    if let Some(l) = s.syslog.as_mut() {
        let sent = match level {
            Level::Error => l.err(msg),
            Level::Warn => l.warning(msg),
            Level::Info => l.info(msg),
            Level::Debug => l.debug(msg),
        };
        // A datagram that did not fit is dropped on its own; a stream that took half a line
        // is out of step, so it is given up for the rest of the run.
        if sent.is_err() && matches!(l.backend, LoggerBackend::UnixStream(_)) {
            s.syslog = None;
        }
    }
}

/// Make the syslog socket non-blocking; a socket that cannot be is not used.
fn nonblocking(backend: &LoggerBackend) -> bool {
    match backend {
        LoggerBackend::Unix(d) => d.set_nonblocking(true).is_ok(),
        LoggerBackend::UnixStream(w) => w.get_ref().set_nonblocking(true).is_ok(),
        _ => false,
    }
}

pub fn error(msg: &str) {
    log(Level::Error, msg)
}
pub fn warn(msg: &str) {
    log(Level::Warn, msg)
}
pub fn info(msg: &str) {
    log(Level::Info, msg)
}
pub fn debug(msg: &str) {
    log(Level::Debug, msg)
}
