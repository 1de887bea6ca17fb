//! The caller contract in one place (docs/contract.md §1): which personality we are, which command,
//! which device, and every parameter with its precedence environment < argv `k=v` < xenstore.
//! Nothing else in xen-vif reads argv, the environment or the backend's keys.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Result, bail};

use crate::ifname::IfName;

/// A `key=value` word as the stock scripts, xend and the CLI take them: split at the first `=`,
/// the key non-empty, the value anything (empty included: each caller decides what an empty
/// value means). `None` for a word that is not one.
pub fn key_value(word: &str) -> Option<(&str, &str)> {
    word.split_once('=').filter(|(k, _)| !k.is_empty())
}

/// The mode the backend's `script` key names (bridge when unset): what an administrator's
/// `xen-vif add`/`remove` does when no mode is given.
pub fn backend_mode(store: &dyn crate::xenstore::Store, backend: &str) -> Result<Mode> {
    let script = store
        .read(&format!("{backend}/script"))
        .map_err(|e| anyhow::anyhow!("read {backend}/script: {e}"))?
        .unwrap_or_default();
    Mode::from_script(&script)
}

/// What the binary was invoked as (basename of argv[0]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    VifBridge,
    VifRoute,
    VifNat,
    VifOpenvswitch,
    VifSetup,
    NetworkBridge,
    NetworkRoute,
    NetworkNat,
    /// The checking replacement for `(network-script /bin/true)`: pre-built bridges.
    NetworkPrebuilt,
    Cli,
}

impl Personality {
    /// Every script name the binary answers to (what an install links to it).
    pub const SCRIPTS: [Personality; 9] = [
        Personality::VifBridge,
        Personality::VifRoute,
        Personality::VifNat,
        Personality::VifOpenvswitch,
        Personality::VifSetup,
        Personality::NetworkBridge,
        Personality::NetworkRoute,
        Personality::NetworkNat,
        Personality::NetworkPrebuilt,
    ];

    pub fn from_argv0(argv0: &str) -> Personality {
        let base = argv0.rsplit('/').next().unwrap_or(argv0);
        Personality::SCRIPTS
            .into_iter()
            .find(|p| p.name() == base)
            .unwrap_or(Personality::Cli)
    }

    /// The name used in logs and messages (and the syslog ident).
    pub fn name(self) -> &'static str {
        match self {
            Personality::VifBridge => "vif-bridge",
            Personality::VifRoute => "vif-route",
            Personality::VifNat => "vif-nat",
            Personality::VifOpenvswitch => "vif-openvswitch",
            Personality::VifSetup => "vif-setup",
            Personality::NetworkBridge => "network-bridge",
            Personality::NetworkRoute => "network-route",
            Personality::NetworkNat => "network-nat",
            Personality::NetworkPrebuilt => "network-prebuilt",
            Personality::Cli => "xen-vif",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Online,
    Offline,
    Add,
    Remove,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "online" => Command::Online,
            "offline" => Command::Offline,
            "add" => Command::Add,
            "remove" => Command::Remove,
            _ => return None,
        })
    }

    /// online/add bring a device up; offline/remove take it down.
    pub fn is_up(self) -> bool {
        matches!(self, Command::Online | Command::Add)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Online => "online",
            Command::Offline => "offline",
            Command::Add => "add",
            Command::Remove => "remove",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeIf {
    /// The netback device `vifD.N`.
    Vif,
    /// The emulated NIC's tap device `vifD.N-emu` (HVM without a stub domain).
    Tap,
}

impl fmt::Display for TypeIf {
    /// As `type_if=` spells it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TypeIf::Vif => "vif",
            TypeIf::Tap => "tap",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Route,
    Nat,
    Openvswitch,
}

impl fmt::Display for Mode {
    /// As the configuration, `status` and the hotplug log name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Bridge => "bridge",
            Mode::Route => "route",
            Mode::Nat => "nat",
            Mode::Openvswitch => "openvswitch",
        })
    }
}

