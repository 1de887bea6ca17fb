//! `xen-vif daemon`: the vif hotplug actions without starting a process per action, for
//! `run_hotplug_scripts=0` in `/etc/xen/xl.conf` (docs/contract.md §2): libxl then runs no
//! script, netback waits for `hotplug-status` = `connected`, and this resident process watches
//! its own domain's `backend/vif` (a relative path: dom0 and a driver domain alike) and does
//! for each backend what the one-shot `vif-setup online`/`offline` would, by running that same
//! code (`hotplug::run_personality`) with the environment libxl would have given it.
//!
//! Shape: the main thread owns one watching connection and only routes events; a bounded pool
//! of workers observes a backend (its own connection), asks the pure [`decide`] what to do
//! given the keys and what was done, and does it under the same per-device and namespace locks
//! as every one-shot call. A backend has at most one worker at a time; events that arrive
//! while it is busy make that worker look again. A lost connection, and a start (after a
//! crash too), resync with a full scan: every backend's desired state against what it has.
//!
//! The emulated NIC's tap (`vifD.N-emu`, `type_if=tap`) is created by qemu, and nothing in
//! xenstore says when: the kernel's uevent for it does (the one the udev rule for `vif*-emu`
//! gets). A thread listens on a NETLINK_KOBJECT_UEVENT socket (kernel messages only) and runs
//! the one-shot `add`/`remove type_if=tap` for each, in order; at start it `add`s every tap that
//! exists (a removal missed while down needs nothing: the kernel took the tap away). The udev
//! rules step aside while the daemon runs (`lock::daemon_pid`), so no action runs twice.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::deadline::{self, Deadline};
use crate::invocation::{Command, DeviceId, Personality, TypeIf, parse_tap_name};
use crate::log;
use crate::rundir::{self, RUN_DIR};
use crate::xenstore::{self, Store, XenStore};
use crate::{hotplug, lock};

/// The watched directory, relative to this domain's own `/local/domain/<id>`.
const BACKEND_DIR: &str = "backend/vif";
const TOKEN: &str = "xen-vif-daemon";
/// The vifs this daemon has handled, rewritten as they change (`xen-vif status` reads it).
pub const HANDLED_FILE: &str = "daemon.vifs";
/// How long the idle wait lasts before the stop flag and the handled file are looked at.
const TICK: Duration = Duration::from_millis(250);
pub const DEFAULT_WORKERS: u16 = 8;

// ---------------------------------------------------------------------------------------------
// The decision: pure.

/// What a backend directory says, as far as the decision needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The backend directory exists.
    pub exists: bool,
    pub online: Option<String>,
    pub state: Option<String>,
    /// Absent before Xen 4.17; created EMPTY by libxl (pending).
    pub hotplug_status: Option<String>,
    /// `libxl/disable_udev` exists: libxl runs the scripts itself.
    pub libxl_runs_scripts: bool,
    /// This domain is not domain 0 (its `domid` key): a driver domain, where removing a
    /// closed backend's directory is this daemon's job (xl devd's otherwise), and dom0's libxl
    /// waits for it.
    pub driver_domain: bool,
}

/// What this daemon knows was done for a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Done {
    #[default]
    Nothing,
    /// Brought up (by this daemon, or found `connected`).
    Online,
    /// Taken down.
    Offline,
    /// `offline` ran and failed: not repeated, and the backend's directory is left to libxl.
    OfflineFailed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave it as it is.
    Nothing,
    /// Run `online`.
    Online,
    /// Run `offline`.
    Offline,
    /// It is up already (another process, or this daemon before a restart): remember that.
    Adopt,
    /// The backend is gone and nothing is left to undo: forget it.
    Forget,
    /// Remove the closed, taken-down backend's directory (in a driver domain).
    Remove,
}

fn number(v: &Option<String>) -> Option<u32> {
    v.as_deref().and_then(|s| s.trim().parse().ok())
}

