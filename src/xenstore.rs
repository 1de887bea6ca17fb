//! Typed xenstore access. xen-vif owns the transport (the xenstored socket, or the xenbus device
//! when there is no socket) and the wire format (xs_wire.h: a header of four native-endian u32
//! {type, req_id, tx_id, len}, then `len` payload bytes), so that every request on either
//! transport is bounded by the run's deadline (`crate::deadline`), enforced with poll(2): a
//! xenstored that never answers, or trickles one byte at a time, gives a clear error in time,
//! never a hang. (xenstore-rs keeps its wire module private and owns its descriptor, which left
//! no way to bound a request on the xenbus device.)
//!
//! The `Store` trait is what the executor and the reporting need, so the logic above it can be
//! tested against the test xenstored or a stub.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
use nix::sys::stat::Mode;

use crate::deadline;

/// Where xenstored listens unless `XENSTORED_PATH` says otherwise (as the C library does).
pub const SOCKET_PATH: &str = "/run/xenstored/socket";
/// The kernel's xenbus device, for a domain with no local xenstored (a driver domain).
pub const XENBUS_DEVICE_PATH: &str = "/dev/xen/xenbus";
/// The largest payload either side may send (XENSTORE_PAYLOAD_MAX).
pub const PAYLOAD_MAX: usize = 4096;
/// A message that has begun to arrive must be complete within this (a resident process's wait
/// for events has no run deadline to draw on).
const MESSAGE_BUDGET: std::time::Duration = std::time::Duration::from_secs(5);

/// The message types xen-vif sends or must recognise (xs_wire.h `enum xsd_sockmsg_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Op {
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    Write = 11,
    Rm = 13,
    WatchEvent = 15,
    Error = 16,
}

/// A request on the wire: the header, then each part NUL-terminated (a WRITE's value is not:
/// its length is the rest of the payload).
fn encode(op: Op, req_id: u32, parts: &[&str], trailing_nul: bool) -> io::Result<Vec<u8>> {
    let mut payload: Vec<u8> = Vec::new();
    for p in parts {
        payload.extend_from_slice(p.as_bytes());
        payload.push(0);
    }
    if !trailing_nul {
        payload.pop();
    }
    if payload.len() > PAYLOAD_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "xenstore request of {} bytes (at most {PAYLOAD_MAX})",
                payload.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(16 + payload.len());
    for word in [op as u32, req_id, 0, payload.len() as u32] {
        out.extend_from_slice(&word.to_ne_bytes());
    }
    out.extend_from_slice(&payload);
    Ok(out)
}

/// xenstored's error reply names an errno; keep the kinds callers branch on.
fn error_reply(payload: &[u8]) -> io::Error {
    let name = String::from_utf8_lossy(payload.strip_suffix(&[0]).unwrap_or(payload)).into_owned();
    let kind = match name.as_str() {
        "ENOENT" => io::ErrorKind::NotFound,
        "EACCES" | "EPERM" | "EROFS" => io::ErrorKind::PermissionDenied,
        "EEXIST" | "EISDIR" | "EBUSY" => io::ErrorKind::AlreadyExists,
        "EINVAL" | "ENOTEMPTY" => io::ErrorKind::InvalidInput,
        "E2BIG" => io::ErrorKind::InvalidData,
        "EAGAIN" => io::ErrorKind::WouldBlock,
        "ENOSYS" => io::ErrorKind::Unsupported,
        "ENOMEM" | "ENOSPC" | "EQUOTA" => io::ErrorKind::OutOfMemory,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("xenstored refused: {name}"))
}

/// A watch event's payload: the path, then the token.
fn watch_event(payload: &[u8]) -> Option<WatchEvent> {
    let mut it = payload
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned());
    Some(WatchEvent {
        path: it.next()?,
        token: it.next()?,
    })
}

