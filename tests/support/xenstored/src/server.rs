//! Connections: one thread per client that handles requests under the shared lock and
//! writes the replies itself, like xenstored's single loop: no hand-off per request. A client
//! that registers a watch gets a writer thread, so that events caused by other clients never
//! block on it, and from then on its replies and events go out in order through that thread.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use crate::store::{self, Errno, Events, Global, InTransaction, Perm, Store, Tree};
use crate::wire::{self, Incoming, Message, PAYLOAD_MAX};
use crate::{Fault, FaultAction, Request};

/// DOMID_SELF: IS_DOMAIN_INTRODUCED always answers "T" for it.
const DOMID_SELF: u32 = 0x7ff0;

pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub stopping: AtomicBool,
}

impl Shared {
    pub fn new(state: State) -> Shared {
        Shared {
            state: Mutex::new(state),
            stopping: AtomicBool::new(false),
        }
    }

    /// A panicking test thread must not take the daemon down with it.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Watch {
    conn: u64,
    node: String,
    token: Vec<u8>,
    /// Registered with a relative path: events report paths relative too.
    relative: bool,
}

struct ConnHandle {
    /// Set once the client watches; until then its replies are written by its own thread.
    out: Option<Sender<Vec<u8>>>,
    /// Kept to shut the connection down when the daemon stops.
    stream: UnixStream,
}

impl ConnHandle {
    /// Starts the writer thread on first use; false if it could not be started.
    fn queue(&mut self, id: u64) -> bool {
        if self.out.is_some() {
            return true;
        }
        let Ok(mut writer) = self.stream.try_clone() else {
            return false;
        };
        let (out, queue) = mpsc::channel::<Vec<u8>>();
        // Writes never block the request path: a client that stops reading only stalls itself.
        let spawned = thread::Builder::new()
            .name(format!("xenstored-out-{id}"))
            .spawn(move || {
                for bytes in queue {
                    if writer.write_all(&bytes).is_err() {
                        break;
                    }
                }
            });
        if spawned.is_ok() {
            self.out = Some(out);
        }
        spawned.is_ok()
    }
}

/// What the connection's thread does after a request.
enum Next {
    /// Write these bytes (the reply) itself, then read the next request.
    Write(Vec<u8>),
    /// Write these bytes one at a time, pausing before each.
    Trickle(Vec<u8>, std::time::Duration),
    /// The reply, if any, is queued: read the next request.
    Continue,
    Close,
}

pub(crate) struct State {
    pub store: Store,
    watches: Vec<Watch>,
    conns: HashMap<u64, ConnHandle>,
    next_conn: u64,
    pub traffic: Vec<Request>,
    traffic_log: Option<File>,
    pub faults: Vec<Fault>,
    introduced: BTreeSet<u32>,
    /// Where every client's relative paths go: `/local/domain/<the domain it serves as>`.
    pub home: String,
}

impl State {
    pub fn new(traffic_log: Option<File>) -> State {
        State {
            store: Store::new(),
            watches: Vec::new(),
            conns: HashMap::new(),
            next_conn: 1,
            traffic: Vec::new(),
            traffic_log,
            faults: Vec::new(),
            introduced: BTreeSet::from([0]),
            home: store::IMPLICIT_PATH.to_string(),
        }
    }

    /// Runs `f` on the global tree and delivers the watch events it caused.
    pub fn global<T>(&mut self, f: impl FnOnce(&mut dyn Tree) -> T) -> T {
        let mut events = Events::new();
        let result = f(&mut Global {
            store: &mut self.store,
            events: &mut events,
        });
        self.deliver(events);
        result
    }

    /// fire_watches(): every watch on the node, or (unless `exact`) above it.
    fn deliver(&mut self, events: Events) {
        for (name, exact) in events {
            for watch in &self.watches {
                let hit = if exact {
                    name == watch.node
                } else {
                    store::is_child(&name, &watch.node)
                };
                if !hit {
                    continue;
                }
                let shown = if watch.relative {
                    name.get(self.home.len() + 1..).unwrap_or(&name)
                } else {
                    &name
                };
                send_event(&self.conns, watch.conn, shown, &watch.token);
            }
        }
    }

