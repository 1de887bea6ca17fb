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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::invocation::{Hotplug, Mode, TypeIf};
use crate::modes::Observed;
use crate::trust;

/// What runs each hook, as the stock scripts' `.` ran them in their own shell.
const SHELL: &str = "/bin/sh";

/// All hooks together get at most this long, and never more than is left of the run's
/// deadline (`deadline::current`), so the run still has time to undo and report.
pub const CAP: Duration = Duration::from_secs(15);

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
/// Each must pass the trust rule (`trust`): it runs as root, so a hook anyone but root could
/// have written, or put there, fails the action rather than being run or skipped.
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
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        hooks.push(path);
    }
    hooks.sort();
    for hook in &hooks {
        trust::require("hook", hook, trust::Kind::File)?;
    }
    if !hooks.is_empty() {
        trust::require("hook interpreter", Path::new(SHELL), trust::Kind::File)?;
    }
    Ok(hooks)
}

/// After an action on `hp`: run the hooks in `dir` (None: hooks are off), if there are any,
/// with the variables worked out from what the action observed before it changed anything
/// (the bridge and the gateway it resolved are the same after the change).
pub fn run_after(dir: Option<&Path>, observed: &Observed, hp: &Hotplug) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let hooks = find(dir)?;
    if hooks.is_empty() {
        return Ok(());
    }
    run_all(&hooks, &vars_for(observed, hp))
}

/// Run `hooks` in order with `vars`; the first failure stops, like the stock ERR trap.
pub fn run_all(hooks: &[PathBuf], vars: &Vars) -> Result<()> {
    let limit = CAP.min(crate::deadline::remaining());
    let deadline = Instant::now() + limit;
    for hook in hooks {
        run_one(hook, vars, deadline, limit)?;
    }
    Ok(())
}

/// What the stock vif-bridge / vif-route have in their shell when they call the hooks, from
/// what the action observed. What could not be resolved (e.g. the bridge is gone at offline)
/// leaves what the caller asked for. Pure.
pub fn vars_for(observed: &Observed, hp: &Hotplug) -> Vars {
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
        type_if: hp.type_if.to_string(),
        xenbus_path: hp.backend.clone(),
        // vif-route never sets `bridge` (libxl's default xenbr0 is in every backend).
        bridge: observed.bridge_name(hp),
        ip: ip.join(" "),
        main_ip: None,
        netdev: hp.gatewaydev.as_ref().map(ToString::to_string),
    };
    // The stock vif-nat sets `ip` to its default (`10.D1.D2.N/16`) when none is given.
    if hp.mode == Mode::Nat {
        if let Ok(default) = crate::addr::nat_default_address(hp.id.domid, hp.id.devid) {
            if vars.ip == default.to_string() {
                vars.ip = format!("{default}/16");
            }
        }
    }
    if let Some((netdev, main_ip)) = observed.gateway() {
        vars.main_ip = main_ip.map(|a| a.to_string());
        vars.netdev = Some(netdev);
    }
    vars
}

fn run_one(hook: &Path, vars: &Vars, deadline: Instant, limit: Duration) -> Result<()> {
    let mut cmd = Command::new(SHELL);
    cmd.arg(hook)
        .envs(vars.pairs())
        .stdin(Stdio::null())
        .current_dir("/")
        // Its own process group, so that at the time limit whatever it started goes with it:
        // nothing a hook spawned keeps running as root after we gave up on it.
        .process_group(0);
    // The stock scripts put the system directories first; keep whatever else the caller had.
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env("PATH", format!("/usr/sbin:/usr/bin:/sbin:/bin:{path}"));
    // Hook output is diagnostics: keep our stdout (which callers may parse) clean.
    if let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() {
        cmd.stdout(Stdio::from(fd));
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("hook {}: cannot start {SHELL}: {e}", hook.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => bail!("hook {} failed ({status})", hook.display()),
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                bail!(
                    "hook {} did not finish within {} s; killed with its process group",
                    hook.display(),
                    limit.as_secs_f32().ceil()
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                kill_group(&mut child);
                bail!("hook {}: wait: {e}", hook.display())
            }
        }
    }
}

