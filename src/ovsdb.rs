//! Open vSwitch's configuration database, spoken directly: OVSDB JSON-RPC (RFC 7047) over
//! ovsdb-server's unix socket, found as ovs-vsctl finds it. Knows nothing of Xen.
//!
//! A change is one `transact` that also bumps `next_cfg` in the Open_vSwitch table; like
//! ovs-vsctl without `--no-wait`, the change counts as done once ovs-vswitchd has applied it
//! (`cur_cfg` caught up), watched with a `monitor`. Every read waits at most until the run's
//! deadline.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde_json::{Value, json};

use crate::deadline;

const DB: &str = "Open_vSwitch";
/// Where ovs-vsctl looks when `OVS_RUNDIR` is not set (Debian's build).
pub const DEFAULT_RUNDIR: &str = "/var/run/openvswitch";

/// `$OVS_RUNDIR/db.sock`, else `/var/run/openvswitch/db.sock`.
pub fn socket_path() -> PathBuf {
    let dir = std::env::var_os("OVS_RUNDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_RUNDIR), PathBuf::from);
    dir.join("db.sock")
}

/// A port's VLAN settings and its interface's `external_ids`: what xen-vif sets and compares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortConfig {
    pub tag: Option<u16>,
    /// Sorted.
    pub trunks: Vec<u16>,
    /// `access`, `trunk`, `native-tagged`, `native-untagged`, ... (None: OVS decides by `tag`).
    pub vlan_mode: Option<String>,
    pub external_ids: BTreeMap<String, String>,
}

impl PortConfig {
    /// The VLAN columns as ovs-vsctl takes them: `tag=10`, `trunks=20,30`, `vlan_mode=access`.
    pub fn vlan_words(&self) -> Vec<String> {
        let mut w = Vec::new();
        if let Some(t) = self.tag {
            w.push(format!("tag={t}"));
        }
        if !self.trunks.is_empty() {
            let t: Vec<String> = self.trunks.iter().map(u16::to_string).collect();
            w.push(format!("trunks={}", t.join(",")));
        }
        if let Some(m) = &self.vlan_mode {
            w.push(format!("vlan_mode={m}"));
        }
        w
    }
}

/// A port as the database has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// The bridge whose `ports` hold it (None: a port no bridge refers to).
    pub bridge: Option<String>,
    pub config: PortConfig,
}

pub struct Ovsdb {
    sock: UnixStream,
    path: PathBuf,
    buf: Vec<u8>,
    next_id: u64,
    /// Notifications that arrived while waiting for a reply.
    pending: Vec<Value>,
}

/// A value of a set column: `["set", [...]]`, or the one element itself.
fn set_items(v: &Value) -> Vec<&Value> {
    match v.as_array() {
        Some(a) if a.len() == 2 && a[0] == "set" => a[1]
            .as_array()
            .map(|x| x.iter().collect())
            .unwrap_or_default(),
        _ => vec![v],
    }
}

fn uuid_of(v: &Value) -> Option<&str> {
    match v.as_array() {
        Some(a) if a.len() == 2 && a[0] == "uuid" => a[1].as_str(),
        _ => None,
    }
}

fn map_items(v: &Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(pairs) = v
        .as_array()
        .filter(|a| a.len() == 2 && a[0] == "map")
        .and_then(|a| a[1].as_array())
    {
        for p in pairs {
            if let (Some(k), Some(v)) = (p[0].as_str(), p[1].as_str()) {
                m.insert(k.to_string(), v.to_string());
            }
        }
    }
    m
}

fn ints(v: &Value) -> Vec<u16> {
    let mut out: Vec<u16> = set_items(v)
        .into_iter()
        .filter_map(|x| x.as_u64())
        .filter_map(|x| u16::try_from(x).ok())
        .collect();
    out.sort_unstable();
    out
}

fn port_columns(c: &PortConfig) -> Value {
    let opt = |v: Option<Value>| v.unwrap_or_else(|| json!(["set", []]));
    json!({
        "tag": opt(c.tag.map(|t| json!(t))),
        "trunks": ["set", c.trunks],
        "vlan_mode": opt(c.vlan_mode.as_ref().map(|m| json!(m))),
    })
}

fn map_value(m: &BTreeMap<String, String>) -> Value {
    json!([
        "map",
        m.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>()
    ])
}

