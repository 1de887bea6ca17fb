//! The in-memory tree and the operations on it, written once against the `Tree`
//! trait so that they behave the same on the global tree and inside a transaction.
//! Semantics follow tools/xenstored/core.c and transaction.c.

use std::collections::HashMap;

/// Errors travel as xenstored's error strings ("ENOENT", ...).
pub(crate) type Errno = &'static str;

/// Every connection is domain 0, so relative paths resolve under this.
pub(crate) const IMPLICIT_PATH: &str = "/local/domain/0";

/// XENSTORE_REL_PATH_MAX: the part of a path below /local/domain/N/ may not be longer.
const REL_PATH_MAX: usize = 2048;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Perm {
    /// 'n', 'r', 'w' or 'b'.
    pub kind: u8,
    pub domid: u32,
}

impl Perm {
    /// Parses "r5", "b0x10", ... like xenstore_strings_to_perms() (strtol base 0).
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&kind, number) = s.split_first()?;
        if !matches!(kind, b'n' | b'r' | b'w' | b'b') {
            return None;
        }
        Some(Perm {
            kind,
            domid: strtol0(number)? as u32,
        })
    }

    pub fn render(&self) -> String {
        format!("{}{}", self.kind as char, self.domid)
    }
}

/// strtol(s, &end, 0) that must consume the whole, non-empty string.
fn strtol0(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let text = text.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, text) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let value = if let Some(hex) = text.strip_prefix("0x").or(text.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if text.len() > 1 && text.starts_with('0') {
        i64::from_str_radix(&text[1..], 8).ok()?
    } else if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        text.parse().ok()?
    } else {
        return None;
    };
    Some(if negative { -value } else { value })
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub value: Vec<u8>,
    pub perms: Vec<Perm>,
    /// In creation order, as xenstored lists them.
    pub children: Vec<String>,
    /// Set from the global counter on every modification (DIRECTORY_PART, conflicts).
    pub generation: u64,
}

impl Node {
    fn empty(perms: Vec<Perm>) -> Node {
        Node {
            value: Vec::new(),
            perms,
            children: Vec::new(),
            generation: 0,
        }
    }
}

/// The global tree.
pub(crate) struct Store {
    pub nodes: HashMap<String, Node>,
    generation: u64,
}

impl Store {
    /// The tree a freshly started daemon shows.
    pub fn new() -> Store {
        let mut store = Store {
            nodes: HashMap::new(),
            generation: 0,
        };
        let dom0_none = vec![Perm {
            kind: b'n',
            domid: 0,
        }];
        let initial = [
            ("/", &["local", "tool"][..]),
            ("/local", &["domain"][..]),
            ("/local/domain", &["0"][..]),
            ("/local/domain/0", &[][..]),
            ("/tool", &[][..]),
            ("@introduceDomain", &[][..]),
            ("@releaseDomain", &[][..]),
        ];
        for (path, children) in initial {
            let mut node = Node::empty(dom0_none.clone());
            node.children = children.iter().map(|c| c.to_string()).collect();
            node.generation = store.next_generation();
            store.nodes.insert(path.to_string(), node);
        }
        store
    }

    pub fn next_generation(&mut self) -> u64 {
        self.generation += 1;
        self.generation
    }
}

/// Where watch events go once an operation is done: (node path, exact match only).
pub(crate) type Events = Vec<(String, bool)>;

/// A view of the tree: the global one, or one transaction's.
pub(crate) trait Tree {
    fn get(&mut self, path: &str) -> Option<Node>;
    fn put(&mut self, path: &str, node: Node);
    fn delete(&mut self, path: &str);
    /// A node changed: fire (or, in a transaction, queue) watch events.
    fn fire(&mut self, path: &str, exact: bool);
}

/// The global tree; events are collected for the caller to deliver.
pub(crate) struct Global<'a> {
    pub store: &'a mut Store,
    pub events: &'a mut Events,
}

impl Tree for Global<'_> {
    fn get(&mut self, path: &str) -> Option<Node> {
        self.store.nodes.get(path).cloned()
    }

    fn put(&mut self, path: &str, mut node: Node) {
        node.generation = self.store.next_generation();
        self.store.nodes.insert(path.to_string(), node);
    }

    fn delete(&mut self, path: &str) {
        self.store.nodes.remove(path);
    }

    fn fire(&mut self, path: &str, exact: bool) {
        self.events.push((path.to_string(), exact));
    }
}

/// One node as a transaction saw and changed it (xenstored's struct accessed_node).
#[derive(Debug)]
struct Accessed {
    /// Generation seen at first read (None: did not exist); Some only if it was read.
    observed: Option<Option<u64>>,
    /// The transaction's copy (None: absent in the transaction's view).
    node: Option<Node>,
    modified: bool,
    /// A queued watch event: Some(exact).
    watch: Option<bool>,
}