impl Mode {
    pub fn script(self) -> &'static str {
        match self {
            Mode::Bridge => "vif-bridge",
            Mode::Route => "vif-route",
            Mode::Nat => "vif-nat",
            Mode::Openvswitch => "vif-openvswitch",
        }
    }

    /// The mode a `script` value (path or name) stands for, as vif-setup dispatches on it.
    pub fn from_script(script: &str) -> Result<Mode> {
        match script.rsplit('/').next().unwrap_or(script) {
            "" | "vif-bridge" | "vif-setup" => Ok(Mode::Bridge),
            "vif-route" => Ok(Mode::Route),
            "vif-nat" => Ok(Mode::Nat),
            "vif-openvswitch" => Ok(Mode::Openvswitch),
            other => bail!(
                "script {other:?} is not a mode xen-vif implements (vif-bridge, vif-route, vif-nat or vif-openvswitch)"
            ),
        }
    }
}

/// The hotplug argv words, as the stock scripts read them: the command is the first word
/// without '=', and `k=v` words (with '=' after the first character) set variables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Words {
    pub command: Option<String>,
    pub vars: Vec<(String, String)>,
}

impl Words {
    pub fn parse(args: &[String]) -> Words {
        let mut w = Words::default();
        for a in args {
            match key_value(a) {
                Some((k, v)) => w.vars.push((k.to_string(), v.to_string())),
                // `=x` names nothing: not a command either.
                None if a.contains('=') => {}
                None if w.command.is_none() => w.command = Some(a.clone()),
                None => {}
            }
        }
        w
    }

    /// The last value given for `key` (later words override earlier ones, like shell `eval`).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One parameter and where it may come from. Later sources win; empty values count as unset.
pub struct Source {
    pub name: &'static str,
    pub env: Option<&'static str>,
    pub word: Option<&'static str>,
    pub xenstore: Option<&'static str>,
    /// The modes that use the parameter (empty: all); the others do not read its backend key
    /// (one xenstore round trip less, as the stock scripts read a key only where they use it).
    pub only: &'static [Mode],
}

/// The precedence table: environment < argv `k=v` < xenstore backend key.
pub const PARAMS: &[Source] = &[
    Source {
        name: "bridge",
        env: Some("bridge"),
        word: Some("bridge"),
        xenstore: Some("bridge"),
        only: &[Mode::Bridge, Mode::Openvswitch],
    },
    Source {
        name: "ip",
        env: Some("ip"),
        word: Some("ip"),
        xenstore: Some("ip"),
        only: &[],
    },
    // libxl passes the backend's `gatewaydev` as `netdev`; the key itself wins, as everywhere.
    Source {
        name: "gatewaydev",
        env: Some("netdev"),
        word: Some("netdev"),
        xenstore: Some("gatewaydev"),
        only: &[Mode::Route],
    },
    Source {
        name: "vifname",
        env: None,
        word: None,
        xenstore: Some("vifname"),
        only: &[],
    },
    Source {
        name: "mtu",
        env: None,
        word: None,
        xenstore: Some("mtu"),
        only: &[],
    },
    Source {
        name: "vlan",
        env: None,
        word: None,
        xenstore: Some("vlan"),
        only: &[Mode::Bridge, Mode::Openvswitch],
    },
    // The guest's MAC, for the anti-spoofing filter: written by the toolstack, dom0-owned.
    Source {
        name: "mac",
        env: None,
        word: None,
        xenstore: Some("mac"),
        only: &[],
    },
];

/// Backend keys read besides the parameters: identity cross-checks.
pub const IDENTITY_KEYS: &[&str] = &["frontend-id", "handle"];

/// The backend keys xen-vif reads for `mode`, or for any mode (never anything from the guest's
/// frontend directory).
pub fn backend_keys(mode: Option<Mode>) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = IDENTITY_KEYS.to_vec();
    let wanted = |p: &&Source| mode.is_none_or(|m| p.only.is_empty() || p.only.contains(&m));
    keys.extend(PARAMS.iter().filter(wanted).filter_map(|p| p.xenstore));
    keys
}

/// Apply the precedence table.
pub fn resolve_params(
    env: &dyn Fn(&str) -> Option<String>,
    words: &Words,
    backend: &BTreeMap<String, String>,
) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    for p in PARAMS {
        let candidates = [
            p.xenstore.and_then(|k| backend.get(k).cloned()),
            p.word.and_then(|k| words.get(k).map(String::from)),
            p.env.and_then(env),
        ];
        if let Some(v) = candidates.into_iter().flatten().find(|v| !v.is_empty()) {
            out.insert(p.name, v);
        }
    }
    out
}

