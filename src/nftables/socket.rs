//! nfnetlink: the socket (send a batch or a request, collect its answers, errno kept) and the
//! message and attribute encoding nf_tables and ctnetlink share. Bounded by the run's deadline.

use std::cell::RefCell;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::deadline;
use crate::netlink::NetlinkError;

pub type Result<T> = std::result::Result<T, NetlinkError>;

const NETLINK_NETFILTER: isize = 12;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLA_F_NESTED: u16 = 0x8000;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const DUMP_RETRIES: usize = 5;

/// One nfnetlink message under construction: header, `nfgenmsg`, attributes.
pub struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    /// `ty` is `(subsystem << 8) | message`; `res_id` is big-endian on the wire.
    pub fn new(ty: u16, flags: u16, family: u8, res_id: u16) -> Msg {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // sequence, set by `finish`
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        buf.extend_from_slice(&[family, 0]);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Msg { buf }
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    pub fn bytes(&mut self, ty: u16, value: &[u8]) -> &mut Msg {
        let len = u16::try_from(4 + value.len()).expect("attribute fits in 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
        self
    }

    /// Attributes already encoded (copied from an answer).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Msg {
        self.buf.extend_from_slice(encoded);
        self.pad();
        self
    }

    /// A NUL-terminated string.
    pub fn str(&mut self, ty: u16, value: &str) -> &mut Msg {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.bytes(ty, &v)
    }

    /// nf_tables and ctnetlink numbers are big-endian.
    pub fn u32(&mut self, ty: u16, value: u32) -> &mut Msg {
        self.bytes(ty, &value.to_be_bytes())
    }

    /// Open a nested attribute; close it with [`Msg::end`].
    pub fn begin(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    pub fn end(&mut self, at: usize) {
        let len = u16::try_from(self.buf.len() - at).expect("nest fits in 64 KiB");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    #[cfg(test)]
    pub fn bytes_for_test(&mut self) -> Vec<u8> {
        self.buf.clone()
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// The attributes of a message or a nested attribute: (type without flags, value).
pub fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// A string attribute's value without its NUL.
pub fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One answer: its message type and the attributes after the `nfgenmsg` header.
pub struct Answer {
    pub ty: u16,
    pub payload: Vec<u8>,
}

impl Answer {
    pub fn attrs(&self) -> Vec<(u16, &[u8])> {
        attrs(self.payload.get(4..).unwrap_or(&[]))
    }
}

pub struct Nfnetlink {
    socket: ManuallyDrop<Socket>,
    seq: u32,
    buf: Vec<u8>,
    /// A send, receive or wait failed: the socket may hold a half-read answer or an error of
    /// its own, so it is closed rather than kept.
    broken: bool,
}

// Each thread keeps one netfilter socket for all its requests. Closing a netfilter socket
// makes the kernel first finish freeing what earlier transactions deleted, which waits for an
// RCU grace period (12–18 ms here): a one-shot offline pays that once, at exit; a resident
// daemon's worker, whose thread lives on, never does.
thread_local! {
    static KEPT: RefCell<Option<(Socket, u32)>> = const { RefCell::new(None) };
}

impl Drop for Nfnetlink {
    fn drop(&mut self) {
        // SAFETY: `socket` is taken exactly once, here, and never used again.
        let socket = unsafe { ManuallyDrop::take(&mut self.socket) };
        if self.broken {
            return;
        }
        // A thread being torn down has no slot left: the socket then just closes.
        let _ = KEPT.try_with(|k| {
            if let Ok(mut slot) = k.try_borrow_mut() {
                if slot.is_none() {
                    *slot = Some((socket, self.seq));
                }
            }
        });
    }
}

fn kernel_error(errno: Errno, message: Option<String>) -> NetlinkError {
    NetlinkError { errno, message }
}

impl Nfnetlink {
    /// EPROTONOSUPPORT here means a kernel without nfnetlink.
    /// The socket this thread kept, if any: answers are matched by sequence number, so a late
    /// answer to an earlier request is never taken for a new one.
    pub fn open() -> Result<Nfnetlink> {
        let kept = KEPT
            .try_with(|k| k.try_borrow_mut().ok().and_then(|mut s| s.take()))
            .ok()
            .flatten();
        if let Some((socket, seq)) = kept {
            return Ok(Nfnetlink {
                socket: ManuallyDrop::new(socket),
                seq,
                buf: Vec::with_capacity(64 * 1024),
                broken: false,
            });
        }
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: short ACKs (no echo of a big batch) and the kernel's reason in words.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        Ok(Nfnetlink {
            socket: ManuallyDrop::new(socket),
            // Start from the clock: a late answer to another process's request is never ours.
            seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.subsec_nanos()),
            buf: Vec::with_capacity(64 * 1024),
            broken: false,
        })
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let r = self.socket.send(bytes, 0);
        self.broken |= r.is_err();
        r.map(drop).map_err(Into::into)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Wait for the socket to be readable, within the run's deadline.
    fn wait(&self) -> Result<()> {
        // SAFETY: the fd is owned by `self.socket`, which outlives this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) };
        loop {
            let d = deadline::current();
            if d.expired() {
                return Err(kernel_error(
                    Errno::ETIMEDOUT,
                    Some("no answer from the kernel (netfilter) within the run's deadline".into()),
                ));
            }
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(d.poll_millis()).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(kernel_error(e, None)),
            }
        }
    }

    /// Receive one datagram and hand each message in it to `on_msg(type, flags, seq, payload)`;
    /// stops as soon as `on_msg` returns `Some`.
    fn recv_each<T>(
        &mut self,
        mut on_msg: impl FnMut(u16, u16, u32, &[u8]) -> Option<T>,
    ) -> Result<Option<T>> {
        let received = self.wait().and_then(|()| {
            self.buf.clear();
            Ok(self.socket.recv(&mut self.buf, 0)?)
        });
        self.broken |= received.is_err();
        let n = received?;
        let mut off = 0;
        while off + 16 <= n {
            let b = &self.buf[off..n];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            if len < 16 || len > b.len() {
                return Err(kernel_error(
                    Errno::EBADMSG,
                    Some("malformed netlink answer".into()),
                ));
            }
            let ty = u16::from_ne_bytes([b[4], b[5]]);
            let flags = u16::from_ne_bytes([b[6], b[7]]);
            let seq = u32::from_ne_bytes(b[8..12].try_into().unwrap());
            if let Some(t) = on_msg(ty, flags, seq, &b[16..len]) {
                return Ok(Some(t));
            }
            off += (len + 3) & !3;
        }
        Ok(None)
    }

    /// Send `msgs` as one nf_tables transaction (all or nothing) and wait for every ACK. The
    /// first error the kernel reports is returned, with its extended-ACK text.
    pub fn batch(&mut self, msgs: Vec<Msg>, subsys: u16) -> Result<()> {
        let mut out = Vec::new();
        let begin_seq = self.next_seq();
        out.extend(Msg::new(NFNL_MSG_BATCH_BEGIN, 0, 0, subsys).finish(begin_seq));
        let first = self.seq.wrapping_add(1);
        let count = msgs.len() as u32;
        for m in msgs {
            let seq = self.next_seq();
            out.extend(m.finish(seq));
        }
        let end_seq = self.next_seq();
        out.extend(Msg::new(NFNL_MSG_BATCH_END, 0, 0, subsys).finish(end_seq));
        self.send(&out)?;
        // One ACK (or error) per message; an error at the batch header ends it at once.
        let mut seen = 0u32;
        let mut first_error: Option<NetlinkError> = None;
        while seen < count {
            let done = self.recv_each(|ty, flags, seq, payload| {
                if ty != NLMSG_ERROR {
                    return None;
                }
                let err = parse_error(flags, payload);
                if seq == begin_seq || seq == end_seq {
                    return Some(err.err());
                }
                if seq.wrapping_sub(first) < count {
                    seen += 1;
                    if let Err(e) = err {
                        first_error.get_or_insert(e);
                    }
                }
                None
            })?;
            if let Some(batch_err) = done {
                return match batch_err.or(first_error) {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A GET for one object: `None` when the kernel says it does not exist (ENOENT).
    pub fn get(&mut self, msg: Msg) -> Result<Option<Answer>> {
        let seq = self.next_seq();
        self.send(&msg.finish(seq))?;
        loop {
            let got = self.recv_each(|ty, flags, s, payload| {
                if s != seq {
                    return None;
                }
                if ty == NLMSG_ERROR {
                    return Some(match parse_error(flags, payload) {
                        Err(e) if e.errno == Errno::ENOENT => Ok(None),
                        Err(e) => Err(e),
                        Ok(()) => Ok(None),
                    });
                }
                Some(Ok(Some(Answer {
                    ty,
                    payload: payload.to_vec(),
                })))
            })?;
            if let Some(r) = got {
                return r;
            }
        }
    }

    /// A dump, retried when a concurrent change interrupted it. ENOENT (no such table or chain)
    /// is an empty list.
    pub fn dump(&mut self, make: impl Fn() -> Msg) -> Result<Vec<Answer>> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.next_seq();
            self.send(&make().finish(seq))?;
            let mut out = Vec::new();
            let mut interrupted = false;
            let result = loop {
                let got = self.recv_each(|ty, flags, s, payload| {
                    if s != seq {
                        return None;
                    }
                    if flags & NLM_F_DUMP_INTR != 0 {
                        interrupted = true;
                    }
                    match ty {
                        NLMSG_DONE => Some(Ok(())),
                        NLMSG_ERROR => Some(parse_error(flags, payload)),
                        _ => {
                            out.push(Answer {
                                ty,
                                payload: payload.to_vec(),
                            });
                            None
                        }
                    }
                })?;
                if let Some(r) = got {
                    break r;
                }
            };
            match result {
                Err(e) if e.errno == Errno::ENOENT => return Ok(Vec::new()),
                Err(e) => return Err(e),
                Ok(()) if !interrupted => return Ok(out),
                Ok(()) => {}
            }
        }
        Err(kernel_error(
            Errno::EINTR,
            Some("dump kept being interrupted by concurrent changes".into()),
        ))
    }

    /// Send one request and wait for its ACK.
    pub fn request(&mut self, msg: Msg) -> Result<()> {
        let seq = self.next_seq();
        self.send(&msg.finish(seq))?;
        loop {
            let got = self.recv_each(|ty, flags, s, payload| {
                (s == seq && ty == NLMSG_ERROR).then(|| parse_error(flags, payload))
            })?;
            if let Some(r) = got {
                return r;
            }
        }
    }
}

/// An `nlmsgerr`: 0 is an ACK; otherwise the errno and the kernel's extended-ACK message.
fn parse_error(flags: u16, payload: &[u8]) -> Result<()> {
    let Some(code) = payload.get(..4) else {
        return Err(kernel_error(Errno::EBADMSG, Some("short error".into())));
    };
    let code = i32::from_ne_bytes(code.try_into().unwrap());
    if code == 0 {
        return Ok(());
    }
    // The original request follows: only its header when capped (NETLINK_CAP_ACK), then the
    // extended-ACK attributes when flagged.
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() >= 20 {
        let orig_len = u32::from_ne_bytes(payload[4..8].try_into().unwrap()) as usize;
        let tlv_start = if flags & NLM_F_CAPPED != 0 {
            20
        } else {
            4 + orig_len
        };
        for (ty, v) in attrs(payload.get(tlv_start..).unwrap_or(&[])) {
            if ty == NLMSGERR_ATTR_MSG {
                message = Some(attr_str(v));
            }
        }
    }
    Err(kernel_error(Errno::from_raw(-code), message))
}
