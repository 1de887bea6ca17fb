//! Concurrency, faults and hostile input. Every case runs the real binary in the real
//! kernel; "nothing changed" is a snapshot comparison.

mod support;
use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::{Duration, Instant};

use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";

/// Run `f` on `items` with at most `width` at a time.
fn in_parallel<T: Sync, R: Send>(items: &[T], width: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let mut out = Vec::new();
    for chunk in items.chunks(width) {
        let results: Vec<R> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|i| s.spawn(|| f(i))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        out.extend(results);
    }
    out
}

#[test]
fn two_hundred_vifs_32_at_a_time() {
    let Some(sb) = Sandbox::new("many") else {
        return;
    };
    sb.bridge("xenbr0");
    let domids: Vec<u32> = (1..=200).collect();
    let mut batch = String::new();
    for d in &domids {
        batch.push_str(&format!("link add vif{d}.0 type veth peer name g{d}\n"));
    }
    std::fs::write(sb.path("links.batch"), batch).unwrap();
    sb.ip(&format!("-batch {}", sb.path("links.batch").display()));
    for d in &domids {
        sb.backend(*d, 0, &[("bridge", "xenbr0")]);
    }
    let results = in_parallel(&domids, 32, |d| sb.online("vif-bridge", *d, 0));
    for (d, o) in domids.iter().zip(&results) {
        assert!(o.status.success(), "vif{d}.0 online: {}", stderr(o));
    }
    let ports = sb.ip("-br link show master xenbr0");
    for d in &domids {
        assert!(
            ports.contains(&format!("vif{d}.0@")),
            "vif{d}.0 not attached"
        );
        assert_eq!(
            sb.xs
                .read(&format!("/local/domain/0/backend/vif/{d}/0/hotplug-status"))
                .as_deref(),
            Some("connected")
        );
    }
    let results = in_parallel(&domids, 32, |d| sb.offline("vif-bridge", *d, 0));
    for (d, o) in domids.iter().zip(&results) {
        assert!(o.status.success(), "vif{d}.0 offline: {}", stderr(o));
    }
    assert_eq!(sb.ip("-br link show master xenbr0").trim(), "");
}

#[test]
fn online_and_offline_of_the_same_vif_racing_end_consistent() {
    let Some(sb) = guest_on_xenbr0("race", &[]) else {
        return;
    };
    for round in 0..20 {
        let (a, b) = std::thread::scope(|s| {
            let on = s.spawn(|| sb.online("vif-bridge", 5, 0));
            let off = s.spawn(|| sb.offline("vif-bridge", 5, 0));
            (on.join().unwrap(), off.join().unwrap())
        });
        assert_ok(&a);
        assert_ok(&b);
        let attached = sb.master("vif5.0").as_deref() == Some("xenbr0");
        let up = sb.is_up("vif5.0");
        assert_eq!(
            attached, up,
            "round {round}: half attached (master {attached}, up {up})"
        );
    }
}

/// strace's fault injection: SIGKILL the binary at the `n`th call of `syscall`.
fn kill_at(syscall: &str, n: u32) -> Vec<String> {
    vec![
        "strace".into(),
        "-f".into(),
        "-qq".into(),
        "-o".into(),
        "/dev/null".into(),
        "-e".into(),
        format!("trace={syscall}"),
        "-e".into(),
        format!("inject={syscall}:signal=KILL:when={n}"),
    ]
}

fn killed(o: &Output) -> bool {
    o.status.signal() == Some(9) || o.status.code() == Some(137)
}

