//! `/etc/xen/xen-vif.toml`: host-wide defaults Xen has no key for. The file is optional; absent,
//! xen-vif behaves as the stock scripts. Present but wrong, it is an error at every hotplug and
//! at `xen-vif check-config`, naming the line.
//!
//! The file is TOML, restricted to what five flat settings need: `key = "string"` (basic or
//! literal strings), `antispoof = true|false`, comments and blank lines. Anything else is refused with its line number, so
//! a valid file here is always valid TOML, and nothing is ever silently misread. A full TOML
//! parser (and serde) in a binary that runs on every hotplug would buy nothing for five values.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

use crate::ifname::IfName;
use crate::invocation::Mode;
use crate::trust;

/// The one place the configuration is read from (no environment override: hotplug runs as root
/// with an environment assembled by libxl, udev and the guest's config).
pub const PATH: &str = "/etc/xen/xen-vif.toml";
pub const DEFAULT_LOG_FILE: &str = "/var/log/xen/xen-hotplug.log";
pub const DEFAULT_HOOK_DIR: &str = "/etc/xen/scripts/vif-post.d";

/// The keys, with what each one means (also printed by `xen-vif check-config`).
pub const KEYS: &[(&str, &str)] = &[
    (
        "mode",
        "mode vif-setup uses when the backend's script names none: \"bridge\" or \"route\"",
    ),
    (
        "gatewaydev",
        "gateway device for route mode when neither netdev nor the gatewaydev key is set",
    ),
    (
        "log_file",
        "per-action log (appended to only if its directory exists); \"\" turns it off",
    ),
    (
        "hook_dir",
        "directory of *.hook files run after each action; \"\" turns hooks off",
    ),
    (
        "network_script",
        "the host network xen-vif-network.service builds at boot and takes down at shutdown, \
         as xend-config.sxp's (network-script ...): e.g. \"network-bridge netdev=eth0\"",
    ),
    (
        "antispoof",
        "true (default): each vif gets an nf_tables filter pinning its mac and ip; false: none",
    ),
    (
        "nat_dhcp_hosts",
        "vif-nat writes each guest's DHCP host entry into this dnsmasq --dhcp-hostsfile; \"\" (default): off",
    ),
    (
        "nat_dhcp_options",
        "and its router into this dnsmasq --dhcp-optsfile; \"\" (default): off",
    ),
    (
        "nat_dhcp_pid_file",
        "the DHCP server's pid file (root-owned): it gets SIGHUP after each change; \"\" (default): none",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub mode: Option<Mode>,
    pub gatewaydev: Option<IfName>,
    pub log_file: Option<PathBuf>,
    pub hook_dir: Option<PathBuf>,
    /// `network_script`: the script and its `k=v` words, checked.
    pub network_script: Option<NetworkScript>,
    pub antispoof: bool,
    /// vif-nat's DHCP entries (see `crate::dhcp_hosts`): off unless the hosts file is set.
    pub nat_dhcp_hosts: Option<PathBuf>,
    pub nat_dhcp_options: Option<PathBuf>,
    pub nat_dhcp_pid_file: Option<PathBuf>,
    /// Which keys the file set (for `check-config`).
    pub set: Vec<&'static str>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            mode: None,
            gatewaydev: None,
            log_file: Some(PathBuf::from(DEFAULT_LOG_FILE)),
            hook_dir: Some(PathBuf::from(DEFAULT_HOOK_DIR)),
            network_script: None,
            antispoof: true,
            nat_dhcp_hosts: None,
            nat_dhcp_options: None,
            nat_dhcp_pid_file: None,
            set: Vec::new(),
        }
    }
}

/// Read `path`; a missing file is the stock behaviour. The file steers what root runs (hooks)
/// and writes (the log), so it must pass the trust rule (`trust`) like a hook.
pub fn load_from(path: &Path) -> Result<Config> {
    let missing = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    match std::fs::symlink_metadata(path) {
        Err(e) if missing(&e) => return Ok(Config::default()),
        _ => trust::require("configuration", path, trust::Kind::File)?,
    }
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("{}: not UTF-8 text", path.display()))?;
    parse(&text).with_context(|| format!("configuration {}", path.display()))
}

/// The configuration of this run, read once. The error is kept as text so every caller can
/// report it.
/// The stock defaults, used when the file is bad (see `hotplug::execute`).
pub fn stock() -> &'static Config {
    static STOCK: OnceLock<Config> = OnceLock::new();
    STOCK.get_or_init(Config::default)
}

pub fn current() -> &'static Result<Config, String> {
    static CURRENT: OnceLock<Result<Config, String>> = OnceLock::new();
    CURRENT.get_or_init(|| load_from(Path::new(PATH)).map_err(|e| format!("{e:#}")))
}