    /// Shuts every client connection down so that their threads end.
    pub fn disconnect_all(&mut self) {
        for conn in self.conns.values() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }

    fn record(&mut self, request: Request) {
        if let Some(log) = &mut self.traffic_log {
            let mut line = request.op.clone();
            if !request.path.is_empty() {
                line.push(' ');
                line.push_str(&request.path);
            }
            if let Some(value) = &request.value {
                line.push(' ');
                // One request per line, whatever the value holds.
                line.push_str(&value.replace('\\', "\\\\").replace('\n', "\\n"));
            }
            line.push('\n');
            // Best effort: a full disk must not change what clients see.
            let _ = log.write_all(line.as_bytes());
        }
        self.traffic.push(request);
    }

    /// The first injected fault matching this request, used up by one.
    fn take_fault(&mut self, request: &Request) -> Option<FaultAction> {
        self.faults.retain(|f| f.times != Some(0));
        let fault = self.faults.iter_mut().find(|f| {
            f.op.as_ref().is_none_or(|op| *op == request.op)
                && request.path.starts_with(&f.path_prefix)
        })?;
        if let Some(times) = &mut fault.times {
            *times -= 1;
        }
        Some(fault.action.clone())
    }
}

fn send_event(conns: &HashMap<u64, ConnHandle>, conn: u64, path: &str, token: &[u8]) {
    let mut payload = wire::with_nul(path);
    payload.extend_from_slice(token);
    payload.push(0);
    // xenstored drops events it could not send in one message.
    if payload.len() > PAYLOAD_MAX {
        return;
    }
    if let Some(out) = conns.get(&conn).and_then(|h| h.out.as_ref()) {
        let message = Message {
            ty: wire::WATCH_EVENT,
            req_id: 0,
            tx_id: 0,
            payload,
        };
        let _ = out.send(message.encode());
    }
}

/// Per-connection state that only its own thread touches.
struct Conn {
    id: u64,
    transactions: HashMap<u32, store::Transaction>,
    next_tx: u32,
    /// The event a WATCH fires once, sent right after its reply.
    initial_event: Option<(String, Vec<u8>)>,
}

/// Serves one client until it disconnects (runs on the connection's own thread).
pub(crate) fn serve(shared: Arc<Shared>, stream: UnixStream) {
    // One handle kept in the table (to shut the connection down, or to clone for a writer
    // thread); this thread reads and writes through `stream` itself.
    let Ok(kept) = stream.try_clone() else {
        return;
    };
    let mut reader = &stream;
    let id = {
        let mut state = shared.lock();
        let id = state.next_conn;
        state.next_conn += 1;
        let handle = ConnHandle {
            out: None,
            stream: kept,
        };
        state.conns.insert(id, handle);
        id
    };

    let mut conn = Conn {
        id,
        transactions: HashMap::new(),
        next_tx: 1,
        initial_event: None,
    };
    // Ends on EOF, on errors, and on oversized requests (xenstored drops those clients).
    while let Ok(Incoming::Message(message)) = Message::read_from(&mut reader) {
        let next = shared.lock().handle(&mut conn, &message);
        match next {
            // Outside the lock: a client that does not read its replies stalls only itself.
            Next::Write(bytes) if (&stream).write_all(&bytes).is_ok() => {}
            Next::Trickle(bytes, pause)
                if bytes.iter().all(|b| {
                    std::thread::sleep(pause);
                    (&stream).write_all(&[*b]).is_ok()
                }) => {}
            Next::Continue => {}
            Next::Write(_) | Next::Trickle(..) | Next::Close => break,
        }
    }

    // Dropping the queue's last sender lets the writer flush what is queued and
    // close: like xenstored's destroy_conn(), replies already due still go out.
    let mut state = shared.lock();
    state.conns.remove(&id);
    state.watches.retain(|w| w.conn != id);
}