#[derive(Debug, Default)]
pub(crate) struct Transaction {
    order: Vec<String>,
    accessed: HashMap<String, Accessed>,
}

impl Transaction {
    fn entry(&mut self, path: &str) -> &mut Accessed {
        if !self.accessed.contains_key(path) {
            self.order.push(path.to_string());
        }
        self.accessed
            .entry(path.to_string())
            .or_insert_with(|| Accessed {
                observed: None,
                node: None,
                modified: false,
                watch: None,
            })
    }

    /// Ends the transaction with "T": fails with EAGAIN if any node it read has
    /// changed since, else publishes its changes and queues their watch events.
    pub fn commit(self, store: &mut Store, events: &mut Events) -> Result<(), Errno> {
        for (path, accessed) in &self.accessed {
            let changed = accessed
                .observed
                .is_some_and(|seen| store.nodes.get(path).map(|n| n.generation) != seen);
            if changed {
                return Err("EAGAIN");
            }
        }
        let mut accessed = self.accessed;
        for path in self.order {
            let entry = accessed.remove(&path).expect("ordered entries exist");
            if entry.modified {
                match entry.node {
                    Some(mut node) => {
                        node.generation = store.next_generation();
                        store.nodes.insert(path.clone(), node);
                    }
                    None => {
                        store.nodes.remove(&path);
                    }
                }
            }
            if let Some(exact) = entry.watch {
                events.push((path, exact));
            }
        }
        Ok(())
    }
}

/// A transaction's view: its own copies first, the global tree behind them.
pub(crate) struct InTransaction<'a> {
    pub store: &'a mut Store,
    pub tx: &'a mut Transaction,
}

impl Tree for InTransaction<'_> {
    fn get(&mut self, path: &str) -> Option<Node> {
        if let Some(entry) = self.tx.accessed.get(path) {
            return entry.node.clone();
        }
        let global = self.store.nodes.get(path).cloned();
        let entry = self.tx.entry(path);
        entry.observed = Some(global.as_ref().map(|n| n.generation));
        entry.node = global.clone();
        global
    }

    fn put(&mut self, path: &str, mut node: Node) {
        node.generation = self.store.next_generation();
        let entry = self.tx.entry(path);
        entry.node = Some(node);
        entry.modified = true;
    }

    fn delete(&mut self, path: &str) {
        let entry = self.tx.entry(path);
        entry.node = None;
        entry.modified = true;
    }

    fn fire(&mut self, path: &str, exact: bool) {
        // A non-exact event replaces an exact one, not the other way round.
        let entry = self.tx.entry(path);
        entry.watch = Some(entry.watch.unwrap_or(true) && exact);
    }
}

/// Resolves and validates a path like xenstored's canonicalize(): relative paths
/// go under /local/domain/0, '@' paths only where special nodes are allowed.
pub(crate) fn canonicalize(raw: &[u8], allow_special: bool) -> Result<String, Errno> {
    canonicalize_in(IMPLICIT_PATH, raw, allow_special)
}

/// [`canonicalize`] for a client whose relative paths go under `home` (its own
/// `/local/domain/<id>`).
pub(crate) fn canonicalize_in(
    home: &str,
    raw: &[u8],
    allow_special: bool,
) -> Result<String, Errno> {
    let valid = raw
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b));
    if !valid || (raw.first() == Some(&b'@') && !allow_special) {
        return Err("EINVAL");
    }
    let raw = std::str::from_utf8(raw).map_err(|_| "EINVAL")?;
    let name = if raw.starts_with('/') || raw.starts_with('@') {
        raw.to_string()
    } else {
        format!("{home}/{raw}")
    };
    if (name.ends_with('/') && name != "/") || name.contains("//") {
        return Err("EINVAL");
    }
    if name.len() - local_offset(&name) > REL_PATH_MAX {
        return Err("EINVAL");
    }
    Ok(name)
}

/// Length of a leading "/local/domain/<up to 5 digits>/", else 0.
fn local_offset(name: &str) -> usize {
    let Some(rest) = name.strip_prefix("/local/domain/") else {
        return 0;
    };
    let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
    if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
        "/local/domain/".len() + digits + 1
    } else {
        0
    }
}

/// get_parent(): "/a/b" -> "/a", "/a" -> "/", "@x" -> "/".
pub(crate) fn parent_of(path: &str) -> String {
    match path[1.min(path.len())..].rfind('/') {
        Some(i) => path[..i + 1].to_string(),
        None => "/".to_string(),
    }
}

fn basename(path: &str) -> &str {
    &path[path.rfind('/').map_or(0, |i| i + 1)..]
}

