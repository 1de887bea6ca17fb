//! Serialisation under /run/xen-vif. Online and offline of the same vif (libxl destroying a
//! domain while it is still being created) must not interleave: one lock file per device,
//! never one global lock, so different vifs proceed in parallel. Network scripts (start/stop)
//! take their namespace's lock exclusively; vif hotplugs share it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::log;

pub const LOCK_DIR: &str = "/run/xen-vif";
/// Well under libxl's 40 s: a stuck holder yields a clear error, not a kill.
const LOCK_WAIT: Duration = Duration::from_secs(20);

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
    namespace_dir(Path::new(LOCK_DIR)).join("network-scripts.lock")
}

fn open_lock(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
    };
    // The directory exists after the first call on a host: try the file first.
    match (open(), path.parent()) {
        (Err(e), Some(dir)) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            open()
        }
        (result, _) => result,
    }
}

/// A lock that is a safeguard, not a precondition: if /run is unusable the hotplug goes on
/// without it, with a warning.
fn safeguard(path: &Path, arg: FlockArg) -> anyhow::Result<Option<Flock<File>>> {
    let shown = path.display().to_string();
    let file = match open_lock(path) {
        Ok(f) => f,
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
        &Path::new(LOCK_DIR).join(format!("{name}.lock")),
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

/// Wait, bounded, while another process holds the lock; `Ok(Err(errno))` for any other
/// locking failure, so each caller decides what that means.
fn wait(mut file: File, path: &str, arg: FlockArg) -> anyhow::Result<Result<Flock<File>, Errno>> {
    let start = Instant::now();
    loop {
        match Flock::lock(file, arg) {
            Ok(l) => return Ok(Ok(l)),
            Err((f, Errno::EWOULDBLOCK)) | Err((f, Errno::EINTR)) => {
                if start.elapsed() > LOCK_WAIT {
                    anyhow::bail!(
                        "another xen-vif still holds {path} after {} s",
                        LOCK_WAIT.as_secs()
                    );
                }
                file = f;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((_, e)) => return Ok(Err(e)),
        }
    }
}