/// What to do for a backend with keys `o`, given what was done for it.
///
/// - libxl running the scripts itself: nothing (it does it; forget a removed one).
/// - removed: `offline` once if it was brought up, else forget.
/// - `online` = 0 and `state` ≥ 5 (Closing; libxl's removal): `offline` once; then in a
///   driver domain, once `state` is 6 (Closed) and that `offline` succeeded, remove the
///   backend's directory, as xl devd does (dom0's libxl waits for it; in dom0 libxl does it).
/// - `online` = 1 and `state` 2..4 (InitWait on): `online` while `hotplug-status` is empty
///   (pending: never done, whatever this process remembers, e.g. a run that could not report);
///   `connected` is adopted; `error` is left (the failure was reported; libxl destroys the
///   domain); with no `hotplug-status` node (before Xen 4.17) once.
/// - anything else (state 1, no `online` yet, a guest-side close with `online` = 1): nothing.
pub fn decide(o: &Observed, done: Done) -> Action {
    if !o.exists {
        return match done {
            Done::Online if !o.libxl_runs_scripts => Action::Offline,
            _ => Action::Forget,
        };
    }
    if o.libxl_runs_scripts {
        return Action::Nothing;
    }
    let state = number(&o.state);
    match (number(&o.online), state) {
        (Some(0), Some(s)) if s >= 5 => match done {
            Done::Offline if o.driver_domain && s == 6 => Action::Remove,
            Done::Offline | Done::OfflineFailed => Action::Nothing,
            _ => Action::Offline,
        },
        (Some(1), Some(2..=4)) => match (o.hotplug_status.as_deref(), done) {
            (Some(""), _) => Action::Online,
            (Some("connected"), Done::Online) => Action::Nothing,
            (Some("connected"), _) => Action::Adopt,
            (Some("error"), _) => Action::Nothing,
            (_, Done::Online) => Action::Nothing,
            (_, _) => Action::Online,
        },
        _ => Action::Nothing,
    }
}

/// The backend an event path is about: `None` for the whole directory (scan everything),
/// `Some((domid, None))` for one domain's directory, `Some((domid, Some(devid)))` for one
/// backend when the key matters to [`decide`] (or the backend directory itself changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    All,
    Domain(u32),
    Device(DeviceId),
    /// A key the decision does not read (e.g. our own `hotplug-status` write).
    Ignore,
}

pub fn target(path: &str) -> Target {
    // Relative watches report relative paths; accept the absolute form too.
    let rel = match path.strip_prefix("/local/domain/") {
        Some(rest) => rest.split_once('/').map_or("", |(_, r)| r),
        None => path,
    };
    let Some(rest) = rel.strip_prefix(BACKEND_DIR) else {
        return Target::Ignore;
    };
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let id = |s: &str| s.parse::<u32>().ok().filter(|_| !s.starts_with('+'));
    match parts.as_slice() {
        [] if rest.is_empty() || rest == "/" => Target::All,
        [d] => id(d).map_or(Target::Ignore, Target::Domain),
        [d, n] | [d, n, "online" | "state"] => match (id(d), id(n)) {
            (Some(domid), Some(devid)) => Target::Device(DeviceId { domid, devid }),
            _ => Target::Ignore,
        },
        _ => Target::Ignore,
    }
}

/// A kernel uevent about an emulated NIC's tap: `add` or `remove` of `vifD.N-emu`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapEvent {
    pub command: Command,
    pub name: String,
    pub id: DeviceId,
}

/// Parse a kernel uevent (`ACTION@DEVPATH`, then `KEY=VALUE` fields, NUL-separated); `None`
/// unless it is the add or removal of a network device named like a tap.
pub fn tap_event(msg: &[u8]) -> Option<TapEvent> {
    let mut fields = msg.split(|&b| b == 0).map(String::from_utf8_lossy);
    if !fields.next()?.contains('@') {
        return None; // udevd's own messages start "libudev"
    }
    let (mut action, mut subsystem, mut interface) = (None, None, None);
    for f in fields {
        match f.split_once('=') {
            Some(("ACTION", v)) => action = Some(v.to_string()),
            Some(("SUBSYSTEM", v)) => subsystem = Some(v.to_string()),
            Some(("INTERFACE", v)) => interface = Some(v.to_string()),
            _ => {}
        }
    }
    if subsystem.as_deref() != Some("net") {
        return None;
    }
    let command = match action.as_deref() {
        Some("add") => Command::Add,
        Some("remove") => Command::Remove,
        _ => return None,
    };
    let name = interface?;
    let id = parse_tap_name(&name)?;
    Some(TapEvent { command, name, id })
}

