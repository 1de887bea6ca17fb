//! The state file of a network script: what `start` is about to change, written (and synced)
//! before the first change, so `stop` can restore the host from a new process, after a crash,
//! or after a start that was interrupted half-way. One file per started instance, one lock for
//! all network scripts of a network namespace (two starts never interleave).
//!
//! Format: line-oriented text, `<kind> key=value ...`, values %-escaped. Plain text on purpose:
//! an administrator can read what will be undone. The records are typed; `Record::line` and
//! `Record::parse` are the one codec, and decoding checks every field (interface names, numbers,
//! sysctl paths), so a record that `start` could not have written refuses the whole file.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, anyhow, bail};
use nix::fcntl::Flock;

use crate::ifname::IfName;
use crate::netlink::{Address, Route, RouteProtocol, RouteScope, RouteType};

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

/// A link as start saw or made it: `stop` acts on the ifindex only while it still has this name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkId {
    pub index: u32,
    pub name: IfName,
}

impl LinkId {
    pub fn new(index: u32, name: &IfName) -> LinkId {
        LinkId {
            index,
            name: name.clone(),
        }
    }
}

/// One fact `stop` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The parameters that name the instance again (`k=v` as given to start).
    Instance(Vec<(String, String)>),
    /// network-bridge over a NIC: the NIC, renamed to `pdev`; whether it was up, its alias.
    Nic {
        link: LinkId,
        pdev: IfName,
        up: bool,
        alias: Option<String>,
    },
    /// A bridge start created: over a NIC, for one VLAN (`vid`), or VLAN-aware (`filtering`).
    Bridge {
        link: LinkId,
        vid: Option<u16>,
        filtering: bool,
    },
    /// The trunk under per-VLAN bridges or a VLAN-aware bridge; whether it was up.
    Trunk { link: LinkId, up: bool },
    /// An 802.1q device start created, port of the bridge with ifindex `bridge`.
    Vlan { link: LinkId, vid: u16, bridge: u32 },
    /// An address start moved or added.
    Addr(Address),
    /// A route start moved.
    Route(Route),
    /// A link start created (network-route's gateway device).
    Created(LinkId),
    /// A link start brought up.
    Up(LinkId),
    /// A sysctl start wrote: from `old` to `new`.
    Sysctl {
        path: String,
        old: String,
        new: String,
    },
    /// A value the kernel rewrites when a global sysctl changes, as it was before start.
    Cascade { path: String, old: String },
    /// network-nat's source-NAT chain out of `uplink`, which start made (its table and name
    /// follow from the uplink: a record cannot name any other chain).
    Masquerade { uplink: IfName },
}

/// The `key=value` fields of one line, each taken once; what is left over is an error.
struct Fields<'a> {
    kind: &'a str,
    map: BTreeMap<String, String>,
}

