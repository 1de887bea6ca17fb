//! Serialisation under /run/xen-vif. Online and offline of the same vif (libxl destroying a
//! domain while it is still being created) must not interleave: one lock file per device,
//! never one global lock, so different vifs proceed in parallel. Network scripts (start/stop)
//! take their namespace's lock exclusively; vif hotplugs share it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::rundir::{self, RUN_DIR};
use crate::{deadline, log};

/// The locks a vif hotplug holds: its device's (exclusive), and its network namespace's
/// network-script lock (shared), so network-bridge/network-route start and stop, which take
/// that one exclusively, never run while a vif is half attached, and the other way round.
pub struct DeviceLock(
    #[allow(dead_code)] Option<Flock<File>>,
    #[allow(dead_code)] Option<Flock<File>>,
);

/// Where this network namespace's network-script state and lock live: `base` for the host's
/// namespace, `base/netns-<inode>` for any other (what a file records — ifindexes, names —
/// only means something in its own namespace).
pub fn namespace_dir(base: &Path) -> PathBuf {
    let inode = |p: &str| nix::sys::stat::stat(p).ok().map(|s| s.st_ino);
    // The initial namespace's inode on kernels that fix it (PROC_NET_INIT_INO), for when pid
    // 1's namespace cannot be read.
    const INIT_NETNS_INODE: u64 = 0xEFFF_FFF9;
    let host = inode("/proc/1/ns/net").unwrap_or(INIT_NETNS_INODE);
    // Unknown namespaces get a subdirectory too: a longer path, never a shared one.
    match inode("/proc/self/ns/net") {
        Some(o) if o != host => base.join(format!("netns-{o}")),
        _ => base.to_path_buf(),
    }
}

/// The network-script lock of this namespace.
pub fn network_lock_path() -> PathBuf {
    network_lock_in(&namespace_dir(Path::new(RUN_DIR)))
}

/// The network-script lock in the state directory `dir` (a namespace's, see `namespace_dir`):
/// network scripts hold it exclusively for start and stop, vif actions shared.
pub fn network_lock_in(dir: &Path) -> PathBuf {
    dir.join("network-scripts.lock")
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    rundir::open_or_create(path)
}

/// A lock that is a safeguard, not a precondition: if /run is unusable (read-only, full) the
/// hotplug goes on without it, with a warning. A lock file that fails the run directory's
/// checks (a planted symlink, someone else's file) is not "unusable": that fails the run.
fn safeguard(path: &Path, arg: FlockArg) -> anyhow::Result<Option<Flock<File>>> {
    let shown = path.display().to_string();
    let file = match open_lock(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(anyhow::Error::new(e).context(format!("lock {shown}")));
        }
        Err(e) => {
            log::warn(&format!(
                "cannot open lock {shown} ({e}); going on without it"
            ));
            return Ok(None);
        }
    };
    match wait(file, &shown, arg)? {
        Ok(l) => Ok(Some(l)),
        Err(e) => {
            log::warn(&format!("cannot lock {shown} ({e}); going on without it"));
            Ok(None)
        }
    }
}

/// Take the locks for device `name` (a validated interface name).
pub fn lock_device(name: &str) -> anyhow::Result<DeviceLock> {
    let device = safeguard(
        &Path::new(RUN_DIR).join(format!("{name}.lock")),
        FlockArg::LockExclusiveNonblock,
    )?;
    let network = safeguard(&network_lock_path(), FlockArg::LockSharedNonblock)?;
    Ok(DeviceLock(device, network))
}

/// An exclusive lock on `path` (created if needed) where the lock is a precondition, not a
/// safeguard: every failure is an error.
pub fn lock_file(path: &Path) -> anyhow::Result<Flock<File>> {
    let shown = path.display().to_string();
    let file = open_lock(path).with_context(|| format!("open lock {shown}"))?;
    wait(file, &shown, FlockArg::LockExclusiveNonblock)?
        .map_err(|e| anyhow::anyhow!("cannot lock {shown}: {e}"))
}

/// Wait while another process holds the lock, within the run's deadline; `Ok(Err(errno))` for
/// any other locking failure, so each caller decides what that means.
fn wait(mut file: File, path: &str, arg: FlockArg) -> anyhow::Result<Result<Flock<File>, Errno>> {
    loop {
        match Flock::lock(file, arg) {
            Ok(l) => return Ok(Ok(l)),
            Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                deadline::check(&format!("another xen-vif to release {path}"))?;
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, e)) => return Ok(Err(e)),
        }
    }
}

/// Held exclusively, with its pid in it, while `xen-vif daemon` runs.
pub fn daemon_lock_path() -> PathBuf {
    Path::new(RUN_DIR).join("daemon.pid")
}

/// The pid of the running `xen-vif daemon`, if one holds its lock (0 if it wrote none yet).
pub fn daemon_pid() -> Option<u32> {
    use std::io::Read;
    let path = daemon_lock_path();
    let file = rundir::open_existing(&path).ok()??;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            Some(s.trim().parse().unwrap_or(0))
        }
        _ => None,
    }
}
