//! The only code that talks to the kernel: send one request, collect its answer, check sequence
//! numbers and turn NACKs into typed errors. Everything above it builds messages.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::deadline;

/// A kernel error with its errno kept, so callers can branch on ENODEV, EEXIST, ...
#[derive(Debug)]
pub struct NetlinkError {
    pub errno: Errno,
    /// The kernel's extended ACK message, when it gave one.
    pub message: Option<String>,
}

impl fmt::Display for NetlinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} ({}): {m}", self.errno.desc(), self.errno),
            None => write!(f, "{} ({})", self.errno.desc(), self.errno),
        }
    }
}

impl std::error::Error for NetlinkError {}

impl From<io::Error> for NetlinkError {
    fn from(e: io::Error) -> Self {
        let errno = e.raw_os_error().map_or(Errno::EIO, Errno::from_raw);
        NetlinkError {
            errno,
            message: None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

/// True when the error is one of `errnos`.
pub fn is_errno(e: &anyhow::Error, errnos: &[Errno]) -> bool {
    e.downcast_ref::<NetlinkError>()
        .is_some_and(|n| errnos.contains(&n.errno))
}

/// A dump interrupted by a concurrent change is retried this many times.
const DUMP_RETRIES: usize = 5;

pub struct Netlink {
    socket: ManuallyDrop<Socket>,
    seq: u32,
    buf: Vec<u8>,
    /// A send, receive or wait failed: closed rather than kept.
    broken: bool,
}

// Each thread keeps one rtnetlink socket for all its requests: a resident daemon's worker opens
// one for good, not one per action. Answers are matched by sequence number, so what a timed-out
// request left behind is never taken for a later answer.
thread_local! {
    static KEPT: RefCell<Option<(Socket, u32)>> = const { RefCell::new(None) };
}

impl Drop for Netlink {
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

impl Netlink {
    /// The socket this thread kept, else a new one.
    pub fn open() -> Result<Netlink> {
        let kept = KEPT
            .try_with(|k| k.try_borrow_mut().ok().and_then(|mut s| s.take()))
            .ok()
            .flatten();
        if let Some((socket, seq)) = kept {
            return Ok(Netlink {
                socket: ManuallyDrop::new(socket),
                seq,
                buf: Vec::with_capacity(64 * 1024),
                broken: false,
            });
        }
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these options, and the answers are still correct.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink {
            socket: ManuallyDrop::new(socket),
            seq: 0,
            // Capacity only: the kernel writes what it answers, and zeroing 64 KiB up front
            // would touch (page-fault) all of it on every run.
            buf: Vec::with_capacity(64 * 1024),
            broken: false,
        })
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        let sent = self.socket.send(&out, 0);
        self.broken |= sent.is_err();
        sent?;
        Ok(self.seq)
    }

    /// Receive messages for `seq` until the request is complete; `on_msg` sees each inner message.
    /// Returns whether a dump was interrupted (NLM_F_DUMP_INTR).
    fn receive(
        &mut self,
        seq: u32,
        dump: bool,
        mut on_msg: impl FnMut(RouteNetlinkMessage),
    ) -> Result<bool> {
        let mut interrupted = false;
        loop {
            let received = self.wait_for_answer().and_then(|()| {
                self.buf.clear();
                Ok(self.socket.recv(&mut self.buf, 0)?)
            });
            self.broken |= received.is_err();
            let n = received?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let packet =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes).map_err(|e| {
                        NetlinkError {
                            errno: Errno::EBADMSG,
                            message: Some(format!("undecodable answer: {e}")),
                        }
                    })?;
                let len = packet.header.length as usize;
                if len == 0 {
                    return Err(NetlinkError {
                        errno: Errno::EBADMSG,
                        message: Some("zero-length netlink message".into()),
                    });
                }
                offset += (len + 3) & !3;
                if packet.header.sequence_number != seq {
                    // An answer to an earlier request that timed out: not ours now.
                    continue;
                }
                if packet.header.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                match packet.payload {
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(interrupted),
                            Some(code) => Err(NetlinkError {
                                errno: Errno::from_raw(-code.get()),
                                message: None,
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(interrupted),
                    NetlinkPayload::InnerMessage(m) => {
                        on_msg(m);
                        if !dump {
                            // A plain GET answers with one message and no ACK unless asked.
                            return Ok(false);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// The kernel answers in microseconds; a wait draws on the run's deadline all the same, so
    /// nothing here can outlast it.
    fn wait_for_answer(&self) -> Result<()> {
        // SAFETY: the fd is owned by `self.socket`, which outlives this borrow.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.socket.as_raw_fd()) };
        loop {
            let d = deadline::current();
            if d.check("the kernel's netlink answer").is_err() {
                return Err(NetlinkError {
                    errno: Errno::ETIMEDOUT,
                    message: Some("no answer from the kernel within the run's budget".into()),
                });
            }
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(d.poll_millis()).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => return Ok(()),
                Err(errno) => {
                    return Err(NetlinkError {
                        errno,
                        message: None,
                    });
                }
            }
        }
    }

    /// A change request; waits for the kernel's ACK.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        self.receive(seq, true, |_| {})?;
        Ok(())
    }

    /// A GET for one object; `None` when the kernel says it does not exist.
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<Option<RouteNetlinkMessage>> {
        let seq = self.send(msg, 0)?;
        let mut answer = None;
        match self.receive(seq, false, |m| answer = Some(m)) {
            Ok(_) => Ok(answer),
            Err(e) if e.errno == Errno::ENODEV || e.errno == Errno::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A dump; retried when a concurrent change interrupted it, so the list is consistent.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>> {
        self.dump_map(msg, Some)
    }

    /// A dump that keeps only what `keep` makes of each answer, as it arrives: a thousand
    /// links' full messages are never held at once (that took 32 MiB a dump, which a
    /// resident process's allocator then kept).
    pub fn dump_map<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut keep: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            let mut out = Vec::new();
            if !self.receive(seq, true, |m| out.extend(keep(m)))? {
                return Ok(out);
            }
        }
        Err(NetlinkError {
            errno: Errno::EINTR,
            message: Some("dump kept being interrupted by concurrent changes".into()),
        })
    }
}