// ---------------------------------------------------------------------------------------------
// The process.

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Debug, Default)]
struct Entry {
    done: Done,
    /// A worker has it; `again`: something changed since that worker looked.
    busy: bool,
    again: bool,
    /// The backend's `script`, kept for the offline after the directory is gone.
    script: Option<String>,
    /// The last action and whether it succeeded.
    last: Option<(&'static str, bool)>,
}

struct Shared {
    entries: Mutex<HashMap<DeviceId, Entry>>,
    queue: Mutex<VecDeque<DeviceId>>,
    wake: Condvar,
    dirty: AtomicBool,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Hand `id` to a worker, or tell the one that has it to look again.
    fn submit(&self, id: DeviceId) {
        let mut entries = locked(&self.entries);
        let e = entries.entry(id).or_default();
        if e.busy {
            e.again = true;
            return;
        }
        e.busy = true;
        drop(entries);
        locked(&self.queue).push_back(id);
        self.wake.notify_one();
    }

    fn next(&self) -> Option<DeviceId> {
        let mut q = locked(&self.queue);
        loop {
            if STOP.load(Ordering::SeqCst) {
                return None;
            }
            if let Some(id) = q.pop_front() {
                return Some(id);
            }
            q = self
                .wake
                .wait_timeout(q, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Options of `xen-vif daemon`.
pub struct Options {
    pub workers: usize,
}

/// Run until SIGTERM/SIGINT. Returns the exit status.
pub fn run(opts: &Options) -> i32 {
    // A resident process gives each action its own budget; the one-shot backstop would kill it.
    nix::unistd::alarm::cancel();
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let action = nix::sys::signal::SigAction::new(
            nix::sys::signal::SigHandler::Handler(on_stop),
            nix::sys::signal::SaFlags::empty(),
            nix::sys::signal::SigSet::empty(),
        );
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(sig, &action) };
    }
    let _lock = match take_lock() {
        Ok(l) => l,
        Err(e) => {
            log::error(&format!("daemon: {e:#}"));
            return 1;
        }
    };
    log::info(&format!(
        "daemon: started (pid {}, {} workers), watching {BACKEND_DIR}",
        std::process::id(),
        opts.workers
    ));
    let shared = Arc::new(Shared {
        entries: Mutex::new(HashMap::new()),
        queue: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        dirty: AtomicBool::new(false),
    });
    let workers: Vec<_> = (0..opts.workers.max(1))
        .filter_map(|i| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(&shared))
                .ok()
        })
        .collect();
    if workers.is_empty() {
        log::error("daemon: cannot start a worker thread");
        return 1;
    }
    let taps = match uevent_socket() {
        Ok(sock) => std::thread::Builder::new()
            .name("taps".into())
            .spawn(move || tap_loop(&sock))
            .ok(),
        Err(e) => {
            log::warn(&format!(
                "daemon: no kernel uevents ({e}): emulated NICs' taps are left to udev"
            ));
            None
        }
    };
    watch_loop(&shared);
    shared.wake.notify_all();
    for w in workers.into_iter().chain(taps) {
        let _ = w.join();
    }
    write_handled(&shared);
    log::info("daemon: stopped");
    0
}

/// The single-instance lock, with our pid in it.
fn take_lock() -> Result<nix::fcntl::Flock<std::fs::File>> {
    let path = lock::daemon_lock_path();
    let _budget = Deadline::after(Duration::from_secs(1)).enter();
    let held = lock::lock_file(&path).map_err(|e| match lock::daemon_pid() {
        Some(pid) => anyhow::anyhow!("another xen-vif daemon is running (pid {pid})"),
        None => e,
    })?;
    held.set_len(0).context("truncate the pid file")?;
    held.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
        .context("write the pid file")?;
    Ok(held)
}

/// One connection at a time: watch, route events, and on any connection error reconnect and
/// resync (the new watch's first event is for the whole directory: a full scan).
fn watch_loop(shared: &Shared) {
    let mut backoff = Duration::from_millis(50);
    let mut last_write = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        let store = {
            let _budget = Deadline::after(Duration::from_secs(5)).enter();
            XenStore::open().and_then(|s| {
                s.watch(BACKEND_DIR, TOKEN)
                    .with_context(|| format!("watch {BACKEND_DIR}"))?;
                Ok(s)
            })
        };
        let store = match store {
            Ok(s) => {
                backoff = Duration::from_millis(50);
                s
            }
            Err(e) => {
                // Said once per outage, not every two seconds of it.
                let said = backoff > Duration::from_millis(50);
                let line = format!("daemon: {e:#}; trying again");
                if said {
                    log::debug(&line)
                } else {
                    log::warn(&line)
                }
                sleep_unless_stopped(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        log::debug("daemon: watching");
        while !STOP.load(Ordering::SeqCst) {
            match store.wait_event(TICK) {
                Ok(Some(ev)) => {
                    let _budget = Deadline::after(deadline::WORK).enter();
                    if let Err(e) = route(&store, shared, &ev.path) {
                        log::warn(&format!("daemon: {e:#}"));
                        if xenstore_broken(&e) {
                            break;
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn(&format!(
                        "daemon: xenstore connection lost ({e}); reconnecting"
                    ));
                    break;
                }
            }
            if shared.dirty.load(Ordering::SeqCst) && last_write.elapsed() >= TICK {
                write_handled(shared);
                last_write = Instant::now();
            }
        }
    }
}

fn xenstore_broken(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(xenstore::is_connection_error)
}

fn sleep_unless_stopped(d: Duration) {
    let end = Instant::now() + d;
    while !STOP.load(Ordering::SeqCst) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20).min(d));
    }
}

fn ids(store: &XenStore, dir: &str) -> Result<Vec<u32>> {
    Ok(store
        .directory(dir)
        .with_context(|| format!("list {dir}"))?
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect())
}

fn route(store: &XenStore, shared: &Shared, path: &str) -> Result<()> {
    let domains = match target(path) {
        Target::Ignore => return Ok(()),
        Target::Device(id) => {
            shared.submit(id);
            return Ok(());
        }
        Target::Domain(d) => vec![d],
        Target::All => ids(store, BACKEND_DIR)?,
    };
    let whole = matches!(target(path), Target::All);
    let mut seen = Vec::new();
    for domid in domains {
        for devid in ids(store, &format!("{BACKEND_DIR}/{domid}"))? {
            seen.push(DeviceId { domid, devid });
        }
    }
    // What we know of that the listing no longer has: removed while we were not looking.
    let known: Vec<DeviceId> = locked(&shared.entries)
        .keys()
        .filter(|id| {
            !seen.contains(id)
                && (whole || matches!(target(path), Target::Domain(d) if d == id.domid))
        })
        .copied()
        .collect();
    for id in seen.into_iter().chain(known) {
        shared.submit(id);
    }
    Ok(())
}

fn worker(shared: &Shared) {
    let mut store: Option<XenStore> = None;
    while let Some(id) = shared.next() {
        handle(shared, &mut store, id);
    }
}

/// Read what [`decide`] needs, on this worker's own connection; a kept connection that broke
/// (xenstored restarted since) gets one fresh try.
fn observe(store: &mut Option<XenStore>, id: DeviceId) -> Result<(Observed, Option<String>)> {
    let kept = store.is_some();
    match observe_on(store, id) {
        Err(_) if kept => observe_on(store, id),
        r => r,
    }
}

fn observe_on(store: &mut Option<XenStore>, id: DeviceId) -> Result<(Observed, Option<String>)> {
    if store.is_none() {
        *store = Some(XenStore::open()?);
    }
    let s = store.as_ref().expect("just opened");
    let backend = id.relative_backend();
    let result = (|| -> Result<(Observed, Option<String>)> {
        let keys = xenstore::read_keys(
            s,
            &backend,
            &["online", "state", "hotplug-status", "script"],
        )?;
        let exists = !keys.is_empty() || s.directory(&backend)?.is_some();
        let [udev, domid]: [std::io::Result<Option<String>>; 2] = s
            .read_many(&["libxl/disable_udev", "domid"])
            .try_into()
            .map_err(|_| anyhow::anyhow!("xenstore: one answer per read expected"))?;
        let libxl_runs_scripts = udev?.is_some();
        let driver_domain = domid?.is_some_and(|d| d.trim() != "0");
        let o = Observed {
            exists,
            online: keys.get("online").cloned(),
            state: keys.get("state").cloned(),
            hotplug_status: keys.get("hotplug-status").cloned(),
            libxl_runs_scripts,
            driver_domain,
        };
        Ok((o, keys.get("script").cloned()))
    })();
    if result.is_err() {
        *store = None;
    }
    result
}

fn handle(shared: &Shared, store: &mut Option<XenStore>, id: DeviceId) {
    loop {
        // Cleared before looking: an event from here on makes this worker look once more.
        match locked(&shared.entries).get_mut(&id) {
            Some(e) => e.again = false,
            None => return,
        }
        let _budget = Deadline::after(deadline::WORK).enter();
        let observed = observe(store, id);
        let mut entries = locked(&shared.entries);
        let Some(e) = entries.get_mut(&id) else {
            return;
        };
        let (o, script) = match observed {
            Ok(x) => x,
            Err(err) => {
                // xenstored went away: the resync after the reconnect looks again.
                log::debug(&format!("daemon: {}: {err:#}", id.relative_backend()));
                e.busy = false;
                return;
            }
        };
        if script.is_some() {
            e.script = script;
        }
        let action = decide(&o, e.done);
        let script = e.script.clone();
        drop(entries);
        let outcome = match action {
            Action::Online | Action::Offline if STOP.load(Ordering::SeqCst) => None,
            Action::Online => Some(("online", act(id, "online", script.as_deref()))),
            Action::Offline => Some(("offline", act(id, "offline", script.as_deref()))),
            Action::Remove => {
                remove_backend(store, id);
                None
            }
            _ => None,
        };
        let mut entries = locked(&shared.entries);
        let Some(e) = entries.get_mut(&id) else {
            return;
        };
        match (action, outcome) {
            (Action::Adopt, _) => e.done = Done::Online,
            (_, Some((what, ok))) => {
                e.done = match (what, ok) {
                    ("online", _) => Done::Online,
                    (_, true) => Done::Offline,
                    (_, false) => Done::OfflineFailed,
                };
                e.last = Some((what, ok));
                shared.dirty.store(true, Ordering::SeqCst);
                // The backend may be Closed already: the removal that follows needs no event.
                if e.done == Done::Offline && o.driver_domain {
                    e.again = true;
                }
            }
            _ => {}
        }
        if e.again && !STOP.load(Ordering::SeqCst) {
            continue;
        }
        e.busy = false;
        let gone = !o.exists && matches!(action, Action::Forget | Action::Offline);
        if gone && !e.again {
            entries.remove(&id);
            shared.dirty.store(true, Ordering::SeqCst);
        }
        return;
    }
}

/// A driver domain's part of a device's removal, once it is taken down: its backend directory
/// (its own; the parents above it are dom0's, which libxl leaves to the toolstack). A failure
/// is logged; the next event looks again, and dom0's libxl removes it after its timeout.
fn remove_backend(store: &mut Option<XenStore>, id: DeviceId) {
    let backend = id.relative_backend();
    let removed = match store.as_ref() {
        Some(s) => s.rm(&backend).map_err(anyhow::Error::from),
        None => Err(anyhow::anyhow!("no connection to xenstored")),
    };
    match removed {
        Ok(()) => log::info(&format!("daemon: removed {backend} (closed, taken down)")),
        Err(e) => {
            *store = None;
            log::warn(&format!("daemon: cannot remove {backend}: {e:#}"));
        }
    }
}

/// The kernel's uevents, as udev gets them (multicast group 1).
fn uevent_socket() -> Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, socket,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, 1),
    )?;
    // A burst of devices (queues, peers) must not overflow the default buffer.
    let _ = nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::RcvBuf, &(1 << 20));
    Ok(fd)
}