/// Which guest device a hotplug call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    pub domid: u32,
    pub devid: u32,
}

impl DeviceId {
    /// The name netback gives the device: `vifD.N` (`vifD.N-emu` for the tap).
    pub fn kernel_name(self, type_if: TypeIf) -> String {
        match type_if {
            TypeIf::Vif => format!("vif{}.{}", self.domid, self.devid),
            TypeIf::Tap => format!("vif{}.{}-emu", self.domid, self.devid),
        }
    }

    /// Where the guest reads the MTU (the one frontend key we write, never read).
    pub fn frontend_mtu_path(self) -> String {
        format!("/local/domain/{}/device/vif/{}/mtu", self.domid, self.devid)
    }

    /// The backend directory relative to the backend domain, as libxl passes it.
    pub fn relative_backend(self) -> String {
        format!("backend/vif/{}/{}", self.domid, self.devid)
    }
}

fn parse_id(s: &str, what: &str, whole: &str) -> Result<u32> {
    // Decimal without sign or leading zeros, as xenstore paths spell ids.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        bail!("XENBUS_PATH {whole:?}: {what} {s:?} is not a number");
    }
    s.parse()
        .map_err(|_| anyhow::anyhow!("XENBUS_PATH {whole:?}: {what} {s:?} is out of range"))
}

/// Parse `backend/vif/D/N`, optionally under `/local/domain/B/`.
pub fn parse_backend_path(path: &str) -> Result<DeviceId> {
    let rel = match path.strip_prefix("/local/domain/") {
        Some(rest) => match rest.split_once('/') {
            Some((b, rel)) => {
                parse_id(b, "backend domain", path)?;
                rel
            }
            None => bail!("XENBUS_PATH {path:?} is not a vif backend path"),
        },
        None if path.starts_with('/') => {
            bail!("XENBUS_PATH {path:?} is not a vif backend path")
        }
        None => path,
    };
    let parts: Vec<&str> = rel.split('/').collect();
    match parts.as_slice() {
        ["backend", "vif", d, n] => Ok(DeviceId {
            domid: parse_id(d, "domain id", path)?,
            devid: parse_id(n, "device index", path)?,
        }),
        _ => bail!("XENBUS_PATH {path:?} is not a vif backend path (backend/vif/<domid>/<devid>)"),
    }
}

/// Parse `vifD.N-emu` (udev's tap `add` has no XENBUS_PATH: the stock script derives it so).
pub fn parse_tap_name(name: &str) -> Option<DeviceId> {
    let rest = name.strip_prefix("vif")?.strip_suffix("-emu")?;
    let (d, n) = rest.split_once('.')?;
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(d) || !ok(n) {
        return None;
    }
    Some(DeviceId {
        domid: d.parse().ok()?,
        devid: n.parse().ok()?,
    })
}

/// A hotplug call, fully resolved and validated: what modes act on.
#[derive(Clone, Debug)]
pub struct Hotplug {
    pub script: &'static str,
    pub mode: Mode,
    pub command: Command,
    pub type_if: TypeIf,
    pub id: DeviceId,
    /// XENBUS_PATH as given (relative paths are resolved by xenstored), or derived.
    pub backend: String,
    /// The name netback (or qemu) gave the device.
    pub kernel_name: IfName,
    /// The name it must have: `vifname` (plus `-emu` for the tap), else the kernel name.
    pub wanted_name: IfName,
    pub bridge: Option<IfName>,
    pub gatewaydev: Option<IfName>,
    pub ip: Vec<crate::addr::GuestAddr>,
    pub mtu: Option<u32>,
    pub vlan: Option<Vec<crate::netlink::PortVlan>>,
    /// The backend's `mac`: the only Ethernet source the guest may use.
    pub mac: Option<crate::nftables::Mac>,
    /// Whether the anti-spoofing filter is wanted (the host's configuration; on unless
    /// `antispoof = false`).
    pub antispoof: bool,
    /// vif-openvswitch's `bridge` suffix `.TAG:TRUNK...` (`bridge` holds the name alone).
    pub ovs_vlans: crate::ovsspec::BridgeVlans,
}

impl Hotplug {
    /// The device as named in messages.
    pub fn device(&self) -> &str {
        self.wanted_name.as_str()
    }
}

