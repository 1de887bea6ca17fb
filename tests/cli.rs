//! `xen-vif` as an administrator's command: add/remove/status/--dry-run, help and version.

mod support;
use support::*;

fn cli(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    sb.run("xen-vif", args, &[])
}

#[test]
fn add_and_remove_by_domid_and_devid() {
    let Some(sb) = guest_on_xenbr0("cli-add", &[]) else {
        return;
    };
    assert_ok(&cli(&sb, &["add", "5", "0"]));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
    assert_eq!(
        sb.xs
            .read("/local/domain/0/backend/vif/5/0/hotplug-status")
            .as_deref(),
        Some("connected")
    );
    assert_ok(&cli(&sb, &["remove", "5", "0"]));
    assert_eq!(sb.master("vif5.0"), None);
    assert!(!sb.is_up("vif5.0"));
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some(sb) = guest_on_xenbr0("cli-dry", &[("mtu", "1400")]) else {
        return;
    };
    let before = sb.snapshot();
    let before_xs = sb.xs.dump();
    let o = cli(&sb, &["add", "5", "0", "--dry-run"]);
    assert_ok(&o);
    let out = stdout(&o);
    for want in [
        "ip link set vif5.0 address fe:ff:ff:ff:ff:ff",
        "ip link set vif5.0 mtu 1400",
        "ip link set vif5.0 master xenbr0",
        "ip link set vif5.0 up",
        "xenstore-write /local/domain/5/device/vif/0/mtu 1400",
        "hotplug-status connected",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert_eq!(before, sb.snapshot());
    assert_eq!(before_xs, sb.xs.dump());
    // And for remove once attached: the plan, still nothing done.
    assert_ok(&cli(&sb, &["add", "5", "0"]));
    let attached = sb.snapshot();
    let o = cli(&sb, &["remove", "5", "0", "--dry-run"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("ip link set vif5.0 nomaster"),
        "{}",
        stdout(&o)
    );
    assert_eq!(attached, sb.snapshot());
}

#[test]
fn route_mode_comes_from_the_backend_script_key() {
    let Some(sb) = Sandbox::new("cli-route") else {
        return;
    };
    sb.bridge("gw0");
    sb.ip("addr add 10.9.0.1/29 dev gw0");
    sb.netback_vif("vif5.0", "g5.0");
    sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("ip", "10.9.0.2"),
            ("gatewaydev", "gw0"),
        ],
    );
    let o = cli(&sb, &["add", "5", "0", "--dry-run"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("ip route add 10.9.0.2/32 dev vif5.0 src 10.9.0.1 metric 2"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn status_shows_every_vif_and_the_differences() {
    let Some(sb) = guest_on_xenbr0("cli-status", &[]) else {
        return;
    };
    sb.netback_vif("vif5.1", "g5.1");
    sb.backend(5, 1, &[("bridge", "xenbr0"), ("mtu", "1400")]);
    sb.backend(7, 0, &[("bridge", "xenbr0")]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let o = cli(&sb, &["status"]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("vif5.0") && out.contains("connected"), "{out}");
    assert!(
        out.contains("needs: ip link set vif5.1 master xenbr0"),
        "{out}"
    );
    assert!(out.contains("device vif7.0 does not exist"), "{out}");

    let o = cli(&sb, &["status", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 3);
    let v50 = &list[0];
    assert_eq!(v50["device"], "vif5.0");
    assert_eq!(v50["bridge"], "xenbr0");
    assert_eq!(v50["mtu"], 1500);
    assert_eq!(v50["state"], "up");
    assert_eq!(v50["mode"], "bridge");
    assert_eq!(v50["hotplug_status"], "connected");
    assert!(v50["differences"].as_array().unwrap().is_empty(), "{v50}");
    let v51 = &list[1];
    assert_eq!(v51["state"], "down");
    assert!(
        v51["differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("mtu 1400"))
    );
    assert_eq!(list[2]["state"], "missing");
}

/// One backend with a value that is not UTF-8 and one with control characters in its
/// hotplug-error: the first is a row saying so, the rest are shown, nothing drives the terminal.
#[test]
fn status_goes_on_past_a_bad_backend_and_escapes_control_characters() {
    let Some(sb) = guest_on_xenbr0("cli-status-bad", &[]) else {
        return;
    };
    sb.netback_vif("vif6.0", "g6.0");
    sb.backend(6, 0, &[("bridge", "xenbr0")]);
    sb.xs
        .write_bytes("/local/domain/0/backend/vif/6/0/mtu", b"15\xff\xfe00");
    sb.backend(7, 0, &[("bridge", "xenbr0")]);
    sb.xs.write(
        "/local/domain/0/backend/vif/7/0/hotplug-error",
        "boom\x1b[2J\x1b]0;owned\x07\nsecond line",
    );
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let o = cli(&sb, &["status"]);
    assert_ok(&o);
    let out = stdout(&o);
    assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
    assert!(
        out.contains("hotplug-error: boom\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\nsecond line"),
        "{out}"
    );
    // The header, one row per vif, and the daemon's line last.
    let rows: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(rows.len(), 5, "{out}");
    assert_eq!(rows[4], "daemon: not running", "{out}");
    assert!(rows[1].starts_with("5      0      vif5.0 "), "{out}");
    assert!(
        rows[2].starts_with("6      0      vif6.0 ") && rows[2].contains(" bad "),
        "{out}"
    );
    assert!(
        out.contains("cannot read the backend: read xenstore"),
        "{out}"
    );
    assert!(rows[3].starts_with("7      0      vif7.0 "), "{out}");
    let o = cli(&sb, &["status", "--json"]);
    assert_ok(&o);
    assert!(!stdout(&o).contains('\x1b'), "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[1]["state"], "bad");
    assert_eq!(
        list[2]["hotplug_error"],
        "boom\x1b[2J\x1b]0;owned\x07\nsecond line"
    );
}

/// Every output command, as the administrator would run it here.
const OUTPUT_COMMANDS: &[&[&str]] = &[
    &["status"],
    &["status", "--json"],
    &["check-config"],
    &["add", "5", "0", "--dry-run"],
    &["network", "route", "status", "netdev=gw0"],
    &[
        "network",
        "route",
        "start",
        "netdev=gw0",
        "gateway=10.9.0.1/29",
        "--dry-run",
    ],
    &["--help"],
    &["status", "--help"],
    &["--version"],
    &["generate", "man"],
    &["generate", "completions", "bash"],
];

/// Run `xen-vif ARGS` in the sandbox with stdout going to `out`.
fn cli_to(sb: &Sandbox, args: &[&str], out: std::process::Stdio) -> std::process::Output {
    let mut cmd = sb.command(sb.path("xen-vif"));
    cmd.args(args).stdout(out);
    cmd.output().unwrap()
}

fn output_sandbox(tag: &str) -> Option<Sandbox> {
    let sb = guest_on_xenbr0(tag, &[])?;
    sb.bridge("gw0");
    Some(sb)
}

/// A reader that went away: the command stops writing and exits 0 (not 141: nothing failed
/// for the caller to handle), silently, without a panic.
#[test]
fn a_closed_pipe_ends_every_output_command_quietly() {
    let Some(sb) = output_sandbox("cli-epipe") else {
        return;
    };
    for args in OUTPUT_COMMANDS {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let o = cli_to(&sb, args, std::process::Stdio::from(write));
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
    // Nothing was changed by the dry runs.
    assert_eq!(sb.master("vif5.0"), None);
    assert!(sb.addrs("gw0").is_empty());
}

/// A full disk: one clear line and exit 1, never a panic, never exit 0.
#[test]
fn a_full_disk_is_an_error_for_every_output_command() {
    let Some(sb) = output_sandbox("cli-enospc") else {
        return;
    };
    for args in OUTPUT_COMMANDS {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = cli_to(&sb, args, std::process::Stdio::from(full));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("write to standard output: No space left on device (os error 28)"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("internal error"),
            "{err}"
        );
    }
    assert_eq!(sb.master("vif5.0"), None);
}

/// `xen-vif status | head -1` with 200 vifs: the header, exit 0 under `pipefail`.
#[test]
fn status_of_200_vifs_into_head() {
    let Some(sb) = Sandbox::new("cli-head") else {
        return;
    };
    sb.bridge("xenbr0");
    for domid in 1..=200 {
        sb.backend(domid, 0, &[("bridge", "xenbr0")]);
    }
    let mut cmd = sb.command("bash");
    cmd.arg("-c").arg(format!(
        "set -o pipefail; {} status | head -1",
        sb.path("xen-vif").display()
    ));
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stderr(&o), "");
    assert!(stdout(&o).starts_with("DOMID "), "{}", stdout(&o));
    assert_eq!(stdout(&o).lines().count(), 1);
    // And all 200 when read to the end.
    let o = cli(&sb, &["status"]);
    assert_ok(&o);
    assert_eq!(
        stdout(&o)
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with("daemon:"))
            .count(),
        201
    );
}

#[test]
fn help_and_version() {
    let o = std::process::Command::new(binary())
        .arg("--version")
        .output()
        .unwrap();
    assert_ok(&o);
    assert!(stdout(&o).starts_with("xen-vif "));
    for sub in [
        &["--help"][..],
        &["add", "--help"],
        &["remove", "--help"],
        &["status", "--help"],
    ] {
        let o = std::process::Command::new(binary())
            .args(sub)
            .output()
            .unwrap();
        assert_ok(&o);
        assert!(stdout(&o).contains("Usage:"), "{sub:?}");
    }
    let o = std::process::Command::new(binary())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn personality_errors_are_one_clear_line() {
    let Some(sb) = guest_on_xenbr0("cli-bad", &[]) else {
        return;
    };
    let env = sb.libxl_env("vif-bridge", 5, 0);
    for (args, want) in [
        (&["start"][..], "invalid command \"start\""),
        (&[][..], "no command given"),
        (&["online", "type_if=xyz"], "unknown interface type"),
    ] {
        let o = sb.run("vif-bridge", args, &env);
        assert_fails(&o);
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
        // Not a hotplug request: as stock, the device's status is left alone.
        assert_eq!(
            sb.xs.read("/local/domain/0/backend/vif/5/0/hotplug-error"),
            None
        );
        assert_eq!(
            sb.xs
                .read("/local/domain/0/backend/vif/5/0/hotplug-status")
                .as_deref(),
            Some("")
        );
    }
    // A vif-setup whose script names no mode xen-vif has is a real device waiting: reported.
    let mut env = sb.libxl_env("vif-setup", 5, 0);
    env.retain(|(k, _)| k != "script");
    env.push(("script".into(), "/etc/xen/scripts/vif-openvswitch".into()));
    assert_fails(&sb.run("vif-setup", &["online", "type_if=vif"], &env));
    let he = sb
        .xs
        .read("/local/domain/0/backend/vif/5/0/hotplug-error")
        .unwrap();
    assert!(he.contains("vif-openvswitch"), "{he}");
}

#[test]
fn xenstore_unreachable_is_a_clear_error() {
    let Some(sb) = guest_on_xenbr0("cli-noxs", &[]) else {
        return;
    };
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("XENSTORED_PATH".into(), "/nonexistent/socket".into()));
    let o = sb.run("vif-bridge", &["online", "type_if=vif"], &env);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("cannot connect to xenstored"),
        "{}",
        stderr(&o)
    );
}