pub trait Store {
    /// `Ok(None)` when the node does not exist.
    fn read(&self, path: &str) -> io::Result<Option<String>>;
    fn write(&self, path: &str, value: &str) -> io::Result<()>;
    /// `Ok(None)` when the directory does not exist.
    fn directory(&self, path: &str) -> io::Result<Option<Vec<String>>>;
    /// [`Store::read`] of each path, in order; a store that can overlaps the round trips.
    fn read_many(&self, paths: &[&str]) -> Vec<io::Result<Option<String>>> {
        paths.iter().map(|p| self.read(p)).collect()
    }
    /// The domain that owns node `path`; `Ok(None)` when there is no such node. A store that
    /// knows no owners says so rather than guess.
    fn owner(&self, _path: &str) -> io::Result<Option<u32>> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this store does not know node owners",
        ))
    }
}

/// A node's permissions as xenstored lists them: the first entry names the owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u32,
    /// `n` none, `r` read, `w` write, `b` both.
    pub access: char,
}

/// A watch fired: the node that changed and the token the watch was set with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    pub path: String,
    pub token: String,
}

/// One connection to xenstored.
pub struct XenStore {
    conn: ManuallyDrop<RefCell<Conn>>,
}

struct Conn {
    fd: OwnedFd,
    next_id: u32,
    /// Watch events that arrived while waiting for a reply.
    events: VecDeque<WatchEvent>,
    /// A request that timed out or broke left the stream mid-message: later requests would read
    /// its reply. Nothing more is sent on such a connection.
    broken: bool,
    /// It set a watch: its events are its owner's, so it is never kept for another.
    watching: bool,
    /// Requests may be sent before earlier ones are answered: on xenstored's socket only.
    /// Linux's xenbus device queues a request with its body still in the file's one message
    /// buffer, which the next write overwrites before the kernel has put the first on the ring.
    pipelines: bool,
}

// Each thread keeps one plain connection (no watch, nothing pending) for its next `open`: a
// resident daemon's worker connects once, not once per action, and a one-shot run's udev gate
// and its action share one.
thread_local! {
    static KEPT: RefCell<Option<Conn>> = const { RefCell::new(None) };
}

impl Drop for XenStore {
    fn drop(&mut self) {
        // SAFETY: `conn` is taken exactly once, here, and never used again.
        let conn = unsafe { ManuallyDrop::take(&mut self.conn) }.into_inner();
        if conn.broken || conn.watching || !conn.events.is_empty() {
            return;
        }
        // A thread being torn down has no slot left: the connection then just closes.
        let _ = KEPT.try_with(|k| {
            if let Ok(mut slot) = k.try_borrow_mut() {
                if slot.is_none() {
                    *slot = Some(conn);
                }
            }
        });
    }
}

/// This thread's kept connection, unless xenstored has closed it or sent something unasked
/// since (then it is dropped, and the caller connects afresh).
fn kept() -> Option<Conn> {
    let conn = KEPT
        .try_with(|k| k.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten()?;
    let mut fds = [PollFd::new(conn.fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => Some(conn),
        _ => None,
    }
}

fn absent<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn socket_path() -> String {
    std::env::var("XENSTORED_PATH").unwrap_or_else(|_| SOCKET_PATH.to_string())
}

/// Connect without blocking: a xenstored whose listen queue is full makes connect(2) wait,
/// which must draw on the deadline like everything else.
fn connect_socket(path: &str) -> io::Result<OwnedFd> {
    let addr = UnixAddr::new(path).map_err(io::Error::from)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    loop {
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => return Ok(fd),
            Err(Errno::EINTR) => continue,
            // A full listen queue: try again until the deadline.
            Err(Errno::EAGAIN) => {
                deadline::check("xenstored").map_err(timed_out)?;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn open_device() -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        XENBUS_DEVICE_PATH,
        OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    Ok(fd)
}

fn timed_out(e: deadline::Expired) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{} did not answer within the run's {} s budget",
            e.what,
            e.budget.as_secs()
        ),
    )
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "xenstored closed the connection",
    )
}

