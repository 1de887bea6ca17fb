//! What a Xen administrator sees around the hotplug actions: the per-action log in
//! /var/log/xen, vif-post.d hooks, /etc/xen/xen-vif.toml, the udev rules, and the man page and
//! completions matching --help. The binary runs as libxl (or udev) runs it, in a fresh network
//! namespace and a private mount namespace whose /etc and /var/log belong to the test.

mod support;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";

fn guest(tag: &str, extra: &[(&str, &str)]) -> Option<Sandbox> {
    guest_on_xenbr0(tag, extra)
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn config(sb: &Sandbox, text: &str) {
    write(&sb.etc_dir().join("xen/xen-vif.toml"), text, 0o644);
}

/// A hook that records its environment and the vif's link state into `out`.
fn recording_hook(sb: &Sandbox, name: &str, out: &Path) {
    write(
        &sb.etc_dir().join("xen/scripts/vif-post.d").join(name),
        &format!(
            "# sourced by the stock scripts; run with /bin/sh by xen-vif\n\
             env | sort > {out}.$command\n\
             ip -o link show dev \"$dev\" >> {out}.$command\n",
            out = out.display()
        ),
        0o755,
    );
}

fn env_file(path: &Path) -> std::collections::BTreeMap<String, String> {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn log_lines(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.log_dir().join("xen/xen-hotplug.log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn one_log_line_per_action_when_var_log_xen_exists() {
    let Some(sb) = guest("log", &[]) else { return };
    fs::create_dir(sb.log_dir().join("xen")).unwrap();
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    // A failing online: the bridge is gone.
    sb.ip("link del xenbr0");
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let lines = log_lines(&sb);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, action, result) in [
        (&lines[0], "online", "ok"),
        (&lines[1], "offline", "ok"),
        (&lines[2], "online", "error"),
    ] {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields[0].ends_with('Z') && fields[0].len() == 27, "{line}");
        assert!(fields[1].starts_with("vif-bridge["), "{line}");
        assert_eq!(
            &fields[2..8],
            [
                "domain=5",
                "devid=0",
                "device=vif5.0",
                action,
                "mode=bridge",
                &format!("result={result}")
            ],
            "{line}"
        );
        let us: u64 = fields[8]
            .strip_prefix("duration_us=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(us > 0, "{line}");
    }
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(
        lines[2].ends_with(&format!(" error={error}")),
        "{}",
        lines[2]
    );
    // The administrator's `xen-vif remove` is an action too.
    assert_ok(&sb.run("xen-vif", &["remove", "5", "0"], &[]));
    let lines = log_lines(&sb);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[3].contains("] domain=5 devid=0 device=vif5.0 offline mode=bridge result=ok "),
        "{}",
        lines[3]
    );
}

#[test]
fn no_log_directory_no_log_and_no_failure() {
    let Some(sb) = guest("nolog", &[]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(fs::read_dir(sb.log_dir()).unwrap().count(), 0);
    // Or a log that cannot be opened (a directory in its place): still no failure.
    fs::create_dir_all(sb.log_dir().join("xen/xen-hotplug.log")).unwrap();
    assert_ok(&sb.offline("vif-bridge", 5, 0));
}

/// /var/log/xen writable by others: a symlink there of another user's must not make root
/// append to the file it points at. The hotplug itself still succeeds (the log never fails it).
#[test]
fn a_log_directory_others_can_write_is_not_written() {
    let Some(sb) = guest("logtrust", &[]) else {
        return;
    };
    let dir = sb.log_dir().join("xen");
    fs::create_dir(&dir).unwrap();
    let victim = sb.path("victim");
    fs::write(&victim, "precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("xen-hotplug.log")).unwrap();
    chown(&dir.join("xen-hotplug.log"), NOBODY);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("not logging to /var/log/xen/xen-hotplug.log"),
        "{}",
        stderr(&o)
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    // The directory closed again, the other user's symlink still there: still not followed.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious\n");
    // Root's own log file: written.
    fs::remove_file(dir.join("xen-hotplug.log")).unwrap();
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(log_lines(&sb).len(), 1);
}

#[test]
fn hooks_run_after_the_change_with_the_stock_variables() {
    let Some(sb) = guest("hooks", &[("ip", "10.0.0.5 10.0.1.0/24")]) else {
        return;
    };
    let out = sb.path("hook-env");
    recording_hook(&sb, "50-record.hook", &out);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let env = env_file(&sb.path("hook-env.online"));
    for (k, v) in [
        ("command", "online"),
        ("dev", "vif5.0"),
        ("vif", "vif5.0"),
        ("type_if", "vif"),
        ("XENBUS_PATH", "backend/vif/5/0"),
        ("bridge", "xenbr0"),
        ("ip", "10.0.0.5 10.0.1.0/24"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    // The hook saw the vif already on its bridge.
    let link = fs::read_to_string(sb.path("hook-env.online")).unwrap();
    assert!(link.contains("master xenbr0"), "{link}");
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("connected")
    );
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    let env = env_file(&sb.path("hook-env.offline"));
    assert_eq!(env["command"], "offline");
    // Resolved as at online (the stock script resolves it for every command).
    assert_eq!(env.get("bridge").map(String::as_str), Some("xenbr0"));
    assert!(
        !fs::read_to_string(sb.path("hook-env.offline"))
            .unwrap()
            .contains("master")
    );
}

#[test]
fn an_offline_hook_gets_the_callers_bridge_when_it_is_gone() {
    let Some(sb) = guest("hookbrgone", &[]) else {
        return;
    };
    recording_hook(&sb, "50-record.hook", &sb.path("hook-env"));
    assert_ok(&sb.online("vif-bridge", 5, 0));
    sb.ip("link del xenbr0");
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    let env = env_file(&sb.path("hook-env.offline"));
    assert_eq!(env.get("bridge").map(String::as_str), Some("xenbr0"));
}

/// A guest at 192.0.2.5 behind gateway 192.0.2.1 on gw0: a bridge with no ports stands in
/// for dummy0 (this kernel has no dummy links).
fn routed_guest(tag: &str, extra: &[(&str, &str)]) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.bridge("gw0");
    sb.ip("addr add 192.0.2.1/24 dev gw0");
    sb.netback_vif("vif5.0", "g5.0");
    let mut keys = vec![("ip", "192.0.2.5")];
    keys.extend_from_slice(extra);
    sb.backend(5, 0, &keys);
    Some(sb)
}

#[test]
fn route_hooks_get_main_ip_and_netdev() {
    let Some(sb) = routed_guest(
        "routehook",
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("gatewaydev", "gw0"),
        ],
    ) else {
        return;
    };
    let out = sb.path("hook-env");
    recording_hook(&sb, "50-record.hook", &out);
    assert_ok(&sb.online("vif-route", 5, 0));
    let env = env_file(&sb.path("hook-env.online"));
    assert_eq!(env.get("main_ip").map(String::as_str), Some("192.0.2.1"));
    assert_eq!(env.get("netdev").map(String::as_str), Some("gw0"));
    assert_eq!(env.get("ip").map(String::as_str), Some("192.0.2.5"));
    assert_ok(&sb.offline("vif-route", 5, 0));
    // Offline sees the same gateway.
    let env = env_file(&sb.path("hook-env.offline"));
    assert_eq!(env.get("main_ip").map(String::as_str), Some("192.0.2.1"));
    assert_eq!(env.get("netdev").map(String::as_str), Some("gw0"));
}

#[test]
fn hooks_keep_vif_as_libxl_passed_it_after_a_vifname_rename() {
    let Some(sb) = guest("hookvifname", &[("vifname", "web0")]) else {
        return;
    };
    recording_hook(&sb, "50-record.hook", &sb.path("hook-env"));
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let env = env_file(&sb.path("hook-env.online"));
    // The stock scripts rename `dev` only; `vif` stays netback's name (found by
    // tests/conformance.rs, scenario bridge-vifname-hook).
    assert_eq!(env.get("dev").map(String::as_str), Some("web0"));
    assert_eq!(env.get("vif").map(String::as_str), Some("vif5.0"));
}

#[test]
fn route_hooks_get_no_bridge() {
    // libxl writes its default bridge=xenbr0 into every backend, routed ones too.
    let Some(sb) = routed_guest(
        "routehooknobr",
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("gatewaydev", "gw0"),
            ("bridge", "xenbr0"),
        ],
    ) else {
        return;
    };
    recording_hook(&sb, "50-record.hook", &sb.path("hook-env"));
    assert_ok(&sb.online("vif-route", 5, 0));
    let env = env_file(&sb.path("hook-env.online"));
    // Stock vif-route never sets `bridge`: a hook may test it to tell the modes apart.
    assert_eq!(env.get("bridge"), None, "{env:?}");
    assert_eq!(env.get("main_ip").map(String::as_str), Some("192.0.2.1"));
}

#[test]
fn a_failing_hook_fails_online_before_connected() {
    let Some(sb) = guest("badhook", &[]) else {
        return;
    };
    write(
        &sb.etc_dir().join("xen/scripts/vif-post.d/10-fail.hook"),
        "exit 3\n",
        0o755,
    );
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(
        error.contains("hook /etc/xen/scripts/vif-post.d/10-fail.hook failed (exit status: 3)"),
        "{error}"
    );
}

/// Whether any process other than a zombie is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

#[test]
fn a_hook_past_its_time_is_killed_with_its_children() {
    let Some(sb) = guest("hookslow", &[]) else {
        return;
    };
    let pgid_file = sb.path("hook-pgid");
    let child_file = sb.path("hook-child");
    write(
        &sb.etc_dir().join("xen/scripts/vif-post.d/10-slow.hook"),
        &format!(
            "sleep 1000 &\necho $! > {}\necho $$ > {}\nsleep 1000\n",
            child_file.display(),
            pgid_file.display()
        ),
        0o755,
    );
    let started = std::time::Instant::now();
    let o = sb.online("vif-bridge", 5, 0);
    let took = started.elapsed();
    assert_fails(&o);
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(
        error.ends_with(
            "hook /etc/xen/scripts/vif-post.d/10-slow.hook did not finish within 15 s; \
             killed with its process group"
        ),
        "{error}"
    );
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
    assert_eq!(sb.master("vif5.0"), None);
    let pgid: i32 = fs::read_to_string(&pgid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let child: i32 = fs::read_to_string(&child_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The hook's shell leads its own group (not xen-vif's), and its background child is in it.
    assert_ne!(child, pgid);
    // The killed child is reparented and reaped by init: give that a moment.
    let gone = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !group_alive(pgid)
    });
    assert!(
        gone,
        "a process of the hook's group {pgid} is still running"
    );
    // And the background child itself (in whatever group) is dead.
    let state = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
    let state = state.rsplit_once(')').map_or("", |(_, r)| r.trim_start());
    assert!(
        state.is_empty() || state.starts_with('Z'),
        "{child}: {state}"
    );
}