/// Row condition: `column == value`.
fn eq(column: &str, value: Value) -> Value {
    json!([[column, "==", value]])
}

impl Ovsdb {
    /// Connect to the database at [`socket_path`].
    pub fn connect() -> Result<Ovsdb> {
        let path = socket_path();
        let sock = UnixStream::connect(&path).with_context(|| {
            format!(
                "cannot connect to ovsdb-server at {} (is Open vSwitch running?)",
                path.display()
            )
        })?;
        sock.set_nonblocking(true)?;
        Ok(Ovsdb {
            sock,
            path,
            buf: Vec::new(),
            next_id: 0,
            pending: Vec::new(),
        })
    }

    fn send(&mut self, msg: &Value) -> Result<()> {
        let bytes = serde_json::to_vec(msg)?;
        let mut sent = 0;
        while sent < bytes.len() {
            match self.sock.write(&bytes[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.wait_for(PollFlags::POLLOUT, "ovsdb-server to take a request")?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("send to ovsdb-server"),
            }
        }
        Ok(())
    }

    fn wait_for(&self, what: PollFlags, waiting_for: &str) -> Result<()> {
        loop {
            deadline::check(waiting_for)?;
            let ms = deadline::current().poll_millis();
            let mut fds = [PollFd::new(self.sock.as_fd(), what)];
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, timeout) {
                Ok(0) => continue,
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(anyhow!(e).context("poll the ovsdb-server socket")),
            }
        }
    }

    /// The next complete JSON message from the server.
    fn receive(&mut self, waiting_for: &str) -> Result<Value> {
        loop {
            if !self.buf.is_empty() {
                let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                match it.next() {
                    Some(Ok(v)) => {
                        let used = it.byte_offset();
                        self.buf.drain(..used);
                        return Ok(v);
                    }
                    Some(Err(e)) if e.is_eof() => {}
                    Some(Err(e)) => bail!("ovsdb-server sent malformed JSON: {e}"),
                    None => self.buf.clear(),
                }
            }
            self.wait_for(PollFlags::POLLIN, waiting_for)?;
            let mut chunk = [0u8; 16384];
            match self.sock.read(&mut chunk) {
                Ok(0) => bail!(
                    "ovsdb-server at {} closed the connection",
                    self.path.display()
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e).context("read from ovsdb-server"),
            }
        }
    }

    /// Handle what the server may send unasked: answer `echo` (its liveness probe), keep
    /// notifications for [`Ovsdb::notification`].
    fn unasked(&mut self, msg: Value) -> Result<()> {
        if msg["method"] == "echo" {
            let reply = json!({"id": msg["id"], "result": msg["params"], "error": null});
            return self.send(&reply);
        }
        if msg.get("method").is_some() {
            self.pending.push(msg);
        }
        Ok(())
    }