/// Kill online (or offline) at every netlink send and every write in turn; each time, running the
/// same command again must converge to the state a clean run reaches.
#[test]
fn killed_at_any_step_the_same_command_converges() {
    let Some(sb) = guest_on_xenbr0("kill", &[("vifname", "web0"), ("mtu", "1400")]) else {
        return;
    };
    if !require(have_tool("strace"), "strace (fault injection)") {
        return;
    }
    let reset = |sb: &Sandbox| {
        // Back to what netback hands us: vif5.0, down, on no bridge, its own MAC and MTU.
        let renamed = sb.link("web0").is_some();
        let dev = if renamed { "web0" } else { "vif5.0" };
        sb.ip(&format!("link set {dev} down nomaster"));
        if renamed {
            let _ = sb.ip_try("link property del dev web0 altname vif5.0");
            sb.ip("link set web0 name vif5.0");
        }
        sb.ip("link set vif5.0 mtu 1500 address 02:00:00:00:05:00");
        sb.xs.write(&format!("{BE}/hotplug-status"), "");
        sb.xs.rm(&format!("{BE}/hotplug-error"));
    };
    reset(&sb);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let online_state = sb.snapshot();
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    let offline_state = sb.snapshot();
    let env = sb.libxl_env("vif-bridge", 5, 0);
    for syscall in ["sendto", "write"] {
        for n in 1.. {
            reset(&sb);
            let w = kill_at(syscall, n);
            let w: Vec<&str> = w.iter().map(String::as_str).collect();
            let o = sb.run_wrapped(&w, "vif-bridge", &["online", "type_if=vif"], &env);
            if !killed(&o) {
                assert_ok(&o);
                break;
            }
            assert_ok(&sb.online("vif-bridge", 5, 0));
            assert_eq!(
                online_state,
                sb.snapshot(),
                "online killed at {syscall} #{n}, then online"
            );
            assert_eq!(
                sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
                Some("connected")
            );
            // Offline killed at the same point, then offline again.
            let o = sb.run_wrapped(&w, "vif-bridge", &["offline", "type_if=vif"], &env);
            if killed(&o) {
                assert_ok(&sb.offline("vif-bridge", 5, 0));
            } else {
                assert_ok(&o);
            }
            assert_eq!(
                offline_state,
                sb.snapshot(),
                "offline killed at {syscall} #{n}, then offline"
            );
            assert!(n < 200, "{syscall}: never finished");
        }
    }
}

/// The vif vanishes while online is under way (netback removed it): online fails cleanly,
/// offline succeeds.
#[test]
fn the_vif_vanishing_midway() {
    let Some(sb) = guest_on_xenbr0("vanish", &[("mtu", "1400")]) else {
        return;
    };
    if !require(have_tool("strace"), "strace (fault injection)") {
        return;
    }
    let env = sb.libxl_env("vif-bridge", 5, 0);
    // Count the netlink sends of a clean online, then delete the vif before each in turn.
    for n in 1..=12 {
        let _ = sb.ip_try("link del vif5.0");
        sb.netback_vif("vif5.0", "g5.0");
        sb.xs.write(&format!("{BE}/hotplug-status"), "");
        let w = [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=sendto",
            "-e",
            &format!("inject=sendto:delay_enter=300000:when={n}"),
        ];
        let child = sb
            .script_command(&w, "vif-bridge", &["online", "type_if=vif"], &env)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let _ = sb.ip_try("link del vif5.0");
        let o = child.wait_with_output().unwrap();
        match o.status.code() {
            Some(0) => {} // the delay hit a step after the last kernel change
            Some(1) => {
                let err = sb
                    .xs
                    .read(&format!("{BE}/hotplug-error"))
                    .unwrap_or_default();
                assert!(err.starts_with("vif-bridge online vif5.0: "), "#{n}: {err}");
                assert_eq!(err.lines().count(), 1);
                assert_eq!(
                    sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
                    Some("error")
                );
            }
            other => panic!("#{n}: exit {other:?}: {}", stderr(&o)),
        }
        assert_ok(&sb.offline("vif-bridge", 5, 0));
    }
}

#[test]
fn xenstore_errors_are_clear_and_bounded() {
    let Some(sb) = guest_on_xenbr0("xsfault", &[]) else {
        return;
    };
    let before = sb.snapshot();
    for (op, prefix, err) in [
        ("DIRECTORY", BE, "EACCES"),
        ("READ", BE, "EACCES"),
        ("READ", BE, "EAGAIN"),
        ("READ", BE, "ENOENT"),
        // One error answer amid the backend's reads, which go out together: the answers
        // after it must still be matched to their requests.
        ("READ", &format!("{BE}/bridge"), "ENOENT"),
        ("WRITE", "/local/domain/5/device", "EACCES"),
        ("WRITE", &format!("{BE}/hotplug-status"), "EAGAIN"),
    ] {
        sb.fault(op, prefix, FaultAction::Error(err.into()));
        let o = sb.online("vif-bridge", 5, 0);
        if op == "READ" && err == "ENOENT" {
            // A key read as missing after the listing named it: treated as unset, so online works.
            assert_ok(&o);
            assert_ok(&sb.offline("vif-bridge", 5, 0));
            continue;
        }
        assert_fails(&o);
        let line = stderr(&o);
        assert_eq!(line.lines().count(), 1, "{op} {err}: {line}");
        assert!(line.contains("vif-bridge online vif5.0: "), "{line}");
        assert_eq!(
            without(&before, "vif5.0"),
            without(&sb.snapshot(), "vif5.0"),
            "{op} {err}"
        );
        assert!(!sb.is_up("vif5.0"), "{op} {err}: undone");
    }
}