/// The process-creating syscalls `script online` makes, seen by strace.
fn forks(sb: &Sandbox, script: &str) -> Vec<String> {
    let trace = sb.path("strace.out");
    let mut cmd = sb.command("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=fork,vfork,clone,clone3,execve",
        "-o",
    ])
    .arg(&trace)
    .arg(sb.path(script))
    .args(["online", "type_if=vif"])
    .envs(sb.libxl_env(script, 5, 0));
    assert_ok(&cmd.output().unwrap());
    fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("execve(\"") || !l.contains(script))
        .map(String::from)
        .collect()
}

#[test]
fn no_hook_no_fork() {
    let Some(sb) = guest("nofork", &[]) else {
        return;
    };
    if !require(have_tool("strace"), "strace") {
        return;
    }
    // A hook directory with nothing runnable in it: still no child process.
    write(
        &sb.etc_dir().join("xen/scripts/vif-post.d/README"),
        "not a hook\n",
        0o644,
    );
    write(
        &sb.etc_dir().join("xen/scripts/vif-post.d/10-off.hook"),
        "exit 1\n",
        0o644,
    );
    let calls = forks(&sb, "vif-bridge");
    assert!(calls.is_empty(), "{calls:#?}");
    recording_hook(&sb, "50-record.hook", &sb.path("hook-env"));
    let calls = forks(&sb, "vif-bridge");
    assert!(calls.iter().any(|l| l.contains("/bin/sh")), "{calls:#?}");
}