/// Taps, one action at a time in the kernel's order (an add and the removal of the same tap
/// must not overtake each other; taps come once per HVM guest's NIC).
fn tap_loop(sock: &std::os::fd::OwnedFd) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::socket::{NetlinkAddr, recvfrom};
    // Those that exist already: added while nobody listened (idempotent if done).
    let existing: Vec<String> = crate::netlink::Netlink::open()
        .and_then(|mut nl| nl.links())
        .map(|links| links.into_iter().map(|l| l.name).collect())
        .unwrap_or_default();
    for name in existing {
        if let Some(id) = parse_tap_name(&name) {
            act_tap(&TapEvent {
                command: Command::Add,
                name,
                id,
            });
        }
    }
    let mut buf = vec![0u8; 8192];
    while !STOP.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(sock),
            PollFlags::POLLIN,
        )];
        let ms = u16::try_from(TICK.as_millis()).unwrap_or(u16::MAX);
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            continue;
        }
        let raw = std::os::fd::AsRawFd::as_raw_fd(sock);
        let (len, from) = match recvfrom::<NetlinkAddr>(raw, &mut buf) {
            Ok(r) => r,
            Err(nix::errno::Errno::ENOBUFS) => {
                log::warn("daemon: kernel uevents were lost (receive buffer full)");
                continue;
            }
            Err(_) => continue,
        };
        // Only the kernel (port 0) speaks for devices; anyone else is ignored.
        if from.is_none_or(|a| a.pid() != 0) {
            continue;
        }
        if let Some(ev) = tap_event(&buf[..len]) {
            act_tap(&ev);
        }
    }
}