#[test]
fn a_hung_xenstored_gives_a_clear_error_well_before_libxl_kills() {
    let Some(sb) = guest_on_xenbr0("xshang", &[]) else {
        return;
    };
    sb.fault("READ", BE, FaultAction::Hang);
    let start = Instant::now();
    let o = sb.online("vif-bridge", 5, 0);
    let took = start.elapsed();
    assert_fails(&o);
    assert!(stderr(&o).contains("did not answer"), "{}", stderr(&o));
    // A bound, not a timing claim: it must end by itself long before libxl's 40 s SIGKILL.
    assert!(took < Duration::from_secs(38), "{took:?}");
}

#[test]
fn xenstored_closing_the_connection_is_a_clear_error() {
    let Some(sb) = guest_on_xenbr0("xsclose", &[]) else {
        return;
    };
    sb.fault("READ", BE, FaultAction::Close);
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}

/// Run the binary in a private mount namespace where `setup` has broken something of the host.
fn run_in_mount_ns(
    sb: &Sandbox,
    env: &[(String, String)],
    setup: fn() -> nix::Result<()>,
) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = sb.script_command(&[], "vif-bridge", &["online", "type_if=vif"], env);
    // SAFETY: unshare/mount are async-signal-safe syscalls acting on the child only.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            setup()?;
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn run_not_writable_and_no_syslog_still_work() {
    let Some(sb) = guest_on_xenbr0("norun", &[]) else {
        return;
    };
    let env = sb.libxl_env("vif-bridge", 5, 0);
    let o = run_in_mount_ns(&sb, &env, || {
        use nix::mount::{MsFlags, mount};
        // /run read-only (no lock directory) and /dev without /dev/log.
        mount(
            Some("tmpfs"),
            "/run",
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
        mount(
            Some("tmpfs"),
            "/dev",
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )?;
        Ok(())
    });
    assert_ok(&o);
    assert!(stderr(&o).contains("going on without it"), "{}", stderr(&o));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
}

/// Every input channel with hostile values: exit 1, one clear line in hotplug-error, no panic,
/// the host unchanged.
#[test]
fn hostile_input_table() {
    let Some(sb) = guest_on_xenbr0("hostile", &[]) else {
        return;
    };
    sb.ip("link add eth0 type veth peer name eth0p");
    let base = sb.libxl_env("vif-bridge", 5, 0);
    let before = sb.snapshot();
    let long = "x".repeat(4096);
    let many_ips: String = (0..3000)
        .map(|i| format!("10.{}.{}.{} ", i / 65536, (i / 256) % 256, i % 256 + 1))
        .collect();
    // (backend key, value)
    let keys: Vec<(&str, String)> = vec![
        ("vifname", "a".repeat(16)),
        ("vifname", "a/b".into()),
        ("vifname", "a b".into()),
        ("vifname", "a\nb".into()),
        ("vifname", ".".into()),
        ("vifname", "..".into()),
        ("vifname", "xenbr0".into()),
        ("vifname", "eth0".into()),
        ("vifname", long.clone()),
        ("bridge", long.clone()),
        ("bridge", "../../x".into()),
        ("mtu", "0".into()),
        ("mtu", "-1".into()),
        ("mtu", "junk".into()),
        ("mtu", "70000".into()),
        ("mtu", long.clone()),
        ("vlan", "junk".into()),
        ("vlan", "0".into()),
        ("vlan", "1-5000".into()),
        ("vlan", "10p/4090+10x10".into()),
        ("vlan", long.clone()),
        ("frontend-id", "6".into()),
        ("frontend-id", "junk".into()),
        ("handle", "1".into()),
    ];
    for (key, value) in &keys {
        sb.backend(5, 0, &[("bridge", "xenbr0"), (key, value)]);
        let o = sb.online("vif-bridge", 5, 0);
        check_refused(&sb, &o, &before, &format!("{key}={value:.40}"));
        sb.backend(5, 0, &[("bridge", "xenbr0"), (key, "")]);
        sb.xs.rm(&format!("{BE}/{key}"));
    }
    // The route mode's `ip` list.
    for value in [
        "junk",
        "10.0.0.0/24 10.0.0.5",
        "fe80::1%eth0",
        many_ips.as_str(),
        long.as_str(),
    ] {
        sb.backend(
            5,
            0,
            &[
                ("script", "/etc/xen/scripts/vif-route"),
                ("gatewaydev", "xenbr0"),
                ("ip", value),
            ],
        );
        let o = sb.run("vif-route", &["online", "type_if=vif"], &base);
        check_refused(&sb, &o, &before, &format!("ip={value:.40}"));
    }
    sb.xs.rm(&format!("{BE}/ip"));
    sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("gatewaydev", ""),
        ],
    );
    // argv words and environment.
    let set = |k: &str, v: &str| {
        let mut e: Vec<(String, String)> = base.iter().filter(|(x, _)| x != k).cloned().collect();
        e.push((k.into(), v.into()));
        e
    };
    let long_bridge = format!("bridge={long}");
    type Env = Vec<(String, String)>;
    let cases: Vec<(Vec<&str>, Env, &str)> = vec![
        (
            vec!["online", "type_if=vif", "bridge=a/b"],
            base.clone(),
            "bridge=a/b",
        ),
        (
            vec!["online", "type_if=vif", &long_bridge],
            base.clone(),
            "bridge=long",
        ),
        (
            vec!["online", "type_if=bogus"],
            base.clone(),
            "type_if=bogus",
        ),
        (vec!["reboot"], base.clone(), "unknown action"),
        (vec!["online"], set("vif", "eth0"), "vif=eth0"),
        (vec!["online"], set("vif", "xenbr0"), "vif=xenbr0"),
        (vec!["online"], set("vif", "vif6.0"), "vif=vif6.0"),
        (
            vec!["online"],
            set("XENBUS_PATH", "backend/vif/5/../0"),
            "XENBUS_PATH ..",
        ),
        (
            vec!["online"],
            set("XENBUS_PATH", "backend/vif/x/0"),
            "XENBUS_PATH x",
        ),
        (
            vec!["online"],
            set("XENBUS_PATH", "backend/vif/5/0/../../6/0"),
            "XENBUS_PATH deep",
        ),
        (
            vec!["online"],
            set("XENBUS_PATH", &long),
            "XENBUS_PATH long",
        ),
        (
            vec!["online"],
            set("XENBUS_PATH", "backend/vif/6/0"),
            "domid mismatch",
        ),
    ];
    sb.backend(6, 0, &[("frontend-id", "5")]);
    // Without a backend `bridge`, the argv word is the effective value (xenstore would win).
    sb.xs.rm(&format!("{BE}/bridge"));
    for (args, env, what) in cases {
        let o = sb.run("vif-bridge", &args, &env);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{what}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{what}");
        assert_eq!(before, sb.snapshot(), "{what}");
    }
    // Non-UTF-8 in argv and the environment.
    {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let bad = OsStr::from_bytes(b"bridge=br\xff0");
        let o = sb
            .script_command(&[], "vif-bridge", &["online", "type_if=vif"], &base)
            .arg(bad)
            .output()
            .unwrap();
        check_refused(&sb, &o, &before, "argv non-UTF-8");
        let o = sb
            .script_command(
                &[],
                "vif-bridge",
                &["online", "type_if=vif"],
                &set("vif", "x"),
            )
            .env("vif", OsStr::from_bytes(b"vif5.\xff"))
            .output()
            .unwrap();
        check_refused(&sb, &o, &before, "env non-UTF-8");
    }
}