#[test]
fn configuration_defaults_fill_what_xen_leaves_unset() {
    // The guest's script is vif-setup, which names no mode; xl passes netdev= empty.
    let Some(sb) = routed_guest("config", &[("script", "/etc/xen/scripts/vif-setup")]) else {
        return;
    };
    let log = "/var/log/xen-vif-actions.log";
    config(
        &sb,
        &format!(
            "# host defaults\nmode = \"route\"\ngatewaydev = \"gw0\"\nlog_file = \"{log}\"\n\
             hook_dir = \"/etc/xen/vif-hooks\"\n"
        ),
    );
    recording_hook(&sb, "../../vif-hooks/50-record.hook", &sb.path("hook-env"));
    assert_ok(&sb.online("vif-setup", 5, 0));
    // Routed through gw0's address, as vif-route with netdev=gw0 would.
    assert_eq!(sb.addrs("vif5.0"), ["192.0.2.1/32"]);
    let routes = sb.ip("route show dev vif5.0");
    assert!(routes.contains("192.0.2.5 "), "{routes}");
    assert!(routes.contains("src 192.0.2.1"), "{routes}");
    let env = env_file(&sb.path("hook-env.online"));
    assert_eq!(env["main_ip"], "192.0.2.1");
    let lines = fs::read_to_string(sb.log_dir().join("xen-vif-actions.log")).unwrap();
    assert!(lines.contains(" online mode=route result=ok "), "{lines}");
    assert_ok(&sb.offline("vif-setup", 5, 0));
    assert!(sb.ip("route show dev vif5.0").trim().is_empty());
}