/// `vif-setup add|remove type_if=tap` as libxl runs it for the emulated NIC.
fn act_tap(ev: &TapEvent) {
    let _budget = Deadline::after(deadline::WORK).enter();
    let backend = ev.id.relative_backend();
    let store = XenStore::open().ok();
    // libxl running the scripts runs this one too.
    let read = |path: &str| store.as_ref().and_then(|s| s.read(path).ok().flatten());
    if read("libxl/disable_udev").is_some() {
        log::debug(&format!("daemon: {}: libxl runs the scripts", ev.name));
        return;
    }
    // The mode is the vif backend's `script`; unreadable, the one-shot code reports the rest.
    let script = read(&format!("{backend}/script"));
    drop(store);
    let vars: BTreeMap<&str, String> = [
        ("XENBUS_PATH", backend),
        ("XENBUS_TYPE", "vif".to_string()),
        ("XENBUS_BASE_PATH", "backend".to_string()),
        ("INTERFACE", ev.name.clone()),
    ]
    .into_iter()
    .chain(script.map(|s| ("script", s)))
    .collect();
    let env = move |k: &str| vars.get(k).cloned();
    let args = [ev.command.to_string(), "type_if=tap".to_string()];
    hotplug::run_personality(Personality::VifSetup, &args, &env);
}

