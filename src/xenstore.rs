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
    /// The domain owning node `path` (the first of its permissions); `Ok(None)` when the node
    /// does not exist.
    fn owner(&self, _path: &str) -> io::Result<Option<u32>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this store does not know permissions",
        ))
    }
}

pub struct XenStore {
    xs: XsUnix,
    /// A second connection for the requests xenstore-rs does not offer (GET_PERMS), opened on
    /// first use.
    raw: std::cell::RefCell<Option<raw::Conn>>,
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
        Ok(XenStore {
            xs,
            raw: Default::default(),
        })
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

    fn owner(&self, path: &str) -> io::Result<Option<u32>> {
        let mut raw = self.raw.borrow_mut();
        if raw.is_none() {
            *raw = Some(raw::Conn::open()?);
        }
        let conn = raw.as_mut().expect("opened above");
        let reply = absent(conn.request(raw::GET_PERMS, path))?;
        reply.map(|r| raw::owner_of(&r)).transpose()
    }
}

/// The xenstore wire protocol (xen/include/public/io/xs_wire.h), for the few requests
/// xenstore-rs lacks: a 16-byte header (type, request id, transaction id, length; native
/// endianness), then the payload. Every wait draws on the run's deadline.
mod raw {
    use std::fs::File;
    use std::io::{self, Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    pub const GET_PERMS: u32 = 3;
    const ERROR: u32 = 16;

    pub enum Conn {
        Socket(UnixStream),
        Device(File),
    }

    impl Conn {
        /// As xenstore-rs connects: `XENSTORED_PATH` (or /run/xenstored/socket), else the
        /// xenbus device.
        pub fn open() -> io::Result<Conn> {
            let path = std::env::var("XENSTORED_PATH")
                .unwrap_or_else(|_| "/run/xenstored/socket".to_string());
            if let Ok(s) = UnixStream::connect(path) {
                return Ok(Conn::Socket(s));
            }
            let dev = File::options()
                .read(true)
                .write(true)
                .open("/dev/xen/xenbus")?;
            Ok(Conn::Device(dev))
        }

        fn wait(&self, flags: PollFlags) -> io::Result<()> {
            let fd = match self {
                Conn::Socket(s) => s.as_fd(),
                Conn::Device(f) => f.as_fd(),
            };
            loop {
                crate::deadline::check("xenstored to answer")
                    .map_err(|e| io::Error::new(io::ErrorKind::TimedOut, e.to_string()))?;
                let ms = crate::deadline::current().poll_millis();
                let mut fds = [PollFd::new(fd, flags)];
                match poll(
                    &mut fds,
                    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
                ) {
                    Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                    Ok(_) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
        }

        fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
            while !buf.is_empty() {
                self.wait(PollFlags::POLLIN)?;
                let n = match self {
                    Conn::Socket(s) => s.read(buf),
                    Conn::Device(f) => f.read(buf),
                };
                match n {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "xenstored closed the connection",
                        ));
                    }
                    Ok(n) => buf = &mut buf[n..],
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }

        /// One request with a path argument; the reply's payload.
        pub fn request(&mut self, ty: u32, path: &str) -> io::Result<Vec<u8>> {
            let mut msg = Vec::with_capacity(16 + path.len() + 1);
            let len = u32::try_from(path.len() + 1).map_err(|_| io::ErrorKind::InvalidInput)?;
            for v in [ty, 0, 0, len] {
                msg.extend_from_slice(&v.to_ne_bytes());
            }
            msg.extend_from_slice(path.as_bytes());
            msg.push(0);
            self.wait(PollFlags::POLLOUT)?;
            // One write: the xenbus device takes a message only whole.
            match self {
                Conn::Socket(s) => s.write_all(&msg)?,
                Conn::Device(f) => f.write_all(&msg)?,
            }
            let mut header = [0u8; 16];
            self.read_exact(&mut header)?;
            let field = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
            let (rty, rlen) = (field(0), field(3) as usize);
            if rlen > 4096 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "xenstore reply too long",
                ));
            }
            let mut payload = vec![0u8; rlen];
            self.read_exact(&mut payload)?;
            if rty == ERROR {
                let name = String::from_utf8_lossy(&payload);
                let name = name.trim_end_matches('\0');
                let kind = match name {
                    "ENOENT" => io::ErrorKind::NotFound,
                    "EACCES" => io::ErrorKind::PermissionDenied,
                    _ => io::ErrorKind::Other,
                };
                return Err(io::Error::new(kind, format!("xenstored: {name}")));
            }
            if rty != ty {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("xenstored answered request type {ty} with type {rty}"),
                ));
            }
            Ok(payload)
        }
    }

    /// The owner in a GET_PERMS reply: the domain of the first permission (`n0`, `r5`, ...).
    pub fn owner_of(reply: &[u8]) -> io::Result<u32> {
        let first = reply.split(|b| *b == 0).next().unwrap_or_default();
        std::str::from_utf8(first.get(1..).unwrap_or_default())
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "unreadable permissions from xenstored: {:?}",
                        String::from_utf8_lossy(reply)
                    ),
                )
            })
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_owner_is_the_first_permission() {
            assert_eq!(super::owner_of(b"n0\0r5\0").unwrap(), 0);
            assert_eq!(super::owner_of(b"b7\0").unwrap(), 7);
            assert!(super::owner_of(b"").is_err());
        }
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