#[test]
fn without_a_configuration_vif_setup_is_bridge() {
    let Some(sb) = guest("noconfig", &[("script", "/etc/xen/scripts/vif-setup")]) else {
        return;
    };
    assert_ok(&sb.online("vif-setup", 5, 0));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
}

#[test]
fn a_bad_configuration_fails_online_and_still_lets_offline_clean_up() {
    let Some(sb) = guest("badconfig", &[]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    config(&sb, "mode = \"route\"\nmoed = \"bridge\"\n");
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        error,
        "vif-bridge online vif5.0: configuration /etc/xen/xen-vif.toml: line 2: unknown key \
         \"moed\" (known: mode, gatewaydev, log_file, hook_dir, network_script, antispoof, \
         nat_dhcp_hosts, nat_dhcp_options, nat_dhcp_pid_file)"
    );
    let o = sb.offline("vif-bridge", 5, 0);
    assert_ok(&o);
    assert!(stderr(&o).contains("line 2: unknown key"), "{}", stderr(&o));
    assert_eq!(sb.master("vif5.0"), None);
}

#[test]
fn check_config_prints_the_settings_or_the_error() {
    let Some(sb) = Sandbox::new("checkconfig") else {
        return;
    };
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains("/etc/xen/xen-vif.toml: absent (stock behaviour)"));
    assert!(stdout(&o).contains("log_file = /var/log/xen/xen-hotplug.log  (default)"));
    config(&sb, "hook_dir = \"\"\n");
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains("hook_dir = off\n"), "{}", stdout(&o));
    config(&sb, "mode = \"ovs\"\n");
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("/etc/xen/xen-vif.toml: line 1: mode: \"ovs\" is not a mode"),
        "{}",
        stderr(&o)
    );
    // A draft elsewhere, before it is installed.
    let draft = sb.path("draft.toml");
    fs::write(&draft, "gatewaydev = 'dummy0'\n").unwrap();
    let o = Command::new(binary())
        .args(["check-config"])
        .arg(&draft)
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(
        stdout(&o).contains("gatewaydev = dummy0\n"),
        "{}",
        stdout(&o)
    );
}

/// A hook that leaves a mark when it runs (it must not, in the attacks below).
fn marking_hook(path: &Path, mark: &Path, mode: u32) {
    write(path, &format!("touch {}\n", mark.display()), mode);
}

const NOBODY: u32 = 65534;

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), None).unwrap();
}

/// The state of a failed online: hotplug-status error, `why` in hotplug-error, and the vif back
/// off the bridge (the run's change undone).
#[track_caller]
fn refused(sb: &Sandbox, o: &std::process::Output, why: &str) {
    assert_fails(o);
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(error.contains(why), "{error}");
    assert!(!error.contains('\n'), "{error:?}");
    assert_eq!(sb.master("vif5.0"), None);
}

