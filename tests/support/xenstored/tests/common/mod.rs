//! A minimal raw xenstore client: enough of the wire protocol to drive the
//! daemon request by request and see exactly what it answers.

#![allow(dead_code)] // each test crate uses a different part of it

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DIRECTORY: u32 = 1;
pub const READ: u32 = 2;
pub const GET_PERMS: u32 = 3;
pub const WATCH: u32 = 4;
pub const UNWATCH: u32 = 5;
pub const TRANSACTION_START: u32 = 6;
pub const TRANSACTION_END: u32 = 7;
pub const INTRODUCE: u32 = 8;
pub const RELEASE: u32 = 9;
pub const GET_DOMAIN_PATH: u32 = 10;
pub const WRITE: u32 = 11;
pub const MKDIR: u32 = 12;
pub const RM: u32 = 13;
pub const SET_PERMS: u32 = 14;
pub const WATCH_EVENT: u32 = 15;
pub const ERROR: u32 = 16;
pub const IS_DOMAIN_INTRODUCED: u32 = 17;
pub const RESET_WATCHES: u32 = 21;
pub const DIRECTORY_PART: u32 = 22;

/// A fresh directory for one test's socket and files.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("test-xenstored-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ty: u32,
    pub req_id: u32,
    pub tx_id: u32,
    pub payload: Vec<u8>,
}

pub struct Client {
    stream: UnixStream,
    next_req: u32,
    /// Watch events that arrived while waiting for a reply.
    events: VecDeque<(String, String)>,
}

/// `s` followed by a NUL.
pub fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// NUL-terminated strings of a payload.
pub fn split(payload: &[u8]) -> Vec<String> {
    let mut parts: Vec<String> = payload
        .split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    parts.pop();
    parts
}

impl Client {
    pub fn connect(socket: &Path) -> Client {
        let stream = UnixStream::connect(socket).unwrap();
        // A daemon bug must fail the test, not hang it.
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            stream,
            next_req: 1,
            events: VecDeque::new(),
        }
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    pub fn send_raw(&mut self, ty: u32, req_id: u32, tx_id: u32, len: u32, payload: &[u8]) {
        let mut msg = Vec::new();
        for field in [ty, req_id, tx_id, len] {
            msg.extend_from_slice(&field.to_ne_bytes());
        }
        msg.extend_from_slice(payload);
        self.stream.write_all(&msg).unwrap();
    }

    pub fn send(&mut self, ty: u32, tx_id: u32, payload: &[u8]) -> u32 {
        let req_id = self.next_req;
        self.next_req += 1;
        self.send_raw(ty, req_id, tx_id, payload.len() as u32, payload);
        req_id
    }

