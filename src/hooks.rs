//! The stock extension point: after a successful action, the executable `*.hook` files in
//! `/etc/xen/scripts/vif-post.d/` run, in name order. The stock scripts source them into their
//! own shell (`call_hooks vif post`), so they are shell fragments that read the script's
//! variables; here each runs as `/bin/sh <file>` with those variables in its environment:
//! `command`, `dev`, `vif`, `type_if`, `XENBUS_PATH`, `bridge`, `ip`, `main_ip`, `netdev`.
//!
//! This is the one child process xen-vif starts, and only when a hook exists: no directory or
//! no hook means no fork. A hook that fails (or outlives its time) fails the action like the
//! stock ERR trap does; its output goes to stderr, where libxl logs it.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::invocation::{Hotplug, Mode, TypeIf};
use crate::modes::{bridge, route};
use crate::netlink::Netlink;

/// All hooks together get this long: well inside the watchdog (35 s) and libxl's 40 s kill.
pub const BUDGET: Duration = Duration::from_secs(15);

/// The variables the stock scripts have when they source a hook.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Vars {
    pub command: String,
    pub dev: String,
    pub vif: Option<String>,
    pub type_if: String,
    pub xenbus_path: String,
    pub bridge: Option<String>,
    pub ip: String,
    pub main_ip: Option<String>,
    pub netdev: Option<String>,
}

impl Vars {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        let mut v = vec![
            ("command", self.command.as_str()),
            ("dev", self.dev.as_str()),
            ("type_if", self.type_if.as_str()),
            ("XENBUS_PATH", self.xenbus_path.as_str()),
            ("ip", self.ip.as_str()),
        ];
        for (k, o) in [
            ("vif", &self.vif),
            ("bridge", &self.bridge),
            ("main_ip", &self.main_ip),
            ("netdev", &self.netdev),
        ] {
            if let Some(val) = o {
                v.push((k, val.as_str()));
            }
        }
        v
    }
}

/// The hooks in `dir`, as the stock `call_hooks` picks them: `*.hook`, executable, name order.
/// Files writable by group or others are refused: they would run as root.
pub fn find(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut hooks = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "hook") {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o111 == 0 {
            continue;
        }
        if mode & 0o022 != 0 {
            bail!(
                "hook {} is writable by group or others (mode {:o}); refusing to run it as root",
                path.display(),
                mode & 0o7777
            );
        }
        hooks.push(path);
    }
    hooks.sort();
    Ok(hooks)
}

/// After an action on `hp`: run the hooks in `dir` (None: hooks are off), if there are any.
/// Only then are the variables worked out (the bridge and gateway lookups cost netlink calls).
pub fn run_after(dir: Option<&Path>, nl: &mut Netlink, hp: &Hotplug) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let hooks = find(dir)?;
    if hooks.is_empty() {
        return Ok(());
    }
    run_all(&hooks, &vars_for(nl, hp))
}

/// Run `hooks` in order with `vars`; the first failure stops, like the stock ERR trap.
pub fn run_all(hooks: &[PathBuf], vars: &Vars) -> Result<()> {
    let deadline = Instant::now() + BUDGET;
    for hook in hooks {
        run_one(hook, vars, deadline)?;
    }
    Ok(())
}

/// What the stock vif-bridge / vif-route have in their shell when they call the hooks. Lookups
/// that fail (e.g. the bridge is gone at offline) leave what the caller asked for.
pub fn vars_for(nl: &mut Netlink, hp: &Hotplug) -> Vars {
    let name = |n: &crate::ifname::IfName| n.to_string();
    let ip: Vec<String> = hp
        .ip
        .iter()
        .map(|g| {
            let host = if g.ip.is_ipv4() { 32 } else { 128 };
            if g.prefix_len == host {
                g.ip.to_string()
            } else {
                format!("{}/{}", g.ip, g.prefix_len)
            }
        })
        .collect();
    let mut vars = Vars {
        command: hp.command.to_string(),
        dev: hp.device().to_string(),
        // The stock scripts leave `vif` as libxl passed it: netback's name, also after a
        // vifname rename (only `dev` follows the rename).
        vif: (hp.type_if == TypeIf::Vif).then(|| hp.kernel_name.to_string()),
        type_if: match hp.type_if {
            TypeIf::Vif => "vif",
            TypeIf::Tap => "tap",
        }
        .to_string(),
        xenbus_path: hp.backend.clone(),
        // vif-route never sets `bridge` (libxl's default xenbr0 is in every backend).
        bridge: None,
        ip: ip.join(" "),
        main_ip: None,
        netdev: hp.gatewaydev.as_ref().map(name),
    };
    match hp.mode {
        Mode::Bridge => {
            vars.bridge = match bridge::resolve_bridge(nl, hp) {
                Ok(b) => Some(b.name),
                Err(_) => hp.bridge.as_ref().map(name),
            };
        }
        // The stock vif-nat sets `ip` to its default (`10.D1.D2.N/16`) when none is given.
        Mode::Nat => {
            if let Ok(default) = crate::modes::nat::default_address(hp.id) {
                if vars.ip == default.to_string() {
                    vars.ip = format!("{default}/16");
                }
            }
        }
        Mode::Route => {
            if let Ok(gw) = route::gateway_device(nl, hp) {
                if let Ok((v4, v6)) = route::gateway_addresses(nl, &gw) {
                    vars.main_ip = v4.or(v6).map(|a| a.to_string());
                }
                vars.netdev = Some(gw.name);
            }
        }
    }
    vars
}

fn run_one(hook: &Path, vars: &Vars, deadline: Instant) -> Result<()> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(hook)
        .envs(vars.pairs())
        .stdin(Stdio::null())
        .current_dir("/");
    // The stock scripts put the system directories first; keep whatever else the caller had.
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/sbin:/usr/bin:/sbin:/bin:{path}"));
    // Hook output is diagnostics: keep our stdout (which callers may parse) clean.
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("hook {}: cannot start /bin/sh: {e}", hook.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => bail!("hook {} failed ({status})", hook.display()),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "hook {} did not finish within {} s; killed",
                    hook.display(),
                    BUDGET.as_secs()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => bail!("hook {}: wait: {e}", hook.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_directory_no_hooks() {
        assert!(
            find(Path::new("/nonexistent/vif-post.d"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn picks_executable_hook_files_in_order() {
        let dir = std::env::temp_dir().join(format!("xen-vif-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mk = |name: &str, mode: u32| {
            let p = dir.join(name);
            std::fs::write(&p, "true\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mk("20-b.hook", 0o755);
        mk("10-a.hook", 0o700);
        mk("00-off.hook", 0o644);
        mk("README", 0o755);
        let names: Vec<String> = find(&dir)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.hook", "20-b.hook"]);
        mk("30-bad.hook", 0o777);
        let e = find(&dir).unwrap_err().to_string();
        assert!(
            e.contains("30-bad.hook is writable by group or others"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