#[test]
fn a_hook_owned_by_an_ordinary_user_is_not_run() {
    let Some(sb) = guest("hookowner", &[]) else {
        return;
    };
    let hook = sb.etc_dir().join("xen/scripts/vif-post.d/50-user.hook");
    let mark = sb.path("hook-ran");
    marking_hook(&hook, &mark, 0o755);
    chown(&hook, NOBODY);
    let o = sb.online("vif-bridge", 5, 0);
    refused(
        &sb,
        &o,
        "hook /etc/xen/scripts/vif-post.d/50-user.hook is owned by uid 65534, not root; \
         refused: only root may be able to write it or a directory above it",
    );
    assert!(!mark.exists(), "the hook ran");
    // Offline fails closed too (its teardown is done; the hook is not run).
    assert_fails(&sb.offline("vif-bridge", 5, 0));
    assert!(!mark.exists(), "the hook ran");
    // Root's again: it runs.
    chown(&hook, 0);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(mark.exists());
}

#[test]
fn a_hook_in_a_directory_others_can_write_is_not_run() {
    let Some(sb) = guest("hookdir", &[]) else {
        return;
    };
    let dir = sb.etc_dir().join("xen/scripts/vif-post.d");
    let mark = sb.path("hook-ran");
    marking_hook(&dir.join("50-root.hook"), &mark, 0o755);
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    refused(
        &sb,
        &o,
        "hook /etc/xen/scripts/vif-post.d/50-root.hook: /etc/xen/scripts/vif-post.d is \
         writable by group or others (mode 777)",
    );
    assert!(!mark.exists(), "the hook ran");
    // A symlink, root's, in a trusted directory, to a hook in a user's directory.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(dir.join("50-root.hook")).unwrap();
    let user_dir = sb.path("home-user");
    marking_hook(&user_dir.join("x.hook"), &mark, 0o755);
    chown(&user_dir, NOBODY);
    std::os::unix::fs::symlink(user_dir.join("x.hook"), dir.join("60-link.hook")).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    refused(
        &sb,
        &o,
        &format!(
            "hook /etc/xen/scripts/vif-post.d/60-link.hook resolves to {}/x.hook, and {} is owned by uid 65534, not root",
            user_dir.display(),
            user_dir.display()
        ),
    );
    assert!(!mark.exists(), "the hook ran");
}

#[test]
fn a_configuration_others_can_write_is_a_bad_configuration() {
    let Some(sb) = guest("cfgtrust", &[]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    // The attack: a world-writable xen-vif.toml pointing hook_dir at a user's directory.
    let user_dir = sb.path("home-user/hooks");
    let mark = sb.path("hook-ran");
    marking_hook(&user_dir.join("50-evil.hook"), &mark, 0o755);
    chown(&user_dir, NOBODY);
    let cfg = sb.etc_dir().join("xen/xen-vif.toml");
    write(
        &cfg,
        &format!("hook_dir = \"{}\"\n", user_dir.display()),
        0o666,
    );
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    let error = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        error,
        "vif-bridge online vif5.0: configuration /etc/xen/xen-vif.toml is writable by group \
         or others (mode 666); refused: only root may be able to write it or a directory above it"
    );
    assert!(!mark.exists(), "the hook ran");
    // Offline tears down with the stock defaults (no hook from the file) and logs why.
    let o = sb.offline("vif-bridge", 5, 0);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("is writable by group or others"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sb.master("vif5.0"), None);
    assert!(!mark.exists(), "the hook ran");
    // check-config says so.
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("configuration /etc/xen/xen-vif.toml is writable by group or others"),
        "{}",
        stderr(&o)
    );
    // The file fixed, its hook_dir still a user's: the hook is refused, not run.
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    refused(
        &sb,
        &o,
        &format!(
            "hook {}/50-evil.hook: {} is owned by uid 65534, not root",
            user_dir.display(),
            user_dir.display()
        ),
    );
    assert!(!mark.exists(), "the hook ran");
    // A configuration of another user's, mode 0644: refused as well.
    chown(&cfg, NOBODY);
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("is owned by uid 65534, not root"),
        "{}",
        stderr(&o)
    );
}

/// One rule of udev/xen-vif.rules: match keys, ENV assignments, the RUN command.
struct Rule {
    matches: Vec<(String, Vec<String>)>,
    set_env: Vec<(String, String)>,
    run: String,
}