/// The one-shot action, exactly as libxl would have run `vif-setup` for this backend: its
/// triage, validation, locks, plan, undo, hooks, report and hotplug-log line.
fn act(id: DeviceId, command: &str, script: Option<&str>) -> bool {
    let vars: BTreeMap<&str, String> = [
        ("XENBUS_PATH", id.relative_backend()),
        ("XENBUS_TYPE", "vif".to_string()),
        ("XENBUS_BASE_PATH", "backend".to_string()),
        ("vif", id.kernel_name(TypeIf::Vif)),
    ]
    .into_iter()
    .chain(script.map(|s| ("script", s.to_string())))
    .collect();
    let env = move |k: &str| vars.get(k).cloned();
    let args = [command.to_string(), "type_if=vif".to_string()];
    hotplug::run_personality(Personality::VifSetup, &args, &env) == 0
}

/// Rewrite the handled file: one line per backend this daemon has acted on.
fn write_handled(shared: &Shared) {
    shared.dirty.store(false, Ordering::SeqCst);
    let mut lines: Vec<(DeviceId, String)> = locked(&shared.entries)
        .iter()
        .filter_map(|(id, e)| {
            e.last.map(|(what, ok)| {
                let line = format!(
                    "{} {} {} {what} {}\n",
                    id.domid,
                    id.devid,
                    id.kernel_name(TypeIf::Vif),
                    if ok { "ok" } else { "error" }
                );
                (*id, line)
            })
        })
        .collect();
    lines.sort_by_key(|(id, _)| (id.domid, id.devid));
    let text: String = lines.into_iter().map(|(_, l)| l).collect();
    let path = Path::new(RUN_DIR).join(HANDLED_FILE);
    let written = rundir::create_temp(&path).and_then(|(mut f, tmp)| {
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, &path)
    });
    if let Err(e) = written {
        log::debug(&format!("daemon: write {}: {e}", path.display()));
    }
}

/// One vif the daemon has handled, as `xen-vif status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handled {
    pub domid: u32,
    pub devid: u32,
    pub device: String,
    pub action: String,
    pub result: String,
}

