//! The state file of a network script: what `start` is about to change, written (and synced)
//! before the first change, so `stop` can restore the host from a new process, after a crash,
//! or after a start that was interrupted half-way. One file per started instance, one lock for
//! all network scripts of a network namespace (two starts never interleave).
//!
//! Format: line-oriented text, `<kind> key=value ...`, values %-escaped. Plain text on purpose:
//! an administrator can read what will be undone.

use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::Flock;

use crate::netlink::{Address, Route};

const VERSION: &str = "1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Written before the first change: the start may have been interrupted.
    Starting,
    /// Every step of start succeeded.
    Started,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Starting => "starting",
            Phase::Started => "started",
        })
    }
}

/// One fact `stop` needs: `kind` plus named fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub kind: String,
    fields: Vec<(String, String)>,
}

impl Record {
    pub fn new(kind: &str) -> Record {
        Record {
            kind: kind.to_string(),
            fields: Vec::new(),
        }
    }

    pub fn set(mut self, key: &str, value: impl fmt::Display) -> Record {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn fields(&self) -> &[(String, String)] {
        &self.fields
    }

    pub fn opt(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.opt(key)
            .ok_or_else(|| anyhow!("state record {:?} has no {key}", self.kind))
    }

    pub fn num<T: FromStr>(&self, key: &str) -> Result<T> {
        let v = self.get(key)?;
        v.parse()
            .map_err(|_| anyhow!("state record {:?}: bad {key} {v:?}", self.kind))
    }

    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key)? {
            "1" => Ok(true),
            "0" => Ok(false),
            v => bail!("state record {:?}: bad {key} {v:?}", self.kind),
        }
    }

    fn line(&self) -> String {
        let mut s = self.kind.clone();
        for (k, v) in &self.fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            s.push_str(&escape(v));
        }
        s
    }

    fn parse(line: &str) -> Result<Record> {
        let mut words = line.split(' ');
        let kind = words.next().unwrap_or_default();
        if kind.is_empty() {
            bail!("empty record");
        }
        let mut r = Record::new(kind);
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| anyhow!("record {kind:?}: {w:?} is not key=value"))?;
            r.fields.push((k.to_string(), unescape(v)?));
        }
        Ok(r)
    }
}

fn escape(v: &str) -> String {
    let mut s = String::new();
    for b in v.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'=' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fn unescape(v: &str) -> Result<String> {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = v
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| anyhow!("bad escape in {v:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| anyhow!("{v:?} is not UTF-8"))
}

/// What one started instance changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub phase: Phase,
    pub records: Vec<Record>,
}

impl State {
    pub fn new(records: Vec<Record>) -> State {
        State {
            phase: Phase::Starting,
            records,
        }
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        self.records.iter().filter(move |r| r.kind == kind)
    }

    /// The one record of `kind`.
    pub fn one(&self, kind: &str) -> Result<&Record> {
        self.records
            .iter()
            .find(|r| r.kind == kind)
            .ok_or_else(|| anyhow!("state has no {kind:?} record"))
    }

    pub fn render(&self, script: &str) -> String {
        let mut s = format!(
            "# xen-vif: written by `{script} start`, read by `{script} stop`; do not edit\n\
             version {VERSION}\nphase {}\n",
            self.phase
        );
        for r in &self.records {
            s.push_str(&r.line());
            s.push('\n');
        }
        s
    }

    pub fn parse(text: &str) -> Result<State> {
        let mut version = None;
        let mut phase = None;
        let mut records = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(' ') {
                Some(("version", v)) => version = Some(v.to_string()),
                Some(("phase", "starting")) => phase = Some(Phase::Starting),
                Some(("phase", "started")) => phase = Some(Phase::Started),
                Some(("phase", _)) => bail!("line {}: bad {line:?}", n + 1),
                _ => records.push(Record::parse(line).with_context(|| format!("line {}", n + 1))?),
            }
        }
        if version.as_deref() != Some(VERSION) {
            bail!("unknown state version {version:?} (this xen-vif writes {VERSION})");
        }
        let phase = phase.ok_or_else(|| anyhow!("no phase line"))?;
        Ok(State { phase, records })
    }

    /// Read the state file, refusing one that fails the run directory's checks: a state file
    /// says what root will change on `stop`, so one that someone else could have written is
    /// never acted on.
    pub fn load(path: &Path) -> Result<Option<State>> {
        let read = |path: &Path| -> std::io::Result<Option<String>> {
            let Some(mut f) = crate::rundir::open_existing(path)? else {
                return Ok(None);
            };
            let mut text = String::new();
            f.read_to_string(&mut text)?;
            Ok(Some(text))
        };
        match read(path) {
            Ok(Some(text)) => State::parse(&text)
                .map(Some)
                .with_context(|| format!("state file {}", path.display())),
            Ok(None) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read state file {}", path.display())),
        }
    }

    /// Replace the file atomically and durably: a crash leaves the old or the new state.
    pub fn save(&self, path: &Path, script: &str) -> Result<()> {
        let shown = path.display();
        let (mut f, tmp) = crate::rundir::create_temp(path)
            .with_context(|| format!("write state file {shown}"))?;
        f.write_all(self.render(script).as_bytes())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("write state file {shown}"))?;
        fs::rename(&tmp, path).with_context(|| format!("write state file {shown}"))?;
        sync_dir(path);
        Ok(())
    }
}

