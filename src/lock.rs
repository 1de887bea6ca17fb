//! Per-device serialisation: online and offline of the same vif (libxl destroying a domain
//! while it is still being created) must not interleave. One lock file per device under /run,
//! never one global lock, so different vifs proceed in parallel.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::log;

pub const LOCK_DIR: &str = "/run/xen-vif";
/// Well under libxl's 40 s: a stuck holder yields a clear error, not a kill.
const LOCK_WAIT: Duration = Duration::from_secs(20);

pub struct DeviceLock(#[allow(dead_code)] Option<Flock<File>>);

/// Take the lock for `name` (a validated interface name). If /run is unusable the hotplug goes
/// on unlocked, with a warning: serialisation is a safeguard, not a precondition.
pub fn lock_device(name: &str) -> anyhow::Result<DeviceLock> {
    let path = format!("{LOCK_DIR}/{name}.lock");
    let file = fs::create_dir_all(LOCK_DIR).and_then(|_| {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
    });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            log::warn(&format!(
                "cannot open lock {path} ({e}); going on without it"
            ));
            return Ok(DeviceLock(None));
        }
    };
    match wait_exclusive(file, &path)? {
        Ok(l) => Ok(DeviceLock(Some(l))),
        Err(e) => {
            log::warn(&format!("cannot lock {path} ({e}); going on without it"));
            Ok(DeviceLock(None))
        }
    }
}

/// An exclusive lock on `path` (created if needed) where the lock is a precondition, not a
/// safeguard: every failure is an error.
pub fn lock_file(path: &Path) -> anyhow::Result<Flock<File>> {
    let shown = path.display().to_string();
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("open lock {shown}"))?;
    wait_exclusive(file, &shown)?.map_err(|e| anyhow::anyhow!("cannot lock {shown}: {e}"))
}

/// Wait, bounded, while another process holds the lock; `Ok(Err(errno))` for any other
/// locking failure, so each caller decides what that means.
fn wait_exclusive(mut file: File, path: &str) -> anyhow::Result<Result<Flock<File>, Errno>> {
    let start = Instant::now();
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
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