pub fn parse(text: &str) -> Result<Config> {
    let mut cfg = Config::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            bail!("line {n}: tables are not used; put the keys at the top of the file");
        }
        let Some((key, rest)) = line.split_once('=') else {
            bail!("line {n}: expected key = \"value\"");
        };
        let key = key.trim();
        let Some(&(known, _)) = KEYS.iter().find(|(k, _)| *k == key) else {
            let names: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            bail!(
                "line {n}: unknown key {key:?} (known: {})",
                names.join(", ")
            );
        };
        if cfg.set.contains(&known) {
            bail!("line {n}: {key} is set twice");
        }
        let value = if known == "antispoof" {
            bool_value(rest.trim()).map_err(|e| anyhow::anyhow!("line {n}: {key}: {e}"))?
        } else {
            string_value(rest.trim()).map_err(|e| anyhow::anyhow!("line {n}: {key}: {e}"))?
        };
        apply(&mut cfg, known, &value).map_err(|e| anyhow::anyhow!("line {n}: {key}: {e}"))?;
        cfg.set.push(known);
    }
    Ok(cfg)
}

fn apply(cfg: &mut Config, key: &str, value: &str) -> Result<()> {
    match key {
        "mode" => {
            cfg.mode = Some(match value {
                "bridge" => Mode::Bridge,
                "route" => Mode::Route,
                "nat" => Mode::Nat,
                "openvswitch" => Mode::Openvswitch,
                other => bail!("{other:?} is not a mode (bridge, route, nat or openvswitch)"),
            })
        }
        "gatewaydev" => cfg.gatewaydev = Some(IfName::new(value).map_err(anyhow::Error::msg)?),
        "log_file" => cfg.log_file = absolute_or_off(value)?,
        "hook_dir" => cfg.hook_dir = absolute_or_off(value)?,
        "network_script" => cfg.network_script = Some(NetworkScript::parse(value)?),
        "antispoof" => cfg.antispoof = value == "true",
        "nat_dhcp_hosts" => cfg.nat_dhcp_hosts = absolute_or_off(value)?,
        "nat_dhcp_options" => cfg.nat_dhcp_options = absolute_or_off(value)?,
        "nat_dhcp_pid_file" => cfg.nat_dhcp_pid_file = absolute_or_off(value)?,
        _ => bail!("unknown key"),
    }
    Ok(())
}

/// The host's network script, as xend's `(network-script 'network-bridge netdev=eth0')`: a
/// script name (`network-bridge`, `network-route`, `network-nat`, `network-prebuilt`; a path to
/// one is taken by its name) and `k=v` words, each checked against what that script takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkScript {
    pub script: crate::network_script::Script,
    pub vars: Vec<(String, String)>,
}

impl NetworkScript {
    pub fn parse(value: &str) -> Result<NetworkScript> {
        use crate::network_script::{Params, Script};
        let mut words = value.split_whitespace();
        let Some(first) = words.next() else {
            bail!("empty; name a script, e.g. \"network-bridge netdev=eth0\"");
        };
        let script = match first.rsplit('/').next().unwrap_or(first) {
            "network-bridge" => Script::Bridge,
            "network-route" => Script::Route,
            "network-nat" => Script::Nat,
            "network-prebuilt" => Script::Prebuilt,
            other => bail!(
                "{other:?} is not a network script xen-vif implements \
                 (network-bridge, network-route, network-nat or network-prebuilt)"
            ),
        };
        let mut vars = Vec::new();
        for w in words {
            match crate::invocation::key_value(w) {
                Some((k, v)) => vars.push((k.to_string(), v.to_string())),
                None => bail!("{w:?} is not key=value"),
            }
        }
        Params::new(script, &vars)?;
        Ok(NetworkScript { script, vars })
    }
}

impl std::fmt::Display for NetworkScript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.script.name())?;
        for (k, v) in &self.vars {
            write!(f, " {k}={v}")?;
        }
        Ok(())
    }
}

fn absolute_or_off(value: &str) -> Result<Option<PathBuf>> {
    if value.is_empty() {
        return Ok(None);
    }
    if !value.starts_with('/') {
        bail!("{value:?} is not an absolute path");
    }
    Ok(Some(PathBuf::from(value)))
}

/// A TOML boolean (`true` or `false`, unquoted), then nothing but an optional comment.
fn bool_value(s: &str) -> Result<String> {
    let (word, tail) = s.split_at(s.find([' ', '\t', '#']).unwrap_or(s.len()));
    let tail = tail.trim_start();
    if !(tail.is_empty() || tail.starts_with('#')) {
        bail!("unexpected {tail:?} after the value");
    }
    match word {
        "true" | "false" => Ok(word.to_string()),
        _ => bail!("the value must be true or false (unquoted)"),
    }
}