/// The path a request is about, for the traffic record and fault matching.
fn request_of(message: &Message, home: &str) -> Request {
    let op = wire::type_name(message.ty);
    let has_path = matches!(
        message.ty,
        wire::DIRECTORY
            | wire::READ
            | wire::GET_PERMS
            | wire::WATCH
            | wire::UNWATCH
            | wire::WRITE
            | wire::MKDIR
            | wire::RM
            | wire::SET_PERMS
            | wire::DIRECTORY_PART
    );
    let payload = &message.payload;
    let first_len = payload
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(payload.len());
    let path = if has_path {
        let raw = String::from_utf8_lossy(&payload[..first_len]);
        if raw.starts_with('/') || raw.starts_with('@') {
            raw.into_owned()
        } else {
            format!("{home}/{raw}")
        }
    } else {
        String::new()
    };
    let value = (message.ty == wire::WRITE).then(|| {
        let rest = payload.get(first_len + 1..).unwrap_or_default();
        String::from_utf8_lossy(rest).into_owned()
    });
    Request { op, path, value }
}

impl State {
    /// Handles one request: its reply is queued, or returned for the caller to write.
    fn handle(&mut self, conn: &mut Conn, message: &Message) -> Next {
        let request = request_of(message, &self.home);
        self.record(request.clone());
        let mut trickle = None;
        let (ty, payload) = match self.take_fault(&request) {
            Some(FaultAction::Error(errno)) => (wire::ERROR, wire::with_nul(&errno)),
            Some(FaultAction::Hang) => return Next::Continue,
            Some(FaultAction::Close) => return Next::Close,
            Some(FaultAction::Trickle(pause)) => {
                trickle = Some(pause);
                match self.execute(conn, message) {
                    Ok(payload) => (message.ty, payload),
                    Err(errno) => (wire::ERROR, wire::with_nul(errno)),
                }
            }
            None => match self.execute(conn, message) {
                // send_reply() refuses what does not fit in one message.
                Ok(payload) if payload.len() > PAYLOAD_MAX => {
                    (wire::ERROR, wire::with_nul("E2BIG"))
                }
                Ok(payload) => (message.ty, payload),
                Err(errno) => (wire::ERROR, wire::with_nul(errno)),
            },
        };
        let reply = Message {
            ty,
            req_id: message.req_id,
            tx_id: message.tx_id,
            payload,
        }
        .encode();
        if let Some(pause) = trickle {
            return Next::Trickle(reply, pause);
        }
        // A watching client's reply is queued under the lock, so no event of a later request
        // can overtake it; a new watch's first event follows its reply.
        let Some(out) = self.conns.get(&conn.id).and_then(|h| h.out.as_ref()) else {
            return Next::Write(reply);
        };
        let _ = out.send(reply);
        if let Some((path, token)) = conn.initial_event.take() {
            send_event(&self.conns, conn.id, &path, &token);
        }
        Next::Continue
    }