/// Wait until `fd` is ready for `flags`, or the deadline passes.
fn wait(fd: &OwnedFd, flags: PollFlags, what: &str) -> io::Result<()> {
    loop {
        let d = deadline::current();
        d.check(what).map_err(timed_out)?;
        let mut fds = [PollFd::new(fd.as_fd(), flags)];
        let timeout = PollTimeout::try_from(d.poll_millis()).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Conn {
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match nix::unistd::write(&self.fd, buf) {
                Ok(0) => return Err(closed()),
                Ok(n) => buf = &buf[n..],
                Err(Errno::EAGAIN) => wait(&self.fd, PollFlags::POLLOUT, "xenstored")?,
                Err(Errno::EINTR) => {}
                Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(closed()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match nix::unistd::read(&self.fd, buf) {
                Ok(0) => return Err(closed()),
                Ok(n) => buf = &mut buf[n..],
                Err(Errno::EAGAIN) => wait(&self.fd, PollFlags::POLLIN, "xenstored")?,
                Err(Errno::EINTR) => {}
                Err(Errno::ECONNRESET) => return Err(closed()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// One message off the wire: a 16-byte header, then its payload.
    fn read_message(&mut self) -> io::Result<(u32, u32, Vec<u8>)> {
        let mut header = [0u8; 16];
        self.read_exact(&mut header)?;
        let word =
            |i: usize| u32::from_ne_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (ty, req_id, len) = (word(0), word(4), word(12) as usize);
        if len > PAYLOAD_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("xenstored sent a {len}-byte payload (at most {PAYLOAD_MAX})"),
            ));
        }
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok((ty, req_id, payload))
    }

    fn transact(&mut self, op: Op, parts: &[&str], trailing_nul: bool) -> io::Result<Vec<u8>> {
        if self.broken {
            return Err(closed());
        }
        let result = self.transact_once(op, parts, trailing_nul);
        if let Err(e) = &result {
            if is_connection_error(e) || e.kind() == io::ErrorKind::InvalidData {
                self.broken = true;
            }
        }
        result
    }

    fn transact_once(&mut self, op: Op, parts: &[&str], trailing_nul: bool) -> io::Result<Vec<u8>> {
        let id = self.send(op, parts, trailing_nul)?;
        self.reply(op, id)?
    }

    /// Send one request; its id, for [`Conn::reply`].
    fn send(&mut self, op: Op, parts: &[&str], trailing_nul: bool) -> io::Result<u32> {
        self.next_id = self.next_id.wrapping_add(1);
        let out = encode(op, self.next_id, parts, trailing_nul)?;
        self.write_all(&out)?;
        Ok(self.next_id)
    }

    /// The reply to request `id` (the next one due: xenstored answers a connection's requests
    /// in order). The outer error breaks the stream; the inner one is xenstored's answer.
    fn reply(&mut self, op: Op, id: u32) -> io::Result<io::Result<Vec<u8>>> {
        loop {
            let (ty, rid, payload) = self.read_message()?;
            if ty == Op::WatchEvent as u32 {
                self.events.extend(watch_event(&payload));
                continue;
            }
            if rid != id {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("xenstored answered request {rid}, not {id}"),
                ));
            }
            if ty == Op::Error as u32 {
                return Ok(Err(error_reply(&payload)));
            }
            if ty != op as u32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("xenstored answered a {op:?} request with message type {ty}"),
                ));
            }
            return Ok(Ok(payload));
        }
    }

    /// Reads of every path in `paths`, all sent before the first reply is read: one round
    /// trip for all. Every reply is read, an error reply included, so the stream stays in step.
    /// For a connection that `pipelines` only.
    fn read_many(&mut self, paths: &[&str]) -> io::Result<Vec<io::Result<Vec<u8>>>> {
        if self.broken {
            return Err(closed());
        }
        let result = (|| -> io::Result<Vec<io::Result<Vec<u8>>>> {
            let mut ids = Vec::with_capacity(paths.len());
            for p in paths {
                ids.push(self.send(Op::Read, &[p], true)?);
            }
            ids.into_iter().map(|id| self.reply(Op::Read, id)).collect()
        })();
        // Requests may be out with their replies unread: nothing more goes on this stream.
        self.broken |= result.is_err();
        result
    }
}