#[track_caller]
fn check_refused(sb: &Sandbox, o: &Output, before: &str, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(1),
        "{what}: exit {:?}: {}",
        o.status,
        stderr(o)
    );
    let err = sb
        .xs
        .read(&format!("{BE}/hotplug-error"))
        .unwrap_or_default();
    assert!(
        !err.is_empty() && !err.contains('\n'),
        "{what}: hotplug-error {err:?}"
    );
    assert!(
        err.len() < 600,
        "{what}: hotplug-error is {} bytes",
        err.len()
    );
    assert!(!stderr(o).contains("panicked"), "{what}");
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error"),
        "{what}"
    );
    assert_eq!(before, sb.snapshot(), "{what}");
    sb.xs.rm(&format!("{BE}/hotplug-error"));
    sb.xs.write(&format!("{BE}/hotplug-status"), "");
}

/// network-bridge start and stop racing vif hotplugs: every vif ends attached and up (its
/// online succeeded) or detached (it failed, or went offline) — never half attached — and the
/// host's bridge is either fully built or fully gone.
#[test]
fn network_bridge_start_and_stop_racing_vif_hotplugs() {
    let Some(sb) = Sandbox::new("netrace") else {
        return;
    };
    let sw = sb.netns("sw");
    sb.veth_to("eth0", &sw, "port0");
    sb.ip("link set eth0 up");
    sb.ip("addr add 10.0.0.2/24 dev eth0");
    sb.ip("route add default via 10.0.0.1 dev eth0");
    let domids: Vec<u32> = (1..=8).collect();
    for d in &domids {
        sb.netback_vif(&format!("vif{d}.0"), &format!("g{d}"));
        sb.backend(*d, 0, &[("bridge", "eth0")]);
    }
    let is_bridge = |sb: &Sandbox| {
        sb.link("eth0")
            .and_then(|l| l["linkinfo"]["info_kind"].as_str().map(String::from))
            == Some("bridge".into())
    };
    let consistent = |sb: &Sandbox, d: u32, ok: bool, what: &str| {
        let vif = format!("vif{d}.0");
        let attached = sb.master(&vif).is_some();
        let status = sb
            .xs
            .read(&format!("/local/domain/0/backend/vif/{d}/0/hotplug-status"));
        if ok {
            assert!(
                attached && sb.is_up(&vif),
                "{what}: {vif} succeeded but is not attached and up"
            );
            assert_eq!(status.as_deref(), Some("connected"), "{what}: {vif}");
        } else {
            assert!(!attached, "{what}: {vif} failed but is attached");
            assert_eq!(status.as_deref(), Some("error"), "{what}: {vif}");
        }
    };

    // Start racing eight onlines.
    let (start, onlines) = std::thread::scope(|s| {
        let st = s.spawn(|| sb.net("network-bridge", &["start", "netdev=eth0"]));
        let on: Vec<_> = domids
            .iter()
            .map(|d| {
                let sb = &sb;
                s.spawn(move || sb.online("vif-bridge", *d, 0))
            })
            .collect();
        (
            st.join().unwrap(),
            on.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    assert_ok(&start);
    assert!(is_bridge(&sb), "start built the bridge");
    for (d, o) in domids.iter().zip(&onlines) {
        consistent(&sb, *d, o.status.success(), "start racing online");
        if !o.status.success() {
            // Once the bridge is there, the retry libxl would do succeeds.
            assert_ok(&sb.online("vif-bridge", *d, 0));
            consistent(&sb, *d, true, "retry");
        }
    }

    // Stop (without force) racing eight offlines: stop refuses while a vif is attached, or
    // runs after they all left; either way nothing is half done.
    let (stop, offlines) = std::thread::scope(|s| {
        let st = s.spawn(|| sb.net("network-bridge", &["stop", "netdev=eth0"]));
        let off: Vec<_> = domids
            .iter()
            .map(|d| {
                let sb = &sb;
                s.spawn(move || sb.offline("vif-bridge", *d, 0))
            })
            .collect();
        (
            st.join().unwrap(),
            off.into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    for (d, o) in domids.iter().zip(&offlines) {
        assert_ok(o);
        assert_eq!(
            sb.master(&format!("vif{d}.0")),
            None,
            "vif{d}.0 left attached"
        );
    }
    if stop.status.success() {
        assert!(!is_bridge(&sb), "stop succeeded, so the bridge is gone");
    } else {
        assert!(is_bridge(&sb), "stop refused, so the bridge is whole");
        assert!(stderr(&stop).contains("attached"), "{}", stderr(&stop));
        assert_ok(&sb.net("network-bridge", &["stop", "netdev=eth0"]));
        assert!(!is_bridge(&sb));
    }
}