    /// process_message(): looks up the transaction, then runs the operation.
    fn execute(&mut self, conn: &mut Conn, message: &Message) -> Result<Vec<u8>, Errno> {
        let payload = message.payload.as_slice();
        let ok = || Ok(wire::with_nul("OK"));
        // WATCH and UNWATCH ignore the transaction id (XS_FLAG_NOTID).
        let tx_id = match message.ty {
            wire::WATCH | wire::UNWATCH => 0,
            _ => message.tx_id,
        };
        let known = matches!(message.ty, 0..=14 | 17..=19 | 21 | 22);
        if !known {
            return Err("ENOSYS");
        }
        if tx_id != 0 && !conn.transactions.contains_key(&tx_id) {
            return Err("ENOENT");
        }

        match message.ty {
            wire::TRANSACTION_START => {
                if tx_id != 0 {
                    return Err("EBUSY");
                }
                // Ids are per connection, nonzero, never one in use.
                while conn.next_tx == 0 || conn.transactions.contains_key(&conn.next_tx) {
                    conn.next_tx = conn.next_tx.wrapping_add(1);
                }
                let id = conn.next_tx;
                conn.next_tx = conn.next_tx.wrapping_add(1);
                conn.transactions.insert(id, store::Transaction::default());
                Ok(wire::with_nul(&id.to_string()))
            }
            wire::TRANSACTION_END => {
                let commit = match wire::onearg(payload) {
                    Some(b"T") => true,
                    Some(b"F") => false,
                    _ => return Err("EINVAL"),
                };
                let tx = conn.transactions.remove(&tx_id).ok_or("ENOENT")?;
                if commit {
                    let mut events = Events::new();
                    tx.commit(&mut self.store, &mut events)?;
                    self.deliver(events);
                }
                ok()
            }
            wire::WATCH => {
                let [path, token] = wire::strings(payload)[..] else {
                    return Err("EINVAL");
                };
                let node = store::canonicalize_in(&self.home, path, true)?;
                if self
                    .watches
                    .iter()
                    .any(|w| w.conn == conn.id && w.node == node && w.token == token)
                {
                    return Err("EEXIST");
                }
                let relative = !path.starts_with(b"/") && !path.starts_with(b"@");
                // Events need the writer thread; xenstored answers ENOMEM when out of memory.
                if !self
                    .conns
                    .get_mut(&conn.id)
                    .is_some_and(|h| h.queue(conn.id))
                {
                    return Err("ENOMEM");
                }
                self.watches.push(Watch {
                    conn: conn.id,
                    node,
                    token: token.to_vec(),
                    relative,
                });
                // Every new watch fires once, right after the reply.
                let shown = if relative {
                    String::from_utf8_lossy(path).into_owned()
                } else {
                    self.watches.last().expect("just pushed").node.clone()
                };
                conn.initial_event = Some((shown, token.to_vec()));
                ok()
            }
            wire::UNWATCH => {
                let [path, token] = wire::strings(payload)[..] else {
                    return Err("EINVAL");
                };
                let node = store::canonicalize_in(&self.home, path, true)?;
                let index = self
                    .watches
                    .iter()
                    .position(|w| w.conn == conn.id && w.node == node && w.token == token)
                    .ok_or("ENOENT")?;
                self.watches.remove(index);
                ok()
            }
            wire::RESET_WATCHES => {
                self.watches.retain(|w| w.conn != conn.id);
                conn.transactions.clear();
                ok()
            }
            wire::GET_DOMAIN_PATH => {
                let domid = wire::onearg(payload).ok_or("EINVAL")?;
                let domid = wire::atoi(domid) as u32;
                Ok(wire::with_nul(&format!("/local/domain/{domid}")))
            }
            wire::IS_DOMAIN_INTRODUCED => {
                let domid = wire::atoi(wire::onearg(payload).ok_or("EINVAL")?) as u32;
                let known = domid == DOMID_SELF || self.introduced.contains(&domid);
                Ok(wire::with_nul(if known { "T" } else { "F" }))
            }
            wire::INTRODUCE => {
                let args = wire::strings(payload);
                if args.len() < 3 {
                    return Err("EINVAL");
                }
                let domid = wire::atoi(args[0]) as u32;
                if wire::atoi(args[2]) <= 0 {
                    return Err("EINVAL");
                }
                if self.introduced.insert(domid) {
                    self.deliver(vec![("@introduceDomain".to_string(), true)]);
                }
                ok()
            }
            wire::RELEASE | wire::RESUME => {
                let domid = wire::atoi(wire::onearg(payload).ok_or("EINVAL")?) as u32;
                if domid == 0 {
                    return Err("EINVAL");
                }
                if !self.introduced.contains(&domid) {
                    return Err("ENOENT");
                }
                if message.ty == wire::RELEASE {
                    self.introduced.remove(&domid);
                    self.deliver(vec![("@releaseDomain".to_string(), true)]);
                }
                ok()
            }
            wire::SET_TARGET => {
                let args = wire::strings(payload);
                if args.len() < 2 {
                    return Err("EINVAL");
                }
                for arg in &args[..2] {
                    if !self.introduced.contains(&(wire::atoi(arg) as u32)) {
                        return Err("ENOENT");
                    }
                }
                ok()
            }
            wire::CONTROL => control(payload),
            _ => self.tree_op(conn, tx_id, message.ty, payload),
        }
    }

