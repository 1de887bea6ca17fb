//! A stand-in for xenstored, for tests: the real xenstore wire protocol
//! (xs_wire.h, docs/misc/xenstore.txt) on a unix stream socket, with the tree in
//! memory. Every connection is domain 0 (privileged), so permissions are stored
//! and reported but never enforced.
//!
//! Beyond xenstored it records every request ([`Daemon::traffic`]), lets a test
//! read and write the tree directly, and injects faults ([`Daemon::inject`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};

mod server;
mod store;
mod wire;

use server::{Shared, State};

/// One request as the daemon received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// xenstored's name of the message type: "READ", "WRITE", "DIRECTORY", "RM", ...
    pub op: String,
    /// The node, absolute (relative paths resolved under the client's /local/domain/<id>,
    /// [`Options::domid`]); empty for
    /// requests that do not name a node (TRANSACTION_START, GET_DOMAIN_PATH, ...).
    pub path: String,
    /// The value, for WRITE only.
    pub value: Option<String>,
}

/// A fault to inject into the requests that match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The request type ("WRITE", ...); None matches every type.
    pub op: Option<String>,
    /// Matches requests whose resolved path starts with this string ("" matches all).
    pub path_prefix: String,
    pub action: FaultAction,
    /// How many requests it hits; None: forever.
    pub times: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer with this xenstore error ("EACCES", "EAGAIN", "ENOENT", ...) instead.
    Error(String),
    /// Never answer this request; the connection stays open.
    Hang,
    /// Close the connection instead of answering.
    Close,
    /// Answer correctly, but one byte at a time with this pause before each: a peer that is
    /// never quite silent, so no per-read timeout ever fires.
    Trickle(std::time::Duration),
}

/// What a daemon starts with, beyond the initial tree.
#[derive(Debug, Default)]
pub struct Options {
    /// Nodes to write before the socket is listening: (absolute path, value).
    pub initial: Vec<(String, String)>,
    /// Gets one line per request as it arrives: `OP PATH[ VALUE]` (newlines and
    /// backslashes in VALUE escaped as `\n` and `\\`).
    pub traffic_log: Option<File>,
    /// The domain every client is taken to be: its relative paths resolve under
    /// `/local/domain/<domid>` (0: dom0; another: a driver domain's view).
    pub domid: u32,
}