    /// One JSON-RPC call; returns its `result`.
    fn call(&mut self, method: &str, params: Value, waiting_for: &str) -> Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"method": method, "params": params, "id": id}))?;
        loop {
            let msg = self.receive(waiting_for)?;
            if msg.get("method").is_none() && msg["id"] == id {
                if !msg["error"].is_null() {
                    bail!("ovsdb-server refused {method}: {}", msg["error"]);
                }
                return Ok(msg["result"].clone());
            }
            self.unasked(msg)?;
        }
    }

    /// The next notification (e.g. a monitor's `update`).
    fn notification(&mut self, waiting_for: &str) -> Result<Value> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            let msg = self.receive(waiting_for)?;
            self.unasked(msg)?;
        }
    }

    /// One transaction of `ops`; every operation's result, or the first error.
    pub fn transact(&mut self, ops: Vec<Value>) -> Result<Vec<Value>> {
        let mut params = vec![json!(DB)];
        params.extend(ops);
        let n = params.len() - 1;
        let result = self.call("transact", Value::Array(params), "ovsdb-server to answer")?;
        let results = result
            .as_array()
            .ok_or_else(|| anyhow!("ovsdb-server answered a transaction with {result}"))?;
        // One result per operation; an error past them is the commit's own (e.g. a constraint).
        for (i, r) in results.iter().enumerate() {
            if let Some(e) = r.get("error").and_then(Value::as_str) {
                let details = r["details"].as_str().unwrap_or("");
                let which = if i < n {
                    format!("operation {i}: ")
                } else {
                    String::new()
                };
                bail!("ovsdb transaction failed: {which}{e}{}", {
                    if details.is_empty() {
                        String::new()
                    } else {
                        format!(" ({details})")
                    }
                });
            }
        }
        Ok(results.clone())
    }

    /// The names of the bridges.
    pub fn bridges(&mut self) -> Result<Vec<String>> {
        let r = self.transact(vec![
            json!({"op": "select", "table": "Bridge", "where": [], "columns": ["name"]}),
        ])?;
        let mut names: Vec<String> = r[0]["rows"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| row["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// The port `name` with its bridge and settings, and its `_uuid`.
    fn port_row(&mut self, name: &str) -> Result<Option<(Port, String)>> {
        let r = self.transact(vec![
            json!({"op": "select", "table": "Port", "where": eq("name", json!(name)),
                   "columns": ["_uuid", "tag", "trunks", "vlan_mode"]}),
            json!({"op": "select", "table": "Interface", "where": eq("name", json!(name)),
                   "columns": ["external_ids"]}),
            json!({"op": "select", "table": "Bridge", "where": [], "columns": ["name", "ports"]}),
        ])?;
        let Some(row) = r[0]["rows"].as_array().and_then(|rows| rows.first()) else {
            return Ok(None);
        };
        let uuid = uuid_of(&row["_uuid"])
            .ok_or_else(|| anyhow!("port {name} has no _uuid in ovsdb-server's answer"))?
            .to_string();
        let bridge = r[2]["rows"].as_array().and_then(|rows| {
            rows.iter()
                .find(|b| {
                    set_items(&b["ports"])
                        .into_iter()
                        .any(|p| uuid_of(p) == Some(uuid.as_str()))
                })
                .and_then(|b| b["name"].as_str().map(String::from))
        });
        let external_ids = r[1]["rows"]
            .as_array()
            .and_then(|rows| rows.first())
            .map(|i| map_items(&i["external_ids"]))
            .unwrap_or_default();
        let config = PortConfig {
            tag: ints(&row["tag"]).first().copied(),
            trunks: ints(&row["trunks"]),
            vlan_mode: set_items(&row["vlan_mode"])
                .first()
                .and_then(|m| m.as_str())
                .map(String::from),
            external_ids,
        };
        let port = Port {
            name: name.to_string(),
            bridge,
            config,
        };
        Ok(Some((port, uuid)))
    }

    /// The port `name`, if the database has one.
    pub fn port(&mut self, name: &str) -> Result<Option<Port>> {
        Ok(self.port_row(name)?.map(|(p, _)| p))
    }

    /// Operations that remove port `uuid` (named `name`) and its interfaces, in a transaction
    /// that fails if the port was replaced meanwhile.
    fn del_port_ops(name: &str, uuid: Option<&str>) -> Vec<Value> {
        let rows = match uuid {
            Some(u) => json!([{"_uuid": ["uuid", u]}]),
            None => json!([]),
        };
        let mut ops = vec![json!({"op": "wait", "timeout": 0, "table": "Port",
            "where": eq("name", json!(name)), "columns": ["_uuid"], "until": "==", "rows": rows})];
        if let Some(u) = uuid {
            ops.extend([
                json!({"op": "mutate", "table": "Bridge",
                       "where": [["ports", "includes", ["uuid", u]]],
                       "mutations": [["ports", "delete", ["uuid", u]]]}),
                json!({"op": "delete", "table": "Port", "where": eq("_uuid", json!(["uuid", u]))}),
                json!({"op": "delete", "table": "Interface", "where": eq("name", json!(name))}),
            ]);
        }
        ops
    }

    /// Bump `next_cfg` and run `ops` with it in one transaction; returns the configuration
    /// number to wait for with [`Ovsdb::wait_applied`].
    fn change(&mut self, comment: &str, mut ops: Vec<Value>) -> Result<i64> {
        ops.insert(0, json!({"op": "comment", "comment": comment}));
        ops.push(json!({"op": "mutate", "table": "Open_vSwitch", "where": [],
                        "mutations": [["next_cfg", "+=", 1]]}));
        ops.push(json!({"op": "select", "table": "Open_vSwitch", "where": [],
                        "columns": ["next_cfg"]}));
        let r = self.transact(ops)?;
        let next_cfg = r
            .last()
            .and_then(|s| s["rows"][0]["next_cfg"].as_i64())
            .ok_or_else(|| anyhow!("the database has no Open_vSwitch row (ovs-vsctl init)"))?;
        Ok(next_cfg)
    }

    /// Wait until ovs-vswitchd reports `cur_cfg` >= `next_cfg` (what ovs-vsctl does unless
    /// `--no-wait`).
    pub fn wait_applied(&mut self, next_cfg: i64) -> Result<()> {
        let what = format!("ovs-vswitchd to apply configuration {next_cfg} (is it running?)");
        let initial = self.call(
            "monitor",
            json!([DB, "cfg", {"Open_vSwitch": {"columns": ["cur_cfg"]}}]),
            &what,
        )?;
        let mut updates = initial;
        loop {
            let cur = updates["Open_vSwitch"].as_object().and_then(|rows| {
                rows.values()
                    .filter_map(|r| r["new"]["cur_cfg"].as_i64())
                    .max()
            });
            if cur.is_some_and(|c| c >= next_cfg) {
                return Ok(());
            }
            let n = self.notification(&what)?;
            if n["method"] == "update" && n["params"][0] == "cfg" {
                updates = n["params"][1].clone();
            } else {
                updates = Value::Null;
            }
        }
    }

    /// Make `name` a port of `bridge` with exactly `config` (its interface's external_ids
    /// included), replacing any port of that name, in one transaction. Fails if the bridge
    /// does not exist. Returns the configuration number to wait for.
    pub fn replace_port(
        &mut self,
        bridge: &str,
        name: &str,
        config: &PortConfig,
        comment: &str,
    ) -> Result<i64> {
        let old = self.port_row(name)?.map(|(_, u)| u);
        let mut ops = vec![json!({"op": "wait", "timeout": 0, "table": "Bridge",
            "where": eq("name", json!(bridge)), "columns": ["name"], "until": "==",
            "rows": [{"name": bridge}]})];
        ops.extend(Self::del_port_ops(name, old.as_deref()));
        let mut port = port_columns(config);
        port["name"] = json!(name);
        port["interfaces"] = json!(["named-uuid", "iface"]);
        ops.extend([
            json!({"op": "insert", "table": "Interface", "uuid-name": "iface",
                   "row": {"name": name, "external_ids": map_value(&config.external_ids)}}),
            json!({"op": "insert", "table": "Port", "uuid-name": "port", "row": port}),
            json!({"op": "mutate", "table": "Bridge", "where": eq("name", json!(bridge)),
                   "mutations": [["ports", "insert", ["set", [["named-uuid", "port"]]]]]}),
        ]);
        self.change(comment, ops).map_err(|e| {
            if e.to_string().contains("operation 1: timed out") {
                anyhow!("bridge {bridge} does not exist in Open vSwitch")
            } else if e.to_string().contains("operation 2: timed out") {
                anyhow!("port {name} changed while it was being replaced; try again")
            } else {
                e
            }
        })
    }

    /// Remove the port `name` if it exists; returns the configuration number to wait for, or
    /// None when there was no such port.
    pub fn del_port(&mut self, name: &str, comment: &str) -> Result<Option<i64>> {
        let Some((_, uuid)) = self.port_row(name)? else {
            return Ok(None);
        };
        self.change(comment, Self::del_port_ops(name, Some(&uuid)))
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_values_decode_both_ways_ovsdb_spells_them() {
        assert_eq!(ints(&json!(10)), vec![10]);
        assert_eq!(ints(&json!(["set", [30, 20]])), vec![20, 30]);
        assert_eq!(ints(&json!(["set", []])), Vec::<u16>::new());
        let m = map_items(&json!(["map", [["a", "1"], ["b", "2"]]]));
        assert_eq!(m.get("b").map(String::as_str), Some("2"));
        assert_eq!(uuid_of(&json!(["uuid", "x"])), Some("x"));
    }

    #[test]
    fn port_columns_encode_empty_optionals_as_empty_sets() {
        let c = PortConfig {
            tag: None,
            trunks: vec![20, 30],
            vlan_mode: None,
            external_ids: BTreeMap::new(),
        };
        assert_eq!(
            port_columns(&c),
            json!({"tag": ["set", []], "trunks": ["set", [20, 30]], "vlan_mode": ["set", []]})
        );
    }
}
