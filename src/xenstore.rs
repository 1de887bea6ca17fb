//! Typed xenstore access over xenstore-rs, behind a small trait so the logic above it can be
//! unit-tested with a map.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use xenstore_rs::Xs;
use xenstore_rs::unix::XsUnix;

/// How long xenstored may take to answer one request. libxl kills the script at 40 s; a wedged
/// xenstored must give a clear error well before that.
pub const XS_TIMEOUT: Duration = Duration::from_secs(10);

pub trait Store {
    /// `Ok(None)` when the node does not exist.
    fn read(&self, path: &str) -> io::Result<Option<String>>;
    fn write(&self, path: &str, value: &str) -> io::Result<()>;
    /// `Ok(None)` when the directory does not exist.
    fn directory(&self, path: &str) -> io::Result<Option<Vec<String>>>;
}

pub struct XenStore {
    xs: XsUnix,
}

fn absent<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl XenStore {
    /// One connection per run: `XENSTORED_PATH` (or /run/xenstored/socket), else /dev/xen/xenbus.
    pub fn open() -> Result<XenStore> {
        // xenstore-rs owns its socket and sets no timeout. The kernel hands out the lowest free
        // descriptor, so probing for it just before connecting tells us which one it will use.
        // (A socket, not a file: it needs no /dev, which a broken host may lack.)
        let probe = std::os::unix::net::UnixDatagram::unbound().ok();
        let fd = probe.as_ref().map(|f| f.as_raw_fd());
        drop(probe);
        let xs = XsUnix::new().context("cannot connect to xenstored")?;
        if let Some(fd) = fd {
            set_timeouts(fd);
        }
        Ok(XenStore { xs })
    }
}

fn set_timeouts(fd: i32) {
    // SAFETY: `fd` is the descriptor XsUnix just opened and still owns; we only set options on it
    // (a wrong guess makes setsockopt fail with ENOTSOCK, which is ignored).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let tv = TimeVal::new(XS_TIMEOUT.as_secs() as _, 0);
    let _ = setsockopt(&fd, sockopt::ReceiveTimeout, &tv);
    let _ = setsockopt(&fd, sockopt::SendTimeout, &tv);
}

/// Name the connection failures; xenstored's own error replies (EAGAIN, EACCES, ...) pass as
/// they are, since they carry no OS error number.
fn timeout_named(e: io::Error) -> io::Error {
    match (e.raw_os_error(), e.kind()) {
        (Some(nix::libc::EAGAIN), _) | (Some(nix::libc::ETIMEDOUT), _) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("xenstored did not answer within {} s", XS_TIMEOUT.as_secs()),
        ),
        (_, io::ErrorKind::UnexpectedEof) | (Some(nix::libc::ECONNRESET), _) => io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "xenstored closed the connection",
        ),
        _ => e,
    }
}

/// True when the connection itself is unusable (as opposed to xenstored refusing a request).
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
    )
}

impl Store for XenStore {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        absent(self.xs.read(path).map(String::from)).map_err(timeout_named)
    }

    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        self.xs.write(path, value).map_err(timeout_named)
    }

    fn directory(&self, path: &str) -> io::Result<Option<Vec<String>>> {
        absent(
            self.xs
                .directory(path)
                .map(|v| v.into_iter().map(String::from).collect()),
        )
        .map_err(timeout_named)
    }
}

/// An in-memory store for unit tests and `--dry-run` previews.
#[derive(Default)]
pub struct MapStore(pub std::cell::RefCell<BTreeMap<String, String>>);

impl Store for MapStore {
    fn read(&self, path: &str) -> io::Result<Option<String>> {
        Ok(self.0.borrow().get(path).cloned())
    }

    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        self.0.borrow_mut().insert(path.into(), value.into());
        Ok(())
    }

    fn directory(&self, path: &str) -> io::Result<Option<Vec<String>>> {
        let prefix = format!("{path}/");
        let map = self.0.borrow();
        let mut names: Vec<String> = map
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
            .collect();
        names.dedup();
        if names.is_empty() && !map.contains_key(path) {
            return Ok(None);
        }
        Ok(Some(names))
    }
}

/// Read `keys` of directory `dir` in as few round trips as possible: one listing, then one read
/// per key that exists. A missing directory gives an empty map.
pub fn read_keys(store: &dyn Store, dir: &str, keys: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(present) = store
        .directory(dir)
        .with_context(|| format!("list xenstore directory {dir}"))?
    else {
        return Ok(out);
    };
    for key in keys {
        if present.iter().any(|p| p == key) {
            let path = format!("{dir}/{key}");
            if let Some(v) = store
                .read(&path)
                .with_context(|| format!("read xenstore {path}"))?
            {
                out.insert(key.to_string(), v);
            }
        }
    }
    Ok(out)
}