/// A TOML basic ("...") or literal ('...') string, then nothing but an optional comment.
fn string_value(s: &str) -> Result<String> {
    let mut chars = s.chars();
    let quote = match chars.next() {
        Some(q @ ('"' | '\'')) => q,
        _ => bail!("the value must be a quoted string, e.g. \"...\""),
    };
    let mut out = String::new();
    loop {
        match chars.next() {
            None => bail!("unterminated string"),
            Some(c) if c == quote => break,
            Some('\\') if quote == '"' => out.push(escape(&mut chars)?),
            Some(c) if c.is_control() && c != '\t' => bail!("control character in string"),
            Some(c) => out.push(c),
        }
    }
    let tail = chars.as_str().trim_start();
    if !(tail.is_empty() || tail.starts_with('#')) {
        bail!("unexpected {tail:?} after the string");
    }
    Ok(out)
}

fn escape(chars: &mut std::str::Chars) -> Result<char> {
    Ok(match chars.next() {
        Some('"') => '"',
        Some('\\') => '\\',
        Some('t') => '\t',
        Some('n') => '\n',
        Some('r') => '\r',
        Some('b') => '\u{8}',
        Some('f') => '\u{c}',
        Some(u @ ('u' | 'U')) => {
            let len = if u == 'u' { 4 } else { 8 };
            let hex: String = chars.take(len).collect();
            u32::from_str_radix(&hex, 16)
                .ok()
                .filter(|_| hex.len() == len)
                .and_then(char::from_u32)
                .ok_or_else(|| anyhow::anyhow!("bad escape \\{u}{hex}"))?
        }
        Some(c) => bail!("unknown escape \\{c}"),
        None => bail!("unterminated string"),
    })
}

/// The text `check-config` prints: each setting and where it comes from.
pub fn describe(cfg: &Config) -> String {
    let origin = |k: &str| {
        if cfg.set.contains(&k) {
            ""
        } else {
            "  (default)"
        }
    };
    let path = |p: &Option<PathBuf>| match p {
        Some(p) => p.display().to_string(),
        None => "off".to_string(),
    };
    [
        format!(
            "mode = {}{}",
            cfg.mode.map_or_else(
                || "from the script name (bridge)".to_string(),
                |m| m.to_string()
            ),
            origin("mode")
        ),
        format!(
            "gatewaydev = {}{}",
            cfg.gatewaydev.as_ref().map_or(
                "(netdev, else dummy0, else the default route's device)",
                |g| g.as_str()
            ),
            origin("gatewaydev")
        ),
        format!("log_file = {}{}", path(&cfg.log_file), origin("log_file")),
        format!("hook_dir = {}{}", path(&cfg.hook_dir), origin("hook_dir")),
        format!(
            "network_script = {}{}",
            cfg.network_script.as_ref().map_or(
                "(none: xen-vif-network.service does nothing)".to_string(),
                |n| n.to_string()
            ),
            origin("network_script")
        ),
        format!("antispoof = {}{}", cfg.antispoof, origin("antispoof")),
        format!(
            "nat_dhcp_hosts = {}{}",
            path(&cfg.nat_dhcp_hosts),
            origin("nat_dhcp_hosts")
        ),
        format!(
            "nat_dhcp_options = {}{}",
            path(&cfg.nat_dhcp_options),
            origin("nat_dhcp_options")
        ),
        format!(
            "nat_dhcp_pid_file = {}{}",
            path(&cfg.nat_dhcp_pid_file),
            origin("nat_dhcp_pid_file")
        ),
    ]
    .join("\n")
}