pub(crate) fn child_path(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

/// Is `child` the node `parent` or below it? ("/" is above everything.)
pub(crate) fn is_child(child: &str, parent: &str) -> bool {
    parent == "/"
        || child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

pub(crate) fn read(t: &mut dyn Tree, path: &str) -> Result<Vec<u8>, Errno> {
    t.get(path).map(|n| n.value).ok_or("ENOENT")
}

/// Children as NUL-terminated names.
pub(crate) fn directory(t: &mut dyn Tree, path: &str) -> Result<Vec<u8>, Errno> {
    let node = t.get(path).ok_or("ENOENT")?;
    Ok(encode_children(&node))
}

fn encode_children(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    for child in &node.children {
        out.extend_from_slice(child.as_bytes());
        out.push(0);
    }
    out
}

/// send_directory_part(): "<generation>\0" then as many children (from byte offset
/// `off` of the child list) as fit; an extra NUL marks the end of the list.
pub(crate) fn directory_part(
    t: &mut dyn Tree,
    path: &str,
    off: usize,
    payload_max: usize,
) -> Result<Vec<u8>, Errno> {
    let node = t.get(path).ok_or("ENOENT")?;
    let children = encode_children(&node);
    let mut out = node.generation.to_string().into_bytes();
    out.push(0);
    if off >= children.len() {
        out.push(0);
        return Ok(out);
    }
    let maxlen = payload_max - out.len() - 1;
    let mut len = 0;
    loop {
        let name_len = children[off + len..]
            .iter()
            .position(|&b| b == 0)
            .expect("child list is NUL-terminated");
        if len + name_len >= maxlen {
            break;
        }
        len += name_len + 1;
        if off + len == children.len() {
            break;
        }
    }
    out.extend_from_slice(&children[off..off + len]);
    if off + len == children.len() {
        out.push(0);
    }
    Ok(out)
}

/// Writes a value, creating missing parents (empty, permissions inherited).
pub(crate) fn write(t: &mut dyn Tree, path: &str, value: &[u8]) -> Result<(), Errno> {
    match t.get(path) {
        Some(mut node) => {
            node.value = value.to_vec();
            t.put(path, node);
        }
        None => create(t, path, value)?,
    }
    t.fire(path, false);
    Ok(())
}

pub(crate) fn mkdir(t: &mut dyn Tree, path: &str) -> Result<(), Errno> {
    if t.get(path).is_none() {
        create(t, path, &[])?;
        t.fire(path, false);
    }
    Ok(())
}

/// construct_node() + create_node(): walks up to the first existing ancestor, then
/// creates every missing node down to `path`.
fn create(t: &mut dyn Tree, path: &str, value: &[u8]) -> Result<(), Errno> {
    let mut missing = Vec::new();
    let mut current = path.to_string();
    let (mut parent_path, mut parent) = loop {
        let parent_path = parent_of(&current);
        missing.push(current);
        match t.get(&parent_path) {
            Some(parent) => break (parent_path, parent),
            None if parent_path == "/" => return Err("ENOENT"),
            None => current = parent_path,
        }
    };
    for name in missing.into_iter().rev() {
        parent.children.push(basename(&name).to_string());
        let node = Node::empty(parent.perms.clone());
        t.put(&parent_path, parent);
        parent_path = name;
        parent = node;
    }
    parent.value = value.to_vec();
    t.put(&parent_path, parent);
    Ok(())
}

/// do_rm(): removes the subtree; a missing node is fine if its parent exists.
pub(crate) fn rm(t: &mut dyn Tree, path: &str) -> Result<(), Errno> {
    let Some(node) = t.get(path) else {
        return match t.get(&parent_of(path)) {
            Some(_) => Ok(()),
            None => Err("ENOENT"),
        };
    };
    if path == "/" {
        return Err("EINVAL");
    }
    let parent_path = parent_of(path);
    let mut parent = t.get(&parent_path).ok_or("EINVAL")?;
    remove_subtree(t, path, node, path);
    let name = basename(path);
    parent.children.retain(|c| c != name);
    t.put(&parent_path, parent);
    Ok(())
}

/// Children first; the removed root fires watches on itself and above, each
/// node below fires only watches set exactly on it (delnode_sub()).
fn remove_subtree(t: &mut dyn Tree, path: &str, node: Node, root: &str) {
    for child in &node.children {
        let child = child_path(path, child);
        if let Some(child_node) = t.get(&child) {
            remove_subtree(t, &child, child_node, root);
        }
    }
    t.delete(path);
    t.fire(path, path != root);
}

pub(crate) fn get_perms(t: &mut dyn Tree, path: &str) -> Result<Vec<u8>, Errno> {
    let node = t.get(path).ok_or("ENOENT")?;
    let mut out = Vec::new();
    for perm in &node.perms {
        out.extend_from_slice(perm.render().as_bytes());
        out.push(0);
    }
    Ok(out)
}

pub(crate) fn set_perms(t: &mut dyn Tree, path: &str, perms: Vec<Perm>) -> Result<(), Errno> {
    let mut node = t.get(path).ok_or("ENOENT")?;
    node.perms = perms;
    t.put(path, node);
    t.fire(path, false);
    Ok(())
}