    /// The operations on nodes, in the transaction if there is one.
    fn tree_op(
        &mut self,
        conn: &mut Conn,
        tx_id: u32,
        ty: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        if tx_id == 0 {
            let home = self.home.clone();
            return self.global(|t| node_op(t, &home, ty, payload));
        }
        let tx = conn.transactions.get_mut(&tx_id).expect("checked above");
        node_op(
            &mut InTransaction {
                store: &mut self.store,
                tx,
            },
            &self.home,
            ty,
            payload,
        )
    }
}

fn node_op(t: &mut dyn Tree, home: &str, ty: u32, payload: &[u8]) -> Result<Vec<u8>, Errno> {
    let ok = Ok(wire::with_nul("OK"));
    let path = |allow_special| {
        let raw = wire::onearg(payload).ok_or("EINVAL")?;
        store::canonicalize_in(home, raw, allow_special)
    };
    match ty {
        wire::READ => store::read(t, &path(false)?),
        wire::DIRECTORY => store::directory(t, &path(false)?),
        wire::GET_PERMS => store::get_perms(t, &path(true)?),
        wire::MKDIR => store::mkdir(t, &path(false)?).and(ok),
        wire::RM => store::rm(t, &path(false)?).and(ok),
        wire::WRITE => {
            // Path, NUL, then the value: any bytes, NULs included.
            let nul = payload.iter().position(|&b| b == 0).ok_or("EINVAL")?;
            let name = store::canonicalize_in(home, &payload[..nul], false)?;
            store::write(t, &name, &payload[nul + 1..]).and(ok)
        }
        wire::SET_PERMS => {
            let args = wire::strings(payload);
            if args.len() < 2 {
                return Err("EINVAL");
            }
            let perms = args[1..]
                .iter()
                .map(|s| Perm::parse(s))
                .collect::<Option<Vec<_>>>()
                .ok_or("EINVAL")?;
            let name = store::canonicalize_in(home, args[0], true)?;
            store::set_perms(t, &name, perms).and(ok)
        }
        wire::DIRECTORY_PART => {
            if wire::count_strings(payload) != 2 {
                return Err("EINVAL");
            }
            let args = wire::strings(payload);
            let name = store::canonicalize_in(home, args[0], false)?;
            let off = wire::atoi(args[1]) as u32 as usize;
            store::directory_part(t, &name, off, PAYLOAD_MAX)
        }
        _ => Err("ENOSYS"),
    }
}

/// The XS_CONTROL commands that make sense without a hypervisor.
fn control(payload: &[u8]) -> Result<Vec<u8>, Errno> {
    let args = wire::strings(payload);
    let Some((&command, params)) = args.split_first() else {
        return Err("EINVAL");
    };
    match (command, params.len()) {
        (b"check", 0) => Ok(wire::with_nul("OK")),
        (b"print", 1) => {
            eprintln!("control: {}", String::from_utf8_lossy(params[0]));
            Ok(wire::with_nul("OK"))
        }
        (b"help", 0) => Ok(wire::with_nul(&format!(
            "{:<15} \n{:<15} <string>\n{:<15} \n",
            "check", "print", "help"
        ))),
        _ => Err("EINVAL"),
    }
}