/// The first step: enough to decide whether there is anything to do, before touching xenstore.
#[derive(Clone, Debug)]
pub struct Call {
    pub script: &'static str,
    pub mode: Mode,
    pub command: Command,
    pub type_if: TypeIf,
    pub words: Words,
}

pub enum Triage {
    /// A combination the stock scripts ignore (e.g. `online type_if=tap`): exit 0.
    Ignore(String),
    Run(Call),
}

/// Whether argv (and the environment) name a hotplug request at all: a known command and
/// interface type.
pub fn is_hotplug_request(args: &[String], env: &dyn Fn(&str) -> Option<String>) -> bool {
    let words = Words::parse(args);
    let type_if = words
        .get("type_if")
        .map(String::from)
        .or_else(|| env("type_if"));
    words.command.as_deref().and_then(Command::parse).is_some()
        && matches!(type_if.as_deref(), None | Some("" | "vif" | "tap"))
}

/// Command and interface type from argv and the environment.
pub fn triage(
    personality: Personality,
    args: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Triage> {
    let mode = match personality {
        Personality::VifRoute => Mode::Route,
        Personality::VifNat => Mode::Nat,
        Personality::VifOpenvswitch => Mode::Openvswitch,
        Personality::VifSetup => Mode::from_script(&env("script").unwrap_or_default())?,
        _ => Mode::Bridge,
    };
    let script = match personality {
        Personality::VifSetup | Personality::Cli => mode.script(),
        p => p.name(),
    };
    let words = Words::parse(args);
    let Some(cmd) = words.command.clone() else {
        bail!("no command given (expected online, offline, add or remove)");
    };
    let Some(command) = Command::parse(&cmd) else {
        bail!("invalid command {cmd:?} (expected online, offline, add or remove)");
    };
    let type_if = match words
        .get("type_if")
        .map(String::from)
        .or_else(|| env("type_if"))
        .as_deref()
    {
        None | Some("") | Some("vif") => TypeIf::Vif,
        Some("tap") => TypeIf::Tap,
        Some(other) => bail!("unknown interface type type_if={other:?} (expected vif or tap)"),
    };
    match (command, type_if) {
        (Command::Online | Command::Offline, TypeIf::Tap)
        | (Command::Add | Command::Remove, TypeIf::Vif) => {
            return Ok(Triage::Ignore(format!(
                "{command} with type_if={} has nothing to do",
                if type_if == TypeIf::Tap { "tap" } else { "vif" }
            )));
        }
        _ => {}
    }
    Ok(Triage::Run(Call {
        script,
        mode,
        command,
        type_if,
        words,
    }))
}

/// Where the backend lives, before reading it.
pub fn locate(call: &Call, env: &dyn Fn(&str) -> Option<String>) -> Result<(DeviceId, String)> {
    let xenbus_path = env("XENBUS_PATH").filter(|p| !p.is_empty());
    match (xenbus_path, call.type_if) {
        (Some(p), _) => Ok((parse_backend_path(&p)?, p)),
        (None, TypeIf::Tap) => {
            let iface = env("INTERFACE").unwrap_or_default();
            let Some(id) = parse_tap_name(&iface) else {
                bail!("no XENBUS_PATH, and INTERFACE {iface:?} is not a vifD.N-emu tap name");
            };
            Ok((id, format!("/local/domain/0/{}", id.relative_backend())))
        }
        (None, TypeIf::Vif) => bail!("XENBUS_PATH is not set"),
    }
}

/// netback's name form: `vifD.N`, and the emulated NIC's `vifD.N-emu` (any digits: a leading
/// zero is no name netback gives, but people and tools still read it as that device's).
fn is_netback_form(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("vif") else {
        return false;
    };
    let rest = rest.strip_suffix("-emu").unwrap_or(rest);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.split_once('.')
        .is_some_and(|(d, n)| digits(d) && digits(n))
}

/// A `vifname` must not squat on another device's identity: netback's name of another guest's
/// device (which that guest's own hotplug would then find and act on), or a word `ip` reads as
/// a keyword (hooks run `ip link set $dev ...`).
fn check_vifname(name: &IfName, id: DeviceId) -> Result<()> {
    if is_netback_form(name.as_str()) && name.as_str() != id.kernel_name(TypeIf::Vif) {
        bail!(
            "vifname {:?} is netback's name form (vifD.N) for another device; choose a \
             name that is not",
            name.as_str()
        );
    }
    if crate::ifname::IP_KEYWORDS.contains(&name.as_str()) {
        bail!(
            "vifname {:?} is a word ip(8) reads as a keyword; choose another name",
            name.as_str()
        );
    }
    Ok(())
}

/// For offline/remove, a parameter that does not validate is logged and left unset (None);
/// for online/add it is the error.
fn lenient<T>(r: Result<T>, command: Command, device: &IfName, key: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if !command.is_up() => {
            crate::log::warn(&format!("{device}: ignoring {key} for {command}: {e:#}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Validate everything the backend and the caller said, before anything changes.
pub fn resolve(
    call: &Call,
    id: DeviceId,
    backend_path: String,
    env: &dyn Fn(&str) -> Option<String>,
    backend: &BTreeMap<String, String>,
) -> Result<Hotplug> {
    for (key, want) in [("frontend-id", id.domid), ("handle", id.devid)] {
        if let Some(v) = backend.get(key) {
            if v.trim().parse::<u32>().ok() != Some(want) {
                bail!(
                    "backend {key} is {v:?} but XENBUS_PATH {backend_path:?} names {}",
                    if key == "handle" {
                        format!("device {want}")
                    } else {
                        format!("domain {want}")
                    }
                );
            }
        }
    }
    let mut params = resolve_params(env, &call.words, backend);
    let kernel_name = IfName::new(&id.kernel_name(call.type_if)).map_err(anyhow::Error::msg)?;
    // Teardown needs only the device's identity: a parameter that went bad after online (a
    // key rewritten, a stricter check in a newer xen-vif) must not keep offline from taking
    // the device down. It is logged and left unset; offline finds the device by netback's
    // name (kept as an altname on a rename) and its routes from the kernel.
    let device = kernel_name.clone();
    let (cmd, dev) = (call.command, &device);
    let vifname = params
        .get("vifname")
        .map(|v| {
            let base = IfName::new(v).map_err(|e| anyhow::anyhow!("vifname: {e}"))?;
            check_vifname(&base, id)?;
            match call.type_if {
                TypeIf::Vif => Ok(base),
                TypeIf::Tap => IfName::new(&format!("{base}-emu"))
                    .map_err(|e| anyhow::anyhow!("vifname {base:?} for the tap: {e}")),
            }
        })
        .transpose();
    let wanted_name = lenient(vifname, cmd, dev, "vifname")?
        .flatten()
        .unwrap_or_else(|| kernel_name.clone());
    // The device the caller names must be this backend's, under either of its names.
    let (var, given) = match call.type_if {
        TypeIf::Vif => ("vif", env("vif")),
        TypeIf::Tap => ("INTERFACE", env("INTERFACE")),
    };
    if let Some(g) = given.filter(|g| !g.is_empty()) {
        if g != kernel_name.as_str() && g != wanted_name.as_str() {
            bail!(
                "{var}={g:?} is not the device of {backend_path} (expected {kernel_name}{})",
                if wanted_name != kernel_name {
                    format!(" or {wanted_name}")
                } else {
                    String::new()
                }
            );
        }
    }
    // vif-openvswitch's bridge value carries the port's VLANs after the name.
    let mut ovs_vlans = crate::ovsspec::BridgeVlans::default();
    if call.mode == Mode::Openvswitch {
        if let Some(b) = params.get("bridge") {
            let spec = crate::ovsspec::parse(b).map_err(anyhow::Error::msg)?;
            if params.contains_key("vlan") && !spec.vlans.is_empty() {
                bail!("bridge {b:?} sets the port's VLANs and so does vlan; give only one of them");
            }
            ovs_vlans = spec.vlans;
            params.insert("bridge", spec.bridge);
        }
    }
    let params = params;
    let name = |key: &str| -> Result<Option<IfName>> {
        let r = params
            .get(key)
            .map(|v| IfName::new(v).map_err(|e| anyhow::anyhow!("{key}: {e}")))
            .transpose();
        Ok(lenient(r, cmd, dev, key)?.flatten())
    };
    let mtu = params
        .get("mtu")
        .map(|v| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| anyhow::anyhow!("mtu {v:?} is not a number in 68..65535"))
        })
        .transpose();
    let mtu = lenient(mtu, cmd, dev, "mtu")?.flatten();
    let vlan = params
        .get("vlan")
        .map(|v| crate::vlanspec::parse(v).map_err(|e| anyhow::anyhow!("vlan: {e}")))
        .transpose();
    let vlan = lenient(vlan, cmd, dev, "vlan")?.flatten();
    let ip = match (call.mode, params.get("ip")) {
        // NAT mode has exactly one guest address, given or derived from the device's ids.
        // An address online refused was never set up: offline still tears the rest down.
        (Mode::Nat, given) => {
            let g = crate::addr::nat_guest_address(given.map(String::as_str), id.domid, id.devid);
            lenient(g, cmd, dev, "ip")?.into_iter().collect()
        }
        (_, Some(list)) => {
            lenient(crate::addr::parse_guest_addrs(list), cmd, dev, "ip")?.unwrap_or_default()
        }
        (_, None) => Vec::new(),
    };
    let mac = params
        .get("mac")
        .map(|m| crate::addr::parse_mac(m))
        .transpose()?;
    Ok(Hotplug {
        script: call.script,
        mode: call.mode,
        command: call.command,
        type_if: call.type_if,
        id,
        backend: backend_path,
        kernel_name,
        wanted_name,
        bridge: name("bridge")?,
        gatewaydev: name("gatewaydev")?,
        ip,
        mtu,
        vlan,
        mac,
        antispoof: true,
        ovs_vlans,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_mode_reads_only_its_keys() {
        let bridge = backend_keys(Some(Mode::Bridge));
        let route = backend_keys(Some(Mode::Route));
        for k in ["frontend-id", "handle", "ip", "vifname", "mtu", "mac"] {
            assert!(bridge.contains(&k) && route.contains(&k), "{k}");
        }
        assert!(bridge.contains(&"bridge") && bridge.contains(&"vlan"));
        assert!(!bridge.contains(&"gatewaydev"));
        assert!(route.contains(&"gatewaydev"));
        assert!(!route.contains(&"bridge") && !route.contains(&"vlan"));
        let ovs = backend_keys(Some(Mode::Openvswitch));
        assert!(ovs.contains(&"bridge") && ovs.contains(&"vlan"));
        assert!(!ovs.contains(&"gatewaydev"));
        let nat = backend_keys(Some(Mode::Nat));
        assert!(nat.contains(&"ip") && nat.contains(&"mac"));
        assert!(!nat.contains(&"bridge") && !nat.contains(&"gatewaydev"));
        // `xen-vif status` shows everything.
        assert_eq!(backend_keys(None).len(), IDENTITY_KEYS.len() + PARAMS.len());
    }

    #[test]
    fn personality_by_basename() {
        assert_eq!(
            Personality::from_argv0("/etc/xen/scripts/vif-bridge"),
            Personality::VifBridge
        );
        assert_eq!(Personality::from_argv0("vif-route"), Personality::VifRoute);
        assert_eq!(
            Personality::from_argv0("./network-bridge"),
            Personality::NetworkBridge
        );
        assert_eq!(Personality::from_argv0("xen-vif"), Personality::Cli);
        for p in Personality::SCRIPTS {
            assert_eq!(Personality::from_argv0(p.name()), p);
        }
    }

    #[test]
    fn words_like_the_stock_scripts() {
        let w = Words::parse(&args(&[
            "bridge=br0",
            "online",
            "type_if=vif",
            "=x",
            "stray",
        ]));
        assert_eq!(w.command.as_deref(), Some("online"));
        assert_eq!(w.get("bridge"), Some("br0"));
        assert_eq!(w.get("type_if"), Some("vif"));
        let w = Words::parse(&args(&["online", "ip=1", "ip=2"]));
        assert_eq!(w.get("ip"), Some("2"));
    }

    #[test]
    fn precedence_env_then_argv_then_xenstore() {
        let words = Words::parse(&args(&["online", "bridge=argv-br", "netdev=argv-gw"]));
        let env = env_of(&[
            ("bridge", "env-br"),
            ("netdev", "env-gw"),
            ("ip", "10.0.0.1"),
        ]);
        let mut backend = BTreeMap::new();
        backend.insert("bridge".to_string(), "xs-br".to_string());
        let p = resolve_params(&env, &words, &backend);
        assert_eq!(p["bridge"], "xs-br");
        assert_eq!(p["gatewaydev"], "argv-gw");
        assert_eq!(p["ip"], "10.0.0.1");
        backend.insert("gatewaydev".to_string(), "xs-gw".to_string());
        assert_eq!(
            resolve_params(&env, &words, &backend)["gatewaydev"],
            "xs-gw"
        );
        // Empty values fall through to the next source.
        backend.insert("bridge".to_string(), String::new());
        assert_eq!(resolve_params(&env, &words, &backend)["bridge"], "argv-br");
        // vifname, mtu and vlan come from xenstore only.
        let env = env_of(&[("vifname", "x"), ("mtu", "9000")]);
        let p = resolve_params(
            &env,
            &Words::parse(&args(&["online", "mtu=1"])),
            &BTreeMap::new(),
        );
        assert!(!p.contains_key("vifname") && !p.contains_key("mtu"));
    }

    #[test]
    fn backend_paths() {
        let id = parse_backend_path("backend/vif/5/0").unwrap();
        assert_eq!((id.domid, id.devid), (5, 0));
        let id = parse_backend_path("/local/domain/0/backend/vif/12/3").unwrap();
        assert_eq!((id.domid, id.devid), (12, 3));
        for bad in [
            "backend/vif/5",
            "backend/vif/5/0/x",
            "backend/vbd/5/0",
            "backend/vif/../0",
            "backend/vif/5/-1",
            "backend/vif/05/0",
            "backend/vif/5/99999999999",
            "/backend/vif/5/0",
            "/local/domain/x/backend/vif/5/0",
            "",
        ] {
            assert!(parse_backend_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tap_names() {
        assert_eq!(
            parse_tap_name("vif7.1-emu"),
            Some(DeviceId { domid: 7, devid: 1 })
        );
        assert_eq!(parse_tap_name("vif7.1"), None);
        assert_eq!(parse_tap_name("vifa.1-emu"), None);
    }

    #[test]
    fn ignored_combinations() {
        let env = env_of(&[]);
        for a in [
            &["online", "type_if=tap"][..],
            &["offline", "type_if=tap"],
            &["add", "type_if=vif"],
            &["remove"],
        ] {
            assert!(matches!(
                triage(Personality::VifBridge, &args(a), &env).unwrap(),
                Triage::Ignore(_)
            ));
        }
        assert!(triage(Personality::VifBridge, &args(&["start"]), &env).is_err());
        assert!(triage(Personality::VifBridge, &args(&[]), &env).is_err());
        assert!(
            triage(
                Personality::VifBridge,
                &args(&["online", "type_if=x"]),
                &env
            )
            .is_err()
        );
    }

    #[test]
    fn vif_setup_dispatches_on_script() {
        let env = env_of(&[("script", "/etc/xen/scripts/vif-route")]);
        let Triage::Run(c) = triage(Personality::VifSetup, &args(&["online"]), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Route);
        let env = env_of(&[]);
        let Triage::Run(c) = triage(Personality::VifSetup, &args(&["online"]), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Bridge);
        let env = env_of(&[("script", "/etc/xen/scripts/vif-nat")]);
        let Triage::Run(c) = triage(Personality::VifSetup, &args(&["online"]), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Nat);
        let env = env_of(&[("script", "vif-openvswitch")]);
        let Triage::Run(c) = triage(Personality::VifSetup, &args(&["online"]), &env).unwrap()
        else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Openvswitch);
        let env = env_of(&[("script", "vif-custom")]);
        assert!(triage(Personality::VifSetup, &args(&["online"]), &env).is_err());
    }

    fn call(a: &[&str]) -> Call {
        match triage(Personality::VifBridge, &args(a), &env_of(&[])).unwrap() {
            Triage::Run(c) => c,
            Triage::Ignore(_) => panic!(),
        }
    }

    #[test]
    fn identity_cross_checks() {
        let id = DeviceId { domid: 5, devid: 0 };
        let c = call(&["online"]);
        let mut be = BTreeMap::new();
        be.insert("frontend-id".to_string(), "6".to_string());
        let e = resolve(&c, id, "backend/vif/5/0".into(), &env_of(&[]), &be).unwrap_err();
        assert!(e.to_string().contains("frontend-id"), "{e}");
        be.insert("frontend-id".to_string(), "5".to_string());
        be.insert("handle".to_string(), "0".to_string());
        assert!(resolve(&c, id, "backend/vif/5/0".into(), &env_of(&[]), &be).is_ok());
        let e = resolve(&c, id, "p".into(), &env_of(&[("vif", "eth0")]), &be).unwrap_err();
        assert!(e.to_string().contains("vif=\"eth0\""), "{e}");
        be.insert("vifname".to_string(), "web0".to_string());
        let h = resolve(&c, id, "p".into(), &env_of(&[("vif", "web0")]), &be).unwrap();
        assert_eq!(h.wanted_name.as_str(), "web0");
        assert_eq!(h.kernel_name.as_str(), "vif5.0");
        // Its own netback name is no rename at all, and fine.
        be.insert("vifname".to_string(), "vif5.0".to_string());
        let h = resolve(&c, id, "p".into(), &env_of(&[]), &be).unwrap();
        assert_eq!(h.wanted_name, h.kernel_name);
        for fine in ["vif5", "vif5.0a", "vifx.1", "guest5.0"] {
            be.insert("vifname".to_string(), fine.to_string());
            assert!(
                resolve(&c, id, "p".into(), &env_of(&[]), &be).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn openvswitch_bridge_suffix_and_vlan_conflict() {
        let id = DeviceId { domid: 5, devid: 0 };
        let Triage::Run(c) = triage(
            Personality::VifOpenvswitch,
            &args(&["online"]),
            &env_of(&[]),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.mode, Mode::Openvswitch);
        let mut be = BTreeMap::new();
        be.insert("bridge".to_string(), "ovsbr0.10:20:30".to_string());
        let h = resolve(&c, id, "p".into(), &env_of(&[]), &be).unwrap();
        assert_eq!(h.bridge.as_ref().map(IfName::as_str), Some("ovsbr0"));
        assert_eq!(h.ovs_vlans.tag, Some(10));
        assert_eq!(h.ovs_vlans.trunks, vec![20, 30]);
        be.insert("vlan".to_string(), "10".to_string());
        let e = resolve(&c, id, "p".into(), &env_of(&[]), &be).unwrap_err();
        assert!(e.to_string().contains("give only one"), "{e}");
        be.insert("bridge".to_string(), "ovsbr0".to_string());
        let h = resolve(&c, id, "p".into(), &env_of(&[]), &be).unwrap();
        assert!(h.ovs_vlans.is_empty() && h.vlan.is_some());
        be.insert("bridge".to_string(), "ovsbr0.x".to_string());
        assert!(resolve(&c, id, "p".into(), &env_of(&[]), &be).is_err());
        // Bridge mode takes a dotted name as the name of a Linux bridge.
        let b = call(&["online"]);
        be.remove("vlan");
        be.insert("bridge".to_string(), "br0.10".to_string());
        let h = resolve(&b, id, "p".into(), &env_of(&[]), &be).unwrap();
        assert_eq!(h.bridge.as_ref().map(IfName::as_str), Some("br0.10"));
    }

    #[test]
    fn bad_values_are_refused() {
        let id = DeviceId { domid: 5, devid: 0 };
        let c = call(&["online"]);
        for (k, v) in [
            ("vifname", "a/b"),
            ("vifname", ".."),
            ("vifname", "0123456789abcdef"),
            ("mtu", "0"),
            ("mtu", "-1"),
            ("mtu", "70000"),
            ("mtu", "junk"),
            ("bridge", "br 0"),
            ("vlan", "x"),
            ("ip", "not-an-ip"),
            ("vifname", "vif6.0"),
            ("vifname", "vif5.1"),
            ("vifname", "vif5.0-emu"),
            ("vifname", "vif6.0-emu"),
            ("vifname", "vif05.0"),
            ("vifname", "all"),
            ("vifname", "default"),
            ("vifname", "up"),
            ("vifname", "-x"),
        ] {
            let mut be = BTreeMap::new();
            be.insert(k.to_string(), v.to_string());
            let e = resolve(&c, id, "p".into(), &env_of(&[]), &be);
            assert!(e.is_err(), "{k}={v}");
        }
    }
}