/// The payload as one string, without its terminating NUL.
fn payload_str(payload: Vec<u8>) -> io::Result<String> {
    let mut p = payload;
    if p.last() == Some(&0) {
        p.pop();
    }
    String::from_utf8(p).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A NUL-separated list.
fn payload_list(payload: &[u8]) -> io::Result<Vec<String>> {
    payload
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            String::from_utf8(s.to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        })
        .collect()
}

impl XenStore {
    /// One connection: `XENSTORED_PATH` (or /run/xenstored/socket), else the xenbus device. The
    /// error names every path tried and what that usually means.
    pub fn open() -> Result<XenStore> {
        if let Some(conn) = kept() {
            return Ok(XenStore {
                conn: ManuallyDrop::new(RefCell::new(conn)),
            });
        }
        let socket = socket_path();
        match connect_socket(&socket) {
            Ok(fd) => Ok(XenStore::on(fd, true)),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                Err(e).with_context(|| format!("cannot connect to xenstored at {socket}"))
            }
            Err(se) => match open_device() {
                Ok(fd) => Ok(XenStore::on(fd, false)),
                Err(de) => Err(anyhow::anyhow!(
                    "cannot connect to xenstored: {socket}: {se}; {XENBUS_DEVICE_PATH}: {de} \
                     (not a Xen host, or xenstored is not running)"
                )),
            },
        }
    }

    /// A connection of its own to the xenstored socket at `path` (no kept connection, no
    /// fallback to the device): for a benchmark that compares ways of asking.
    pub fn open_socket(path: &str) -> io::Result<XenStore> {
        connect_socket(path).map(|fd| XenStore::on(fd, true))
    }

    fn on(fd: OwnedFd, pipelines: bool) -> XenStore {
        XenStore {
            conn: ManuallyDrop::new(RefCell::new(Conn {
                fd,
                next_id: 0,
                events: VecDeque::new(),
                broken: false,
                watching: false,
                pipelines,
            })),
        }
    }

    fn transact(&self, op: Op, parts: &[&str], trailing_nul: bool) -> io::Result<Vec<u8>> {
        self.conn.borrow_mut().transact(op, parts, trailing_nul)
    }

    /// The node's permissions; the first names its owner. `Ok(None)`: no such node.
    pub fn get_perms(&self, path: &str) -> io::Result<Option<Vec<Perm>>> {
        let Some(payload) = absent(self.transact(Op::GetPerms, &[path], true))? else {
            return Ok(None);
        };
        let mut perms = Vec::new();
        for p in payload_list(&payload)? {
            let mut chars = p.chars();
            let access = chars.next().unwrap_or('n');
            let domid = chars.as_str().parse().map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, format!("bad permission {p:?}"))
            })?;
            perms.push(Perm { domid, access });
        }
        Ok(Some(perms))
    }

    /// The domain that owns `path`, `Ok(None)` when there is no such node.
    pub fn owner(&self, path: &str) -> io::Result<Option<u32>> {
        Ok(self
            .get_perms(path)?
            .and_then(|p| p.first().map(|p| p.domid)))
    }

    pub fn rm(&self, path: &str) -> io::Result<()> {
        match self.transact(Op::Rm, &[path], true) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map(drop),
        }
    }

    /// Watch `path` and everything below it; xenstored fires once at once, as it always does.
    pub fn watch(&self, path: &str, token: &str) -> io::Result<()> {
        self.conn.borrow_mut().watching = true;
        self.transact(Op::Watch, &[path, token], true).map(drop)
    }

    pub fn unwatch(&self, path: &str, token: &str) -> io::Result<()> {
        self.transact(Op::Unwatch, &[path, token], true).map(drop)
    }

    /// The next watch event if one arrives within `idle`, else `Ok(None)` with the connection
    /// still usable: a resident process's idle wait. Timing out while nothing has arrived
    /// leaves the stream in step (no byte of a message was read); once a message has begun, it
    /// is read under a budget of its own.
    pub fn wait_event(&self, idle: std::time::Duration) -> io::Result<Option<WatchEvent>> {
        {
            let mut conn = self.conn.borrow_mut();
            if let Some(e) = conn.events.pop_front() {
                return Ok(Some(e));
            }
            if conn.broken {
                return Err(closed());
            }
            let mut fds = [PollFd::new(conn.fd.as_fd(), PollFlags::POLLIN)];
            let ms = i32::try_from(idle.as_millis()).unwrap_or(i32::MAX);
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(0) | Err(Errno::EINTR) => return Ok(None),
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let _budget = deadline::Deadline::after(MESSAGE_BUDGET).enter();
        self.next_event().map(Some)
    }

    /// The next watch event, waiting for one until this thread's deadline.
    pub fn next_event(&self) -> io::Result<WatchEvent> {
        let mut conn = self.conn.borrow_mut();
        loop {
            if let Some(e) = conn.events.pop_front() {
                return Ok(e);
            }
            if conn.broken {
                return Err(closed());
            }
            let (ty, _, payload) = match conn.read_message() {
                Ok(m) => m,
                Err(e) => {
                    conn.broken = is_connection_error(&e) || e.kind() == io::ErrorKind::InvalidData;
                    return Err(e);
                }
            };
            if ty == Op::WatchEvent as u32 {
                conn.events.extend(watch_event(&payload));
            }
        }
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
        absent(self.transact(Op::Read, &[path], true))?
            .map(payload_str)
            .transpose()
    }

    fn write(&self, path: &str, value: &str) -> io::Result<()> {
        self.transact(Op::Write, &[path, value], false).map(drop)
    }

    fn directory(&self, path: &str) -> io::Result<Option<Vec<String>>> {
        absent(self.transact(Op::Directory, &[path], true))?
            .map(|p| payload_list(&p))
            .transpose()
    }

    fn read_many(&self, paths: &[&str]) -> Vec<io::Result<Option<String>>> {
        if !self.conn.borrow().pipelines {
            return paths.iter().map(|p| self.read(p)).collect();
        }
        match self.conn.borrow_mut().read_many(paths) {
            Ok(replies) => replies
                .into_iter()
                .map(|r| absent(r)?.map(payload_str).transpose())
                .collect(),
            // The stream broke: every read failed alike.
            Err(e) => paths
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), e.to_string())))
                .collect(),
        }
    }

    fn owner(&self, path: &str) -> io::Result<Option<u32>> {
        XenStore::owner(self, path)
    }
}

/// Read `keys` of directory `dir` in two round trips: one listing, then the reads of the keys
/// that exist, all at once. A missing directory gives an empty map.
pub fn read_keys(store: &dyn Store, dir: &str, keys: &[&str]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(present) = store
        .directory(dir)
        .with_context(|| format!("list xenstore directory {dir}"))?
    else {
        return Ok(out);
    };
    let wanted: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| present.iter().any(|p| p == k))
        .collect();
    let paths: Vec<String> = wanted.iter().map(|k| format!("{dir}/{k}")).collect();
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    for ((key, path), value) in wanted.iter().zip(&paths).zip(store.read_many(&refs)) {
        if let Some(v) = value.with_context(|| format!("read xenstore {path}"))? {
            out.insert(key.to_string(), v);
        }
    }
    Ok(out)
}