fn sync_dir(path: &Path) {
    // Best effort: the rename is what matters; this only makes it survive a power cut sooner.
    if let Some(dir) = path.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
}

pub fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            sync_dir(path);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove state file {}", path.display())),
    }
}

/// The state directory of this network namespace. The host's namespace uses `base` itself;
/// any other namespace (a container, a test) gets its own subdirectory, because what a state
/// file records (ifindexes, names) only means something in its own namespace.
#[derive(Clone, Debug)]
pub struct Location {
    pub dir: PathBuf,
}

impl Location {
    pub fn new(base: &Path) -> Location {
        Location {
            dir: crate::lock::namespace_dir(base),
        }
    }

    /// `<dir>/<script>@<key>.state`; `key` is an interface name or `trunk:<name>` (':' never
    /// occurs in an interface name, so keys of different kinds cannot collide).
    pub fn state_file(&self, script: &str, key: &str) -> PathBuf {
        self.dir.join(format!("{script}@{key}.state"))
    }

    /// Every state file of `script` in this namespace.
    pub fn state_files(&self, script: &str) -> Vec<PathBuf> {
        let prefix = format!("{script}@");
        let mut out: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "state")
                            && p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The lock every network script of this namespace takes for start and stop.
    pub fn lock(&self) -> Result<Flock<File>> {
        crate::lock::lock_file(&self.dir.join("network-scripts.lock"))
    }
}

pub fn address_record(kind: &str, a: &Address) -> Record {
    let mut r = Record::new(kind)
        .set("index", a.index)
        .set("ip", a.ip)
        .set("len", a.prefix_len)
        .set("scope", a.scope)
        .set("flags", a.flags);
    if let Some(l) = &a.label {
        r = r.set("label", l);
    }
    if let Some(b) = a.broadcast {
        r = r.set("brd", b);
    }
    r
}

pub fn address_of(r: &Record) -> Result<Address> {
    Ok(Address {
        index: r.num("index")?,
        ip: r.num("ip")?,
        prefix_len: r.num("len")?,
        scope: r.num("scope")?,
        flags: r.num("flags")?,
        label: r.opt("label").map(String::from),
        broadcast: r.opt("brd").map(Ipv4Addr::from_str).transpose()?,
    })
}

pub fn route_record(kind: &str, rt: &Route) -> Record {
    let mut r = Record::new(kind)
        .set("dst", rt.dst)
        .set("len", rt.prefix_len)
        .set("table", rt.table)
        .set("proto", rt.protocol)
        .set("scope", rt.scope)
        .set("type", rt.kind);
    if let Some(o) = rt.oif {
        r = r.set("oif", o);
    }
    if let Some(g) = rt.gateway {
        r = r.set("via", g);
    }
    if let Some(s) = rt.src {
        r = r.set("src", s);
    }
    if let Some(m) = rt.metric {
        r = r.set("metric", m);
    }
    r
}

pub fn route_of(r: &Record) -> Result<Route> {
    let ip = |k: &str| r.opt(k).map(IpAddr::from_str).transpose();
    Ok(Route {
        dst: r.num("dst")?,
        prefix_len: r.num("len")?,
        oif: r.opt("oif").map(u32::from_str).transpose()?,
        gateway: ip("via")?,
        src: ip("src")?,
        metric: r.opt("metric").map(u32::from_str).transpose()?,
        table: r.num("table")?,
        protocol: r.num("proto")?,
        scope: r.num("scope")?,
        kind: r.num("type")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let a = Address {
            index: 3,
            ip: "10.0.0.2".parse().unwrap(),
            prefix_len: 24,
            scope: 0,
            flags: 0x80,
            label: Some("eth0:web 1".into()),
            broadcast: Some("10.0.0.255".parse().unwrap()),
        };
        let mut rt = Route::via_dev("0.0.0.0".parse().unwrap(), 0, 3);
        rt.gateway = Some("10.0.0.1".parse().unwrap());
        rt.metric = Some(100);
        let st = State {
            phase: Phase::Started,
            records: vec![
                address_record("addr", &a),
                route_record("route", &rt),
                Record::new("sysctl")
                    .set("path", "/proc/sys/net/ipv4/conf/vif5.0/proxy_arp")
                    .set("old", "")
                    .set("new", "1"),
            ],
        };
        let text = st.render("network-bridge");
        let back = State::parse(&text).unwrap();
        assert_eq!(back, st);
        assert_eq!(address_of(&back.records[0]).unwrap(), a);
        assert_eq!(route_of(&back.records[1]).unwrap(), rt);
        assert_eq!(back.records[2].get("old").unwrap(), "");
        assert!(text.contains("label=eth0:web%201"), "{text}");
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        for bad in [
            "",
            "version 2\nphase started\n",
            "version 1\n",
            "version 1\nphase running\n",
            "version 1\nphase started\naddr ip\n",
            "version 1\nphase started\naddr ip=%4\n",
            "version 1\nphase started\naddr ip=%ZZ\n",
            "version 1\nphase started\naddr ip=%FF\n",
            "version 1\nphase started\n addr\n",
        ] {
            assert!(State::parse(bad).is_err(), "{bad:?}");
        }
        let st = State::parse("version 1\nphase starting\naddr ip=x\n").unwrap();
        assert!(address_of(&st.records[0]).is_err());
        assert!(st.one("route").is_err());
    }
}