    /// The next message, None on EOF; errors on timeout.
    pub fn recv(&mut self) -> io::Result<Option<Reply>> {
        let mut header = [0u8; 16];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(None),
            Err(e) => return Err(e),
        }
        let field = |i: usize| u32::from_ne_bytes(header[i * 4..i * 4 + 4].try_into().unwrap());
        let mut payload = vec![0; field(3) as usize];
        self.stream.read_exact(&mut payload)?;
        Ok(Some(Reply {
            ty: field(0),
            req_id: field(1),
            tx_id: field(2),
            payload,
        }))
    }

    /// Sends a request and waits for its reply, keeping watch events for later.
    pub fn call(&mut self, ty: u32, tx_id: u32, payload: &[u8]) -> Reply {
        let req_id = self.send(ty, tx_id, payload);
        loop {
            let reply = self.recv().unwrap().expect("connection closed");
            if reply.ty == WATCH_EVENT {
                let parts = split(&reply.payload);
                self.events.push_back((parts[0].clone(), parts[1].clone()));
                continue;
            }
            assert_eq!(reply.req_id, req_id, "reply to another request");
            assert_eq!(reply.tx_id, tx_id, "tx_id not echoed");
            return reply;
        }
    }

    /// Ok(payload) for a reply of the request's type, Err("ENOENT") for an error.
    pub fn op(&mut self, ty: u32, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, String> {
        let reply = self.call(ty, tx_id, payload);
        if reply.ty == ERROR {
            let mut text = split(&reply.payload);
            assert_eq!(text.len(), 1, "error payload {:?}", reply.payload);
            return Err(text.remove(0));
        }
        assert_eq!(reply.ty, ty, "reply type");
        Ok(reply.payload)
    }

    fn ok(&mut self, ty: u32, tx_id: u32, payload: &[u8]) -> Result<(), String> {
        let reply = self.op(ty, tx_id, payload)?;
        assert_eq!(reply, b"OK\0");
        Ok(())
    }

    pub fn read(&mut self, path: &str) -> Result<String, String> {
        self.read_in(0, path)
    }

    pub fn read_in(&mut self, tx: u32, path: &str) -> Result<String, String> {
        self.op(READ, tx, &nul(path))
            .map(|v| String::from_utf8(v).unwrap())
    }

    pub fn write(&mut self, path: &str, value: &str) -> Result<(), String> {
        self.write_in(0, path, value)
    }

    pub fn write_in(&mut self, tx: u32, path: &str, value: &str) -> Result<(), String> {
        // Like the C library: path, NUL, value without a trailing NUL.
        let mut payload = nul(path);
        payload.extend_from_slice(value.as_bytes());
        self.ok(WRITE, tx, &payload)
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), String> {
        self.ok(MKDIR, 0, &nul(path))
    }

    pub fn rm(&mut self, path: &str) -> Result<(), String> {
        self.rm_in(0, path)
    }

    pub fn rm_in(&mut self, tx: u32, path: &str) -> Result<(), String> {
        self.ok(RM, tx, &nul(path))
    }

    pub fn dir(&mut self, path: &str) -> Result<Vec<String>, String> {
        self.dir_in(0, path)
    }

    pub fn dir_in(&mut self, tx: u32, path: &str) -> Result<Vec<String>, String> {
        self.op(DIRECTORY, tx, &nul(path)).map(|p| split(&p))
    }

    pub fn get_perms(&mut self, path: &str) -> Result<Vec<String>, String> {
        self.op(GET_PERMS, 0, &nul(path)).map(|p| split(&p))
    }

    pub fn set_perms(&mut self, path: &str, perms: &[&str]) -> Result<(), String> {
        let mut payload = nul(path);
        for perm in perms {
            payload.extend(nul(perm));
        }
        self.ok(SET_PERMS, 0, &payload)
    }

    pub fn tx_start(&mut self) -> u32 {
        let id = self.op(TRANSACTION_START, 0, b"\0").unwrap();
        assert_eq!(id.last(), Some(&0), "id is NUL-terminated");
        let id: u32 = std::str::from_utf8(&id[..id.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(id, 0);
        id
    }

    pub fn tx_end(&mut self, tx: u32, commit: bool) -> Result<(), String> {
        self.ok(TRANSACTION_END, tx, &nul(if commit { "T" } else { "F" }))
    }

    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend(nul(token));
        self.ok(WATCH, 0, &payload)
    }

    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), String> {
        let mut payload = nul(path);
        payload.extend(nul(token));
        self.ok(UNWATCH, 0, &payload)
    }

    /// The next watch event, None if none arrives within `wait`.
    pub fn event(&mut self, wait: Duration) -> Option<(String, String)> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        self.set_timeout(wait);
        let message = self.recv();
        self.set_timeout(Duration::from_secs(5));
        match message {
            Ok(Some(reply)) => {
                assert_eq!(reply.ty, WATCH_EVENT, "unexpected message {reply:?}");
                assert_eq!((reply.req_id, reply.tx_id), (0, 0));
                let parts = split(&reply.payload);
                assert_eq!(parts.len(), 2, "event payload {:?}", reply.payload);
                Some((parts[0].clone(), parts[1].clone()))
            }
            Ok(None) => panic!("connection closed"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// The events now due: waits generously for the first (a loaded machine may
    /// be slow to schedule the daemon's writer), then until `quiet` passes
    /// without another.
    pub fn events(&mut self, quiet: Duration) -> Vec<(String, String)> {
        let first = self.event(Duration::from_secs(5));
        first
            .into_iter()
            .chain(std::iter::from_fn(|| self.event(quiet)))
            .collect()
    }
}