impl Fields<'_> {
    fn opt(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }

    fn get(&mut self, key: &str) -> Result<String> {
        self.opt(key)
            .ok_or_else(|| anyhow!("record {:?} has no {key}", self.kind))
    }

    fn parse<T: FromStr>(&self, key: &str, v: &str) -> Result<T> {
        v.parse()
            .map_err(|_| anyhow!("record {:?}: bad {key} {v:?}", self.kind))
    }

    fn num<T: FromStr>(&mut self, key: &str) -> Result<T> {
        let v = self.get(key)?;
        self.parse(key, &v)
    }

    fn opt_num<T: FromStr>(&mut self, key: &str) -> Result<Option<T>> {
        self.opt(key).map(|v| self.parse(key, &v)).transpose()
    }

    fn flag(&mut self, key: &str) -> Result<bool> {
        match self.get(key)?.as_str() {
            "1" => Ok(true),
            "0" => Ok(false),
            v => bail!("record {:?}: bad {key} {v:?}", self.kind),
        }
    }

    fn ifname(&mut self, key: &str) -> Result<IfName> {
        let v = self.get(key)?;
        IfName::new(&v).map_err(|e| anyhow!("record {:?}: {key}: {e}", self.kind))
    }

    fn index(&mut self, key: &str) -> Result<u32> {
        let i: u32 = self.num(key)?;
        if i == 0 || i > i32::MAX as u32 {
            bail!("record {:?}: bad {key} {i}", self.kind);
        }
        Ok(i)
    }

    fn link(&mut self) -> Result<LinkId> {
        Ok(LinkId {
            index: self.index("index")?,
            name: self.ifname("name")?,
        })
    }

    fn vid(&mut self, v: Option<String>) -> Result<Option<u16>> {
        v.map(|v| {
            crate::vlanspec::parse_vid(&v)
                .ok_or_else(|| anyhow!("record {:?}: bad vid {v:?}", self.kind))
        })
        .transpose()
    }

    /// A sysctl path: only a network sysctl, so no record can steer root's write elsewhere.
    fn sysctl_path(&mut self) -> Result<String> {
        let p = self.get("path")?;
        crate::sysctl::network_sysctl(&p)?;
        Ok(p)
    }

    fn prefix_len(&mut self, ip: &IpAddr) -> Result<u8> {
        let len: u8 = self.num("len")?;
        if len > if ip.is_ipv4() { 32 } else { 128 } {
            bail!("record {:?}: bad len {len} for {ip}", self.kind);
        }
        Ok(len)
    }

    fn done(self) -> Result<()> {
        match self.map.keys().next() {
            Some(k) => bail!("record {:?}: unknown field {k:?}", self.kind),
            None => Ok(()),
        }
    }
}