/// SIGKILL the hook's whole process group (its pid is the group's id), then reap the hook.
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_guest_addrs;
    use crate::invocation::Command;
    use crate::modes::fixture::{hp, name};
    use crate::modes::{bridge, nat, openvswitch, route};
    use crate::netlink::Link;

    fn link(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: kind.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn golden_bridge_vars_name_the_bridge_resolved() {
        let mut h = hp(Mode::Bridge, Command::Online);
        h.bridge = Some(name("xenbr0"));
        h.wanted_name = name("web0");
        h.ip = parse_guest_addrs("10.0.0.5 192.0.2.0/24").unwrap();
        // xend's network-bridge named the bridge eth0: the stock script resolves xenbr0 to it.
        let o = Observed::Bridge(bridge::Observed {
            bridge: bridge::BridgeCandidates {
                fallback: Some(link(3, "eth0", Some("bridge"))),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(
            vars_for(&o, &h),
            Vars {
                command: "online".into(),
                dev: "web0".into(),
                vif: Some("vif5.0".into()),
                type_if: "vif".into(),
                xenbus_path: "backend/vif/5/0".into(),
                bridge: Some("eth0".into()),
                ip: "10.0.0.5 192.0.2.0/24".into(),
                main_ip: None,
                netdev: None,
            }
        );
    }

    #[test]
    fn a_bridge_that_does_not_resolve_leaves_the_callers() {
        let mut h = hp(Mode::Bridge, Command::Offline);
        h.bridge = Some(name("xenbr0"));
        // Gone at offline (or unreadable: no candidates).
        let o = Observed::Bridge(bridge::Observed::default());
        assert_eq!(vars_for(&o, &h).bridge.as_deref(), Some("xenbr0"));
        // Not a bridge: the caller's too.
        let o = Observed::Bridge(bridge::Observed {
            bridge: bridge::BridgeCandidates {
                named: Some(link(3, "xenbr0", Some("dummy"))),
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(vars_for(&o, &h).bridge.as_deref(), Some("xenbr0"));
        // None named and several bridges: nothing.
        h.bridge = None;
        let o = Observed::Bridge(bridge::Observed {
            bridge: bridge::BridgeCandidates {
                bridges: vec![
                    link(3, "br0", Some("bridge")),
                    link(4, "br1", Some("bridge")),
                ],
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(vars_for(&o, &h).bridge, None);
    }

    #[test]
    fn route_vars_name_the_gateway_and_its_main_address() {
        let mut h = hp(Mode::Route, Command::Online);
        h.bridge = Some(name("xenbr0"));
        h.gatewaydev = Some(name("eth9"));
        let mut r = route::Observed {
            gateway: Some(link(2, "eth1", None)),
            gateway_v4: Some("192.0.2.1".parse().unwrap()),
            gateway_v6: Some("2001:db8::1".parse().unwrap()),
            ..Default::default()
        };
        let v = vars_for(&Observed::Route(r.clone()), &h);
        // libxl's default bridge is in every backend; vif-route has none.
        assert_eq!(v.bridge, None);
        assert_eq!(v.netdev.as_deref(), Some("eth1"));
        assert_eq!(v.main_ip.as_deref(), Some("192.0.2.1"));
        r.gateway_v4 = None;
        let v = vars_for(&Observed::Route(r.clone()), &h);
        assert_eq!(v.main_ip.as_deref(), Some("2001:db8::1"));
        r.gateway_v6 = None;
        let v = vars_for(&Observed::Route(r.clone()), &h);
        assert_eq!((v.netdev.as_deref(), v.main_ip), (Some("eth1"), None));
        // No gateway device (e.g. gone at offline): the caller's netdev, no main_ip.
        r.gateway = None;
        let v = vars_for(&Observed::Route(r), &h);
        assert_eq!((v.netdev.as_deref(), v.main_ip), (Some("eth9"), None));
    }

    #[test]
    fn nat_vars_give_the_default_address_its_16_and_ovs_the_callers_bridge() {
        let mut h = hp(Mode::Nat, Command::Online);
        h.bridge = Some(name("xenbr0"));
        h.ip = parse_guest_addrs("10.0.5.1").unwrap();
        let o = Observed::Nat(nat::Observed::default());
        let v = vars_for(&o, &h);
        assert_eq!((v.ip.as_str(), v.bridge), ("10.0.5.1/16", None));
        // An address given is left as it is.
        h.ip = parse_guest_addrs("192.0.2.5").unwrap();
        assert_eq!(vars_for(&o, &h).ip, "192.0.2.5");

        let mut h = hp(Mode::Openvswitch, Command::Offline);
        h.bridge = Some(name("ovsbr0"));
        let o = Observed::Openvswitch(openvswitch::Observed::default());
        let v = vars_for(&o, &h);
        assert_eq!(
            (v.command.as_str(), v.bridge.as_deref()),
            ("offline", Some("ovsbr0"))
        );
    }

    #[test]
    fn no_directory_no_hooks() {
        assert!(
            find(Path::new("/nonexistent/vif-post.d"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_time_limit_is_what_is_left_of_the_run_and_kills_the_group() {
        let dir = std::env::temp_dir().join(format!("xen-vif-hookslow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let hook = dir.join("10-slow.hook");
        let child = dir.join("child");
        std::fs::write(
            &hook,
            format!("sleep 30 &\necho $! > {}\nsleep 30\n", child.display()),
        )
        .unwrap();
        let _g = crate::deadline::Deadline::after(Duration::from_millis(2000)).enter();
        let started = Instant::now();
        let e = run_all(std::slice::from_ref(&hook), &Vars::default()).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            e.to_string(),
            format!(
                "hook {} did not finish within 2 s; killed with its process group",
                hook.display()
            )
        );
        // The background child went with the group (dead, or a zombie until init reaps it).
        let pid = std::fs::read_to_string(&child).unwrap();
        let alive = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|s| {
                s.rsplit_once(") ")
                    .is_some_and(|(_, r)| !r.starts_with('Z'))
            })
        };
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !alive()
        });
        assert!(gone, "the hook's background child {pid} is still running");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn picks_executable_hook_files_in_order() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED (not root): the hooks must be root's");
            return;
        }
        let dir = std::env::temp_dir().join(format!("xen-vif-hooks-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
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
        std::fs::set_permissions(
            dir.join("30-bad.hook"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::chown(dir.join("30-bad.hook"), Some(65534), None).unwrap();
        let e = find(&dir).unwrap_err().to_string();
        assert!(
            e.contains("30-bad.hook is owned by uid 65534, not root"),
            "{e}"
        );
        // Not executable: not a hook, whoever owns it (as stock).
        std::fs::set_permissions(
            dir.join("30-bad.hook"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert_eq!(find(&dir).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