fn rules() -> Vec<Rule> {
    let text = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("udev/xen-vif.rules"))
        .unwrap();
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut r = Rule {
            matches: Vec::new(),
            set_env: Vec::new(),
            run: String::new(),
        };
        for term in line.split(", ") {
            if let Some((k, v)) = term.split_once("==") {
                let v = v.trim_matches('"');
                r.matches
                    .push((k.to_string(), v.split('|').map(String::from).collect()));
            } else if let Some((k, v)) = term.split_once("+=") {
                assert_eq!(k, "RUN");
                r.run = v.trim_matches('"').to_string();
            } else if let Some((k, v)) = term.split_once('=') {
                let k = k.strip_prefix("ENV{").unwrap().strip_suffix('}').unwrap();
                r.set_env
                    .push((k.to_string(), v.trim_matches('"').to_string()));
            }
        }
        out.push(r);
    }
    out
}

/// udev's glob for KERNEL== (only a trailing or inner `*` is used in the rules).
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((pre, post)) => {
            s.len() >= pre.len() + post.len() && s.starts_with(pre) && s.ends_with(post)
        }
    }
}

/// Deliver a uevent as udev would with our rules: every matching rule's ENV, then its RUN
/// (the program by its basename, the script name it must have) with `$env{ACTION}` expanded.
fn uevent(sb: &Sandbox, props: &[(&str, &str)]) -> Vec<std::process::Output> {
    let get = |k: &str| props.iter().find(|(p, _)| *p == k).map(|(_, v)| *v);
    let mut outs = Vec::new();
    for rule in rules() {
        let hit = rule.matches.iter().all(|(k, alts)| {
            let value = get(k).unwrap_or("");
            alts.iter().any(|a| {
                if k == "KERNEL" {
                    glob(a, value)
                } else {
                    a == value
                }
            })
        });
        if !hit {
            continue;
        }
        let mut env: Vec<(String, String)> = props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(rule.set_env.clone());
        let run = rule.run.replace("$env{ACTION}", get("ACTION").unwrap());
        let mut words = run.split(' ');
        let program = words.next().unwrap();
        assert!(program.starts_with("/usr/libexec/xen-vif/"), "{program}");
        let name = Path::new(program).file_name().unwrap().to_str().unwrap();
        let args: Vec<&str> = words.collect();
        outs.push(sb.run(name, &args, &env));
    }
    outs
}

fn netback_event(action: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("ACTION", action),
        ("SUBSYSTEM", "xen-backend"),
        ("KERNEL", "vif-5-0"),
        ("XENBUS_TYPE", "vif"),
        ("XENBUS_PATH", BE),
        ("XENBUS_BASE_PATH", "backend"),
        ("script", "/etc/xen/scripts/vif-bridge"),
        ("vif", "vif5.0"),
    ]
}

#[test]
fn udev_rules_run_the_vif_and_tap_actions() {
    let Some(sb) = guest("udevrules", &[]) else {
        return;
    };
    let outs = uevent(&sb, &netback_event("online"));
    assert_eq!(outs.len(), 1);
    assert_ok(&outs[0]);
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("connected")
    );
    sb.netback_vif("vif5.0-emu", "t5.0");
    let tap = |action| {
        vec![
            ("ACTION", action),
            ("SUBSYSTEM", "net"),
            ("KERNEL", "vif5.0-emu"),
            ("INTERFACE", "vif5.0-emu"),
        ]
    };
    let outs = uevent(&sb, &tap("add"));
    assert_eq!(outs.len(), 1);
    assert_ok(&outs[0]);
    assert_eq!(sb.master("vif5.0-emu").as_deref(), Some("xenbr0"));
    assert_ok(&uevent(&sb, &tap("remove"))[0]);
    assert_eq!(sb.master("vif5.0-emu"), None);
    assert_ok(&uevent(&sb, &netback_event("offline"))[0]);
    assert_eq!(sb.master("vif5.0"), None);
    // Events the rules do not handle run nothing.
    assert!(uevent(&sb, &netback_event("add")).is_empty());
    assert!(uevent(&sb, &tap("change")).is_empty());
}

#[test]
fn udev_does_nothing_when_libxl_runs_the_scripts() {
    let Some(sb) = guest("udevlibxl", &[]) else {
        return;
    };
    // libxl with run_hotplug_scripts=1 (the default) says so in xenstore.
    sb.xs.write("/local/domain/0/libxl/disable_udev", "1");
    let before = sb.snapshot();
    sb.xs.clear_traffic();
    assert_ok(&uevent(&sb, &netback_event("online"))[0]);
    assert_eq!(before, sb.snapshot());
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("")
    );
    // libxl's own call does the work.
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
}