impl Record {
    fn kind(&self) -> &'static str {
        match self {
            Record::Instance(_) => "instance",
            Record::Nic { .. } => "nic",
            Record::Bridge { .. } => "bridge",
            Record::Trunk { .. } => "trunk",
            Record::Vlan { .. } => "vlan",
            Record::Addr(_) => "addr",
            Record::Route(_) => "route",
            Record::Created(_) => "created",
            Record::Up(_) => "up",
            Record::Sysctl { .. } => "sysctl",
            Record::Cascade { .. } => "cascade",
            Record::Masquerade { .. } => "masquerade",
        }
    }

    /// The fields in the order this version (and the ones before it) writes them.
    fn fields(&self) -> Vec<(String, String)> {
        let mut f: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &dyn fmt::Display| f.push((k.to_string(), v.to_string()));
        match self {
            Record::Instance(params) => return params.clone(),
            Record::Nic {
                link,
                pdev,
                up,
                alias,
            } => {
                set("index", &link.index);
                set("name", &link.name);
                set("pdev", pdev);
                set("up", &u8::from(*up));
                if let Some(a) = alias {
                    set("alias", a);
                }
            }
            Record::Bridge {
                link,
                vid,
                filtering,
            } => {
                set("index", &link.index);
                set("name", &link.name);
                if let Some(v) = vid {
                    set("vid", v);
                }
                if *filtering {
                    set("filtering", &1);
                }
            }
            Record::Trunk { link, up } => {
                set("index", &link.index);
                set("name", &link.name);
                set("up", &u8::from(*up));
            }
            Record::Vlan { link, vid, bridge } => {
                set("vid", vid);
                set("index", &link.index);
                set("name", &link.name);
                set("bridge", bridge);
            }
            Record::Addr(a) => {
                set("index", &a.index);
                set("ip", &a.ip);
                set("len", &a.prefix_len);
                set("scope", &a.scope);
                set("flags", &a.flags);
                if let Some(l) = &a.label {
                    set("label", l);
                }
                if let Some(b) = a.broadcast {
                    set("brd", &b);
                }
            }
            Record::Route(rt) => {
                set("dst", &rt.dst);
                set("len", &rt.prefix_len);
                set("table", &rt.table);
                set("proto", &u8::from(rt.protocol));
                set("scope", &u8::from(rt.scope));
                set("type", &u8::from(rt.kind));
                if let Some(o) = rt.oif {
                    set("oif", &o);
                }
                if let Some(g) = rt.gateway {
                    set("via", &g);
                }
                if let Some(s) = rt.src {
                    set("src", &s);
                }
                if let Some(m) = rt.metric {
                    set("metric", &m);
                }
            }
            Record::Created(link) | Record::Up(link) => {
                set("index", &link.index);
                set("name", &link.name);
            }
            Record::Sysctl { path, old, new } => {
                set("path", path);
                set("old", old);
                set("new", new);
            }
            Record::Cascade { path, old } => {
                set("path", path);
                set("old", old);
            }
            Record::Masquerade { uplink } => set("uplink", uplink),
        }
        f
    }

    fn line(&self) -> String {
        let mut s = self.kind().to_string();
        for (k, v) in self.fields() {
            s.push(' ');
            s.push_str(&k);
            s.push('=');
            s.push_str(&escape(&v));
        }
        s
    }

    fn parse(line: &str) -> Result<Record> {
        let mut words = line.split(' ');
        let kind = words.next().unwrap_or_default();
        if kind.is_empty() {
            bail!("empty record");
        }
        let mut pairs = Vec::new();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| anyhow!("record {kind:?}: {w:?} is not key=value"))?;
            if k.is_empty() {
                bail!("record {kind:?}: {w:?} has no key");
            }
            pairs.push((k.to_string(), unescape(v)?));
        }
        if kind == "instance" {
            return Ok(Record::Instance(pairs));
        }
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                bail!("record {kind:?}: {k} given twice");
            }
        }
        let mut f = Fields { kind, map };
        let r = match kind {
            "nic" => Record::Nic {
                link: f.link()?,
                pdev: f.ifname("pdev")?,
                up: f.flag("up")?,
                alias: f.opt("alias"),
            },
            "bridge" => {
                let link = f.link()?;
                let vid = f.opt("vid");
                let vid = f.vid(vid)?;
                let filtering = match f.opt("filtering").as_deref() {
                    None => false,
                    Some("1") => true,
                    Some(v) => bail!("record \"bridge\": bad filtering {v:?}"),
                };
                Record::Bridge {
                    link,
                    vid,
                    filtering,
                }
            }
            "trunk" => Record::Trunk {
                link: f.link()?,
                up: f.flag("up")?,
            },
            "vlan" => {
                let vid = f.get("vid")?;
                Record::Vlan {
                    vid: f.vid(Some(vid))?.unwrap_or_default(),
                    link: f.link()?,
                    bridge: f.index("bridge")?,
                }
            }
            "addr" => {
                let ip: IpAddr = f.num("ip")?;
                Record::Addr(Address {
                    index: f.index("index")?,
                    prefix_len: f.prefix_len(&ip)?,
                    ip,
                    scope: f.num("scope")?,
                    flags: f.num("flags")?,
                    label: f.opt("label"),
                    broadcast: f.opt_num::<Ipv4Addr>("brd")?,
                })
            }
            "route" => {
                let dst: IpAddr = f.num("dst")?;
                Record::Route(Route {
                    prefix_len: f.prefix_len(&dst)?,
                    dst,
                    oif: f.opt_num("oif")?,
                    gateway: f.opt_num("via")?,
                    src: f.opt_num("src")?,
                    metric: f.opt_num("metric")?,
                    table: f.num("table")?,
                    protocol: RouteProtocol::from(f.num::<u8>("proto")?),
                    scope: RouteScope::from(f.num::<u8>("scope")?),
                    kind: RouteType::from(f.num::<u8>("type")?),
                })
            }
            "created" => Record::Created(f.link()?),
            "up" => Record::Up(f.link()?),
            "sysctl" => Record::Sysctl {
                path: f.sysctl_path()?,
                old: f.get("old")?,
                new: f.get("new")?,
            },
            "cascade" => Record::Cascade {
                path: f.sysctl_path()?,
                old: f.get("old")?,
            },
            "masquerade" => Record::Masquerade {
                uplink: f.ifname("uplink")?,
            },
            _ => bail!("unknown record {kind:?}"),
        };
        f.done()?;
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

    /// The parameters the instance was started with.
    pub fn instance(&self) -> Result<&[(String, String)]> {
        self.records
            .iter()
            .find_map(|r| match r {
                Record::Instance(p) => Some(p.as_slice()),
                _ => None,
            })
            .ok_or_else(|| anyhow!("state has no \"instance\" record"))
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
        crate::lock::lock_file(&crate::lock::network_lock_in(&self.dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> IfName {
        IfName::new(n).unwrap()
    }

    fn every_variant() -> Vec<Record> {
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
        rt.src = Some("10.0.0.2".parse().unwrap());
        let v6 = Route::via_dev("2001:db8::".parse().unwrap(), 64, 3);
        vec![
            Record::Instance(vec![
                ("netdev".into(), "eth0".into()),
                ("gateway".into(), "10.0.0.1/29,2001:db8::1/64".into()),
            ]),
            Record::Nic {
                link: LinkId::new(3, &name("eth0")),
                pdev: name("peth0"),
                up: true,
                alias: Some("up link=1%".into()),
            },
            Record::Nic {
                link: LinkId::new(3, &name("eth0")),
                pdev: name("peth0"),
                up: false,
                alias: None,
            },
            Record::Bridge {
                link: LinkId::new(11, &name("eth0")),
                vid: None,
                filtering: false,
            },
            Record::Bridge {
                link: LinkId::new(12, &name("br4")),
                vid: Some(4),
                filtering: false,
            },
            Record::Bridge {
                link: LinkId::new(13, &name("xenbr0")),
                vid: None,
                filtering: true,
            },
            Record::Trunk {
                link: LinkId::new(4, &name("eth1")),
                up: false,
            },
            Record::Vlan {
                link: LinkId::new(14, &name("eth1.4")),
                vid: 4,
                bridge: 12,
            },
            Record::Addr(a.clone()),
            Record::Addr(Address::new(3, "2001:db8::2".parse().unwrap(), 64)),
            Record::Route(rt),
            Record::Route(v6),
            Record::Created(LinkId::new(9, &name("dummy0"))),
            Record::Up(LinkId::new(9, &name("dummy0"))),
            Record::Sysctl {
                path: "/proc/sys/net/ipv4/conf/vif5.0/proxy_arp".into(),
                old: "".into(),
                new: "1".into(),
            },
            Record::Cascade {
                path: "/proc/sys/net/ipv4/conf/eth0/forwarding".into(),
                old: "1".into(),
            },
            Record::Masquerade {
                uplink: name("eth0"),
            },
        ]
    }

    #[test]
    fn every_record_round_trips() {
        let st = State {
            phase: Phase::Started,
            records: every_variant(),
        };
        let text = st.render("network-bridge");
        assert_eq!(State::parse(&text).unwrap(), st);
        for r in every_variant() {
            assert_eq!(Record::parse(&r.line()).unwrap(), r, "{}", r.line());
        }
        assert!(text.contains("label=eth0:web%201"), "{text}");
    }

    /// State files as the version before the typed records wrote them still load.
    #[test]
    fn files_of_the_released_format_load() {
        let bridge = "# xen-vif: written by `network-bridge start`, read by `network-bridge stop`; do not edit
version 1
phase started
instance netdev=eth0 bridge=eth0
nic index=2 name=eth0 pdev=peth0 up=1 alias=uplink
bridge index=7 name=eth0
addr index=2 ip=10.0.0.2 len=24 scope=0 flags=128 label=eth0 brd=10.0.0.255
addr index=2 ip=2001:db8::2 len=64 scope=0 flags=128
route dst=0.0.0.0 len=0 table=254 proto=3 scope=0 type=1 oif=2 via=10.0.0.1
route dst=192.168.5.0 len=24 table=254 proto=3 scope=0 type=1 oif=2 via=10.0.0.1 metric=5
";
        let st = State::parse(bridge).unwrap();
        assert_eq!(st.phase, Phase::Started);
        assert_eq!(st.instance().unwrap()[0], ("netdev".into(), "eth0".into()));
        assert_eq!(st.records.len(), 7);
        assert_eq!(
            st.records[1],
            Record::Nic {
                link: LinkId::new(2, &name("eth0")),
                pdev: name("peth0"),
                up: true,
                alias: Some("uplink".into()),
            }
        );
        let Record::Route(r) = &st.records[6] else {
            panic!("{:?}", st.records[6]);
        };
        assert_eq!(
            (r.metric, r.gateway),
            (Some(5), Some("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(st.render("network-bridge"), bridge);

        let trunk = "version 1
phase starting
instance trunk=eth1 vlans=4 bridge_template=br%25d
trunk index=3 name=eth1 up=0
vlan vid=4 index=11 name=eth1.4 bridge=12
bridge index=12 name=br4 vid=4
bridge index=13 name=xenbr0 filtering=1
";
        let st = State::parse(trunk).unwrap();
        assert_eq!(st.instance().unwrap()[2].1, "br%d");
        assert_eq!(st.records.len(), 5);

        let route = "version 1
phase started
instance netdev=gw0 gateway=10.9.0.1/29
created index=9 name=gw0
sysctl path=/proc/sys/net/ipv4/ip_forward old=0 new=1
cascade path=/proc/sys/net/ipv4/conf/all/forwarding old=0
sysctl path=/proc/sys/net/ipv4/conf/gw0/proxy_arp old= new=1
up index=9 name=gw0
";
        let st = State::parse(route).unwrap();
        assert_eq!(
            st.records[3],
            Record::Cascade {
                path: "/proc/sys/net/ipv4/conf/all/forwarding".into(),
                old: "0".into()
            }
        );
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let head = "version 1\nphase started\n";
        for bad in [
            "",
            "version 2\nphase started\n",
            "version 1\n",
            "version 1\nphase running\n",
            "version 1\nphase started\n addr\n",
        ] {
            assert!(State::parse(bad).is_err(), "{bad:?}");
        }
        for bad in [
            // The line format.
            "addr ip",
            "addr ip=%4",
            "addr ip=%ZZ",
            "addr ip=%FF",
            "instance =eth0",
            "mystery index=1",
            // Missing, unknown and repeated fields.
            "created index=9",
            "created index=9 name=gw0 extra=1",
            "created index=9 name=gw0 name=gw1",
            // Numbers.
            "created index=x name=gw0",
            "created index=0 name=gw0",
            "created index=-1 name=gw0",
            "up index=4294967296 name=gw0",
            "trunk index=3 name=eth1 up=2",
            "nic index=2 name=eth0 pdev=peth0 up=yes",
            "vlan vid=4095 index=11 name=eth1.4 bridge=12",
            "vlan vid=0 index=11 name=eth1.4 bridge=12",
            "bridge index=12 name=br4 vid=x",
            "bridge index=12 name=br4 filtering=2",
            "addr index=2 ip=10.0.0.2 len=33 scope=0 flags=0",
            "addr index=2 ip=10.0.0.2 len=24 scope=256 flags=0",
            "addr index=2 ip=10.0.0.2 len=24 scope=0 flags=0 brd=2001:db8::1",
            "addr index=2 ip=x len=24 scope=0 flags=0",
            "route dst=0.0.0.0 len=0 table=254 proto=300 scope=0 type=1",
            "route dst=2001:db8:: len=129 table=254 proto=3 scope=0 type=1",
            "route dst=0.0.0.0 len=0 table=254 proto=3 scope=0 type=1 via=gw",
            // Interface names.
            "created index=9 name=a/b",
            "created index=9 name=",
            "created index=9 name=0123456789abcdef",
            "nic index=2 name=eth0 pdev=p%3Aeth0 up=1",
            "up index=9 name=..",
            // Sysctl paths outside /proc/sys/net/.
            "sysctl path=/etc/passwd old=0 new=1",
            "sysctl path=/proc/sys/net/../kernel/core_pattern old=0 new=1",
            "cascade path=/proc/sys/kernel/core_pattern old=0",
            "sysctl old=0 new=1",
            // The NAT chain: only network-nat's own, named by its uplink.
            "masquerade",
            "masquerade uplink=a/b",
            "masquerade uplink=",
            "masquerade uplink=eth0 table=filter",
            "masquerade uplink=eth0 chain=postrouting",
            "masquerade uplink=eth0 uplink=eth1",
        ] {
            let text = format!("{head}{bad}\n");
            assert!(State::parse(&text).is_err(), "{bad:?}");
        }
        let st = State::parse("version 1\nphase starting\n").unwrap();
        assert!(st.instance().is_err());
    }
}