/// The environment as hotplug reads it, with the configuration's defaults underneath: they
/// only fill what the caller left unset or empty, so the precedence stays
/// configuration < environment < argv < xenstore.
pub fn layer<'a>(
    cfg: &'a Config,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |key: &str| {
        let given = env(key).filter(|v| !v.is_empty());
        match key {
            "netdev" => given.or_else(|| cfg.gatewaydev.as_ref().map(|g| g.to_string())),
            // vif-setup dispatches on `script`; a script that names no mode takes the default.
            "script" => match (cfg.mode, given) {
                (Some(m), None) => Some(m.script().to_string()),
                (Some(m), Some(s)) if s.rsplit('/').next() == Some("vif-setup") => {
                    Some(m.script().to_string())
                }
                (_, g) => g,
            },
            _ => env(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_and_empty_are_stock() {
        let d = Config::default();
        assert_eq!(parse("").unwrap(), d);
        assert_eq!(parse("# nothing\n\n   \n").unwrap(), d);
        let c = load_from(Path::new("/nonexistent/xen-vif.toml")).unwrap();
        assert_eq!(c, d);
    }

    #[test]
    fn every_key() {
        let c = parse(
            "# host defaults\nmode = \"route\"\ngatewaydev = 'dummy0'  # the /29\n\
             log_file = \"/var/log/xen/vif.log\"\nhook_dir = \"\"\n",
        )
        .unwrap();
        assert_eq!(c.mode, Some(Mode::Route));
        assert_eq!(c.gatewaydev.as_ref().map(|g| g.as_str()), Some("dummy0"));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/xen/vif.log")));
        assert_eq!(c.hook_dir, None);
        assert!(describe(&c).contains("hook_dir = off"));
        assert!(describe(&c).contains("mode = route\n"));
        assert!(describe(&c).contains("antispoof = true  (default)"));
        assert!(describe(&c).contains("mode = route\n"));
        let c = parse("antispoof = false # no filter\n").unwrap();
        assert!(!c.antispoof);
        assert!(describe(&c).contains("antispoof = false\n"));
        let c = parse("nat_dhcp_hosts = \"/run/xen-vif-dhcp/hosts\"\n").unwrap();
        assert!(describe(&c).contains("nat_dhcp_hosts = /run/xen-vif-dhcp/hosts\n"));
        assert!(parse("nat_dhcp_pid_file = \"run/dnsmasq.pid\"").is_err());
    }

    #[test]
    fn network_script() {
        let c = parse("network_script = \"network-bridge netdev=eth0 bridge=xenbr0\"").unwrap();
        let n = c.network_script.unwrap();
        assert_eq!(n.script, crate::network_script::Script::Bridge);
        assert_eq!(n.to_string(), "network-bridge netdev=eth0 bridge=xenbr0");
        let c = parse("network_script = '/etc/xen/scripts/network-route netdev=dummy0'").unwrap();
        assert_eq!(
            c.network_script.unwrap().to_string(),
            "network-route netdev=dummy0"
        );
        let c = parse("network_script = \"network-nat netdev=eth0 range=10.0.0.0/8\"").unwrap();
        assert_eq!(
            c.network_script.unwrap().script,
            crate::network_script::Script::Nat
        );
        for (text, want) in [
            ("network_script = \"\"", "empty"),
            (
                "network_script = \"/bin/true\"",
                "\"true\" is not a network script",
            ),
            (
                "network_script = \"network-bridge eth0\"",
                "\"eth0\" is not key=value",
            ),
            (
                "network_script = \"network-route bridge=x\"",
                "unknown parameter \"bridge\"",
            ),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains("line 1: network_script: "), "{e}");
        }
    }

    #[test]
    fn escapes() {
        let c = parse(r#"log_file = "/var/log/a\u0062\"c""#).unwrap();
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/ab\"c")));
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        for (text, want) in [
            ("moed = \"route\"", "line 1: unknown key \"moed\""),
            (
                "\nmode = route",
                "line 2: mode: the value must be a quoted string",
            ),
            ("mode = \"ovs\"", "\"ovs\" is not a mode"),
            (
                "mode = \"route\"\nmode = \"bridge\"",
                "line 2: mode is set twice",
            ),
            ("[xen-vif]", "tables are not used"),
            ("gatewaydev = \"a/b\"", "line 1: gatewaydev:"),
            ("log_file = \"relative.log\"", "is not an absolute path"),
            ("hook_dir = \"/x\" junk", "unexpected \"junk\""),
            ("hook_dir = \"/x", "unterminated string"),
            ("mode", "expected key = \"value\""),
            ("log_file = \"/a\\q\"", "unknown escape \\q"),
            (
                "antispoof = \"false\"",
                "line 1: antispoof: the value must be true or false",
            ),
            ("antispoof = no", "the value must be true or false"),
            ("antispoof = true false", "unexpected \"false\""),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn layer_fills_only_what_is_unset() {
        let cfg = parse("mode = \"route\"\ngatewaydev = \"dummy0\"").unwrap();
        let env = |k: &str| match k {
            "netdev" => Some(String::new()),
            "script" => Some("/etc/xen/scripts/vif-setup".to_string()),
            "vif" => Some("vif5.0".to_string()),
            _ => None,
        };
        let l = layer(&cfg, &env);
        assert_eq!(l("netdev").as_deref(), Some("dummy0"));
        assert_eq!(l("script").as_deref(), Some("vif-route"));
        assert_eq!(l("vif").as_deref(), Some("vif5.0"));
        let env = |k: &str| match k {
            "netdev" => Some("eth1".to_string()),
            "script" => Some("/etc/xen/scripts/vif-bridge".to_string()),
            _ => None,
        };
        let l = layer(&cfg, &env);
        assert_eq!(l("netdev").as_deref(), Some("eth1"));
        assert_eq!(l("script").as_deref(), Some("/etc/xen/scripts/vif-bridge"));
        let stock = Config::default();
        let l = layer(&stock, &env);
        assert_eq!(l("bridge"), None);
    }
}