/// Every subcommand and flag `--help` shows.
fn help_words() -> Vec<String> {
    fn help(args: &[&str]) -> String {
        let o = Command::new(binary())
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    }
    let top = help(&[]);
    let mut words = Vec::new();
    let mut subs = Vec::new();
    let mut section = "";
    for line in top.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            section = line;
            continue;
        }
        if section == "Commands:" {
            if let Some(name) = line.split_whitespace().next() {
                if name != "help" {
                    subs.push(name.to_string());
                }
            }
        }
    }
    assert!(subs.contains(&"check-config".to_string()), "{subs:?}");
    let mut helps = vec![top];
    for s in &subs {
        words.push(s.clone());
        helps.push(help(&[s]));
    }
    for h in helps {
        for w in h.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']') {
            if w.starts_with("--") || (w.starts_with('-') && w.len() == 2) {
                words.push(w.to_string());
            }
        }
    }
    words.sort();
    words.dedup();
    words
}

#[test]
fn man_page_and_completions_cover_everything_help_shows() {
    let o = Command::new(binary())
        .args(["generate", "man"])
        .output()
        .unwrap();
    assert_ok(&o);
    // roff escapes '-' as '\-'.
    let man = String::from_utf8(o.stdout).unwrap().replace("\\-", "-");
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..80]
    );
    for w in help_words() {
        assert!(man.contains(&w), "man page lacks {w}");
    }
    for f in [
        "/etc/xen/xen-vif.toml",
        "/var/log/xen/xen-hotplug.log",
        "vif-post.d",
    ] {
        assert!(man.contains(f), "man page lacks {f}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let o = Command::new(binary())
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        assert_ok(&o);
        let text = String::from_utf8(o.stdout).unwrap();
        for w in help_words() {
            let bare = w.trim_start_matches('-');
            assert!(text.contains(bare), "{shell} completion lacks {w}");
        }
    }
    // The hidden packaging command stays out of the user-facing docs.
    assert!(!man.contains("xen-vif generate"));
}

/// syslog: facility daemon, ident = the script name, one info line per change. /dev/log is a
/// datagram socket of the test's, bound over /dev in the binary's private mount namespace.
#[test]
fn syslog_gets_daemon_lines_with_the_script_as_ident() {
    use std::os::unix::net::UnixDatagram;
    let Some(sb) = guest("syslog", &[]) else {
        return;
    };
    let dev = sb.path("dev");
    fs::create_dir_all(&dev).unwrap();
    let sock = UnixDatagram::bind(dev.join("log")).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let env = sb.libxl_env("vif-bridge", 5, 0);
    let mut cmd = sb.script_command(&[], "vif-bridge", &["online", "type_if=vif"], &env);
    dev_from(&mut cmd, &dev);
    let o = cmd.output().unwrap();
    assert_ok(&o);
    let mut lines = Vec::new();
    let mut buf = [0u8; 2048];
    sock.set_nonblocking(true).unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // <30> = facility daemon (3) * 8 + info (6).
    assert!(
        lines.iter().any(|l| l.starts_with("<30>")
            && l.contains("vif-bridge[")
            && l.contains("ip link set vif5.0 master xenbr0")),
        "{lines:#?}"
    );
}

#[test]
fn nat_hooks_get_the_stock_default_ip_with_its_prefix() {
    let Some(sb) = guest("nathook", &[("script", "/etc/xen/scripts/vif-nat")]) else {
        return;
    };
    recording_hook(&sb, "50-record.hook", &sb.path("hook-env"));
    assert_ok(&sb.online("vif-nat", 5, 0));
    let env = env_file(&sb.path("hook-env.online"));
    // Stock vif-nat sets `ip` to its derived default, with the /16 it puts on nothing.
    assert_eq!(env.get("ip").map(String::as_str), Some("10.0.5.1/16"));
    assert_eq!(env.get("dev").map(String::as_str), Some("vif5.0"));
    assert_eq!(env.get("bridge"), None, "{env:?}");
    assert_ok(&sb.offline("vif-nat", 5, 0));
    let env = env_file(&sb.path("hook-env.offline"));
    assert_eq!(env.get("command").map(String::as_str), Some("offline"));
    assert_eq!(env.get("ip").map(String::as_str), Some("10.0.5.1/16"));
}