/// A running daemon; dropping it stops it (closes the listener and every
/// connection, removes the socket).
pub struct Daemon {
    socket: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Daemon {
    /// Binds `socket` and serves it from a background thread; clients may connect
    /// as soon as this returns.
    pub fn start(socket: &Path) -> io::Result<Daemon> {
        Daemon::start_with(socket, Options::default())
    }

    pub fn start_with(socket: &Path, options: Options) -> io::Result<Daemon> {
        let mut state = State::new(options.traffic_log);
        state.home = format!("/local/domain/{}", options.domid);
        for (path, value) in &options.initial {
            let name = store::canonicalize(path.as_bytes(), false).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid xenstore path {path:?}"),
                )
            })?;
            state
                .global(|t| store::write(t, &name, value.as_bytes()))
                .map_err(|e| io::Error::other(format!("write {path}: {e}")))?;
        }
        let listener = bind(socket)?;
        let shared = Arc::new(Shared::new(state));
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("xenstored-accept".into())
                .spawn(move || accept_loop(listener, shared))?
        };
        Ok(Daemon {
            socket: socket.to_path_buf(),
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Writes a node like a dom0 client would (creating parents, firing watches).
    /// Panics on an invalid path.
    pub fn write(&self, path: &str, value: &str) {
        let name = valid(path);
        self.shared
            .lock()
            .global(|t| store::write(t, &name, value.as_bytes()))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    /// Like `write`, with any bytes as the value (e.g. not UTF-8).
    pub fn write_bytes(&self, path: &str, value: &[u8]) {
        let name = valid(path);
        self.shared
            .lock()
            .global(|t| store::write(t, &name, value))
            .unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    /// The node's value (lossily UTF-8), None if it does not exist.
    pub fn read(&self, path: &str) -> Option<String> {
        let name = store::canonicalize(path.as_bytes(), false).ok()?;
        let state = self.shared.lock();
        let node = state.store.nodes.get(&name)?;
        Some(String::from_utf8_lossy(&node.value).into_owned())
    }

    /// Removes the subtree (firing watches); a missing node is not an error.
    pub fn rm(&self, path: &str) {
        let name = valid(path);
        // ENOENT (parent missing too) is as good as removed here.
        let _ = self.shared.lock().global(|t| store::rm(t, &name));
    }

    /// Sets permissions, e.g. `&["n0", "r5"]`. Panics on a missing node or a bad
    /// permission string.
    pub fn set_perms(&self, path: &str, perms: &[&str]) {
        let name = store::canonicalize(path.as_bytes(), true)
            .unwrap_or_else(|e| panic!("invalid xenstore path {path:?}: {e}"));
        let perms = perms
            .iter()
            .map(|p| {
                store::Perm::parse(p.as_bytes())
                    .unwrap_or_else(|| panic!("invalid permission {p:?}"))
            })
            .collect();
        self.shared
            .lock()
            .global(|t| store::set_perms(t, &name, perms))
            .unwrap_or_else(|e| panic!("set_perms {path}: {e}"));
    }

    pub fn get_perms(&self, path: &str) -> Option<Vec<String>> {
        let name = store::canonicalize(path.as_bytes(), true).ok()?;
        let state = self.shared.lock();
        let node = state.store.nodes.get(&name)?;
        Some(node.perms.iter().map(|p| p.render()).collect())
    }

    /// Every node of the tree (not the special '@' nodes): path -> value.
    pub fn dump(&self) -> BTreeMap<String, String> {
        self.dump_under("/")
    }

    /// The node `prefix` and every node below it: path -> value.
    pub fn dump_under(&self, prefix: &str) -> BTreeMap<String, String> {
        let state = self.shared.lock();
        state
            .store
            .nodes
            .iter()
            .filter(|(path, _)| path.starts_with('/') && store::is_child(path, prefix))
            .map(|(path, node)| {
                let value = String::from_utf8_lossy(&node.value).into_owned();
                (path.clone(), value)
            })
            .collect()
    }

    /// Every request received so far, in order.
    pub fn traffic(&self) -> Vec<Request> {
        self.shared.lock().traffic.clone()
    }

    pub fn clear_traffic(&self) {
        self.shared.lock().traffic.clear();
    }

    /// Adds a fault; the first matching fault, in order of injection, applies.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }
}

impl Daemon {
    /// Stops serving as a crashed or restarting xenstored does: the listener and every
    /// connection close (their watches with them) and the socket goes; the tree stays, and the
    /// test can still read and write it directly. [`Daemon::resume`] listens again.
    pub fn crash(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // accept() cannot be interrupted portably with std: wake it with a connection.
        let woken = UnixStream::connect(&self.socket).is_ok();
        if let Some(acceptor) = self.acceptor.take().filter(|_| woken) {
            let _ = acceptor.join();
        }
        self.shared.lock().disconnect_all();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// Listens again on the same socket, with the tree as it is now (after [`Daemon::crash`]).
    pub fn resume(&mut self) -> io::Result<()> {
        if self.acceptor.is_some() {
            return Ok(());
        }
        let listener = bind(&self.socket)?;
        self.shared.stopping.store(false, Ordering::SeqCst);
        let shared = self.shared.clone();
        self.acceptor = Some(
            thread::Builder::new()
                .name("xenstored-accept".into())
                .spawn(move || accept_loop(listener, shared))?,
        );
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.crash();
    }
}

fn valid(path: &str) -> String {
    store::canonicalize(path.as_bytes(), false)
        .unwrap_or_else(|e| panic!("invalid xenstore path {path:?}: {e}"))
}

/// Binds, replacing a stale socket nobody listens on (left by a killed daemon).
fn bind(socket: &Path) -> io::Result<UnixListener> {
    match UnixListener::bind(socket) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket = std::fs::symlink_metadata(socket)
                .map(|m| m.file_type().is_socket())
                .unwrap_or(false);
            if !is_socket || UnixStream::connect(socket).is_ok() {
                return Err(e);
            }
            std::fs::remove_file(socket)?;
            UnixListener::bind(socket)
        }
        other => other,
    }
}

fn accept_loop(listener: UnixListener, shared: Arc<Shared>) {
    // Connections are served by reused threads: a hotplug script connects once per call, and
    // starting a thread for each would add to every call's first reply a cost the real
    // single-threaded xenstored does not have. A new thread starts only when none is idle.
    let (handoff, queue) = mpsc::channel::<UnixStream>();
    let queue = Arc::new(Mutex::new(queue));
    let idle = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else {
            // E.g. EMFILE: back off instead of spinning.
            thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        // Claim an idle thread: each claim matches one thread waiting on the queue.
        if idle
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let _ = handoff.send(stream);
            continue;
        }
        let (shared, queue, idle) = (shared.clone(), queue.clone(), idle.clone());
        let _ = thread::Builder::new()
            .name("xenstored-conn".into())
            .spawn(move || {
                let mut stream = stream;
                loop {
                    server::serve(shared.clone(), stream);
                    idle.fetch_add(1, Ordering::SeqCst);
                    // Ends when the acceptor stops and drops the sending side.
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    match next {
                        Ok(s) => stream = s,
                        Err(_) => return,
                    }
                }
            });
    }
}