/// The vifs a running daemon reports having handled.
pub fn handled() -> Vec<Handled> {
    let path: PathBuf = Path::new(RUN_DIR).join(HANDLED_FILE);
    let mut text = String::new();
    let read = rundir::open_existing(&path)
        .ok()
        .flatten()
        .is_some_and(|mut f| f.read_to_string(&mut text).is_ok());
    if !read {
        return Vec::new();
    }
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [d, n, dev, action, result] => Some(Handled {
                    domid: d.parse().ok()?,
                    devid: n.parse().ok()?,
                    device: dev.to_string(),
                    action: action.to_string(),
                    result: result.to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be(online: &str, state: &str, hs: Option<&str>) -> Observed {
        Observed {
            exists: true,
            online: Some(online.into()),
            state: Some(state.into()),
            hotplug_status: hs.map(String::from),
            libxl_runs_scripts: false,
            driver_domain: false,
        }
    }

    #[test]
    fn creation_as_libxl_writes_it() {
        // state 1 (Initialising): not yet.
        assert_eq!(
            decide(&be("1", "1", Some("")), Done::Nothing),
            Action::Nothing
        );
        // InitWait, pending: online, also when remembered (pending means never done).
        assert_eq!(
            decide(&be("1", "2", Some("")), Done::Nothing),
            Action::Online
        );
        assert_eq!(
            decide(&be("1", "2", Some("")), Done::Online),
            Action::Online
        );
        // Done: nothing more, however many events follow.
        assert_eq!(
            decide(&be("1", "2", Some("connected")), Done::Online),
            Action::Nothing
        );
        assert_eq!(
            decide(&be("1", "4", Some("connected")), Done::Online),
            Action::Nothing
        );
        // Found connected (a one-shot call, or this daemon before a restart): adopted.
        assert_eq!(
            decide(&be("1", "4", Some("connected")), Done::Nothing),
            Action::Adopt
        );
        // A reported failure is not retried.
        assert_eq!(
            decide(&be("1", "2", Some("error")), Done::Nothing),
            Action::Nothing
        );
        // Before Xen 4.17 there is no hotplug-status node: once.
        assert_eq!(decide(&be("1", "2", None), Done::Nothing), Action::Online);
        assert_eq!(decide(&be("1", "4", None), Done::Online), Action::Nothing);
    }

    #[test]
    fn removal_as_libxl_writes_it() {
        assert_eq!(
            decide(&be("0", "5", Some("connected")), Done::Online),
            Action::Offline
        );
        assert_eq!(
            decide(&be("0", "6", Some("connected")), Done::Offline),
            Action::Nothing
        );
        // After a restart nothing is remembered: offline is safe to repeat, so it runs.
        assert_eq!(
            decide(&be("0", "6", Some("connected")), Done::Nothing),
            Action::Offline
        );
        let gone = Observed::default();
        assert_eq!(decide(&gone, Done::Online), Action::Offline);
        assert_eq!(decide(&gone, Done::Offline), Action::Forget);
        assert_eq!(decide(&gone, Done::Nothing), Action::Forget);
        // online=0 alone (state still 4) is not yet removal; a guest-side close is not either.
        assert_eq!(
            decide(&be("0", "4", Some("connected")), Done::Online),
            Action::Nothing
        );
        assert_eq!(
            decide(&be("1", "5", Some("connected")), Done::Online),
            Action::Nothing
        );
    }

    #[test]
    fn a_driver_domain_removes_the_closed_backend_it_took_down() {
        let drv = |online, state| Observed {
            driver_domain: true,
            ..be(online, state, Some("connected"))
        };
        assert_eq!(decide(&drv("0", "5"), Done::Online), Action::Offline);
        // Closing: netback is not done with it yet.
        assert_eq!(decide(&drv("0", "5"), Done::Offline), Action::Nothing);
        assert_eq!(decide(&drv("0", "6"), Done::Offline), Action::Remove);
        assert_eq!(decide(&drv("0", "6"), Done::Online), Action::Offline);
        // A failed offline is neither repeated nor followed by the removal (libxl's, then).
        assert_eq!(decide(&drv("0", "6"), Done::OfflineFailed), Action::Nothing);
        assert_eq!(
            decide(&be("0", "6", Some("connected")), Done::OfflineFailed),
            Action::Nothing
        );
        // In dom0 libxl removes it.
        assert_eq!(
            decide(&be("0", "6", Some("connected")), Done::Offline),
            Action::Nothing
        );
        let gone = Observed {
            driver_domain: true,
            ..Observed::default()
        };
        assert_eq!(decide(&gone, Done::Offline), Action::Forget);
        assert_eq!(decide(&gone, Done::OfflineFailed), Action::Forget);
    }

    #[test]
    fn libxl_running_the_scripts_is_left_alone() {
        let mut o = be("1", "2", Some(""));
        o.libxl_runs_scripts = true;
        assert_eq!(decide(&o, Done::Nothing), Action::Nothing);
        let o = Observed {
            libxl_runs_scripts: true,
            ..Observed::default()
        };
        assert_eq!(decide(&o, Done::Online), Action::Forget);
    }

    #[test]
    fn garbage_keys_do_nothing() {
        assert_eq!(
            decide(&be("yes", "2", Some("")), Done::Nothing),
            Action::Nothing
        );
        assert_eq!(
            decide(&be("1", "x", Some("")), Done::Nothing),
            Action::Nothing
        );
        let o = Observed {
            exists: true,
            ..Observed::default()
        };
        assert_eq!(decide(&o, Done::Nothing), Action::Nothing);
    }

    #[test]
    fn tap_uevents() {
        let msg = |fields: &[&str]| fields.join("\0").into_bytes();
        let add = msg(&[
            "add@/devices/virtual/net/vif7.0-emu",
            "ACTION=add",
            "DEVPATH=/devices/virtual/net/vif7.0-emu",
            "SUBSYSTEM=net",
            "INTERFACE=vif7.0-emu",
            "IFINDEX=3",
            "SEQNUM=1",
        ]);
        assert_eq!(
            tap_event(&add),
            Some(TapEvent {
                command: Command::Add,
                name: "vif7.0-emu".into(),
                id: DeviceId { domid: 7, devid: 0 }
            })
        );
        let remove = msg(&[
            "remove@/devices/virtual/net/vif7.1-emu",
            "ACTION=remove",
            "SUBSYSTEM=net",
            "INTERFACE=vif7.1-emu",
        ]);
        assert_eq!(tap_event(&remove).map(|e| e.command), Some(Command::Remove));
        for other in [
            // a queue of the tap, a netback vif, an ordinary link, a rename, udevd's format
            msg(&["add@/x/queues/rx-0", "ACTION=add", "SUBSYSTEM=queues"]),
            msg(&["add@/x", "ACTION=add", "SUBSYSTEM=net", "INTERFACE=vif7.0"]),
            msg(&["add@/x", "ACTION=add", "SUBSYSTEM=net", "INTERFACE=eth0"]),
            msg(&[
                "move@/x",
                "ACTION=move",
                "SUBSYSTEM=net",
                "INTERFACE=vif7.0-emu",
            ]),
            msg(&[
                "libudev",
                "ACTION=add",
                "SUBSYSTEM=net",
                "INTERFACE=vif7.0-emu",
            ]),
            Vec::new(),
        ] {
            assert_eq!(
                tap_event(&other),
                None,
                "{:?}",
                String::from_utf8_lossy(&other)
            );
        }
    }

    #[test]
    fn event_targets() {
        let dev = |domid, devid| Target::Device(DeviceId { domid, devid });
        assert_eq!(target("backend/vif"), Target::All);
        assert_eq!(target("backend/vif/5"), Target::Domain(5));
        assert_eq!(target("backend/vif/5/0"), dev(5, 0));
        assert_eq!(target("backend/vif/5/0/state"), dev(5, 0));
        assert_eq!(target("backend/vif/5/0/online"), dev(5, 0));
        assert_eq!(target("/local/domain/3/backend/vif/5/1/state"), dev(5, 1));
        for ignored in [
            "backend/vif/5/0/hotplug-status",
            "backend/vif/5/0/bridge",
            "backend/vif/x",
            "backend/vif/5/y/state",
            "backend/vifx",
            "backend/vbd/5/0/state",
            "backend/vif/+5/0/state",
        ] {
            assert_eq!(target(ignored), Target::Ignore, "{ignored}");
        }
    }
}
