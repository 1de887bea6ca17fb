//! Bounds and the run directory: every wait draws on the run's one deadline, syslog never stalls
//! a run, and nothing planted in /run/xen-vif steers root.

mod support;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";

/// libxl's environment, plus a budget shorter than the default (it can only shorten it), so
/// these tests need not wait 28 s each.
fn env_with_budget(sb: &Sandbox, secs: u32) -> Vec<(String, String)> {
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("XEN_VIF_BUDGET".into(), secs.to_string()));
    env
}

#[test]
fn a_trickling_xenstored_is_bounded_by_the_runs_budget() {
    let Some(sb) = guest_on_xenbr0("trickle", &[]) else {
        return;
    };
    let before = sb.snapshot();
    // One byte every 300 ms: no single read ever waits long, but a reply takes ~10 s.
    sb.fault("READ", BE, FaultAction::Trickle(Duration::from_millis(300)));
    let start = Instant::now();
    let o = sb.run(
        "vif-bridge",
        &["online", "type_if=vif"],
        &env_with_budget(&sb, 2),
    );
    let took = start.elapsed();
    sb.xs.clear_faults();
    assert_fails(&o);
    assert!(took < Duration::from_secs(8), "{took:?}");
    let err = stderr(&o);
    assert!(
        err.contains("xenstored did not answer within the run's 2 s budget"),
        "{err}"
    );
    // Reported on a fresh connection, as libxl reads it; nothing changed.
    let reported = sb
        .xs
        .read(&format!("{BE}/hotplug-error"))
        .unwrap_or_default();
    assert!(reported.contains("did not answer"), "{reported}");
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_budget_spent_midway_undoes_the_change_and_reports() {
    let Some(sb) = guest_on_xenbr0("midway", &[]) else {
        return;
    };
    let before = sb.snapshot();
    // The frontend MTU write comes after the port is on the bridge.
    sb.fault(
        "WRITE",
        "/local/domain/5/device",
        FaultAction::Trickle(Duration::from_millis(300)),
    );
    let start = Instant::now();
    let o = sb.run(
        "vif-bridge",
        &["online", "type_if=vif"],
        &env_with_budget(&sb, 2),
    );
    let took = start.elapsed();
    sb.xs.clear_faults();
    assert_fails(&o);
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(sb.master("vif5.0"), None, "undone: {}", stderr(&o));
    assert!(!sb.is_up("vif5.0"));
    assert_eq!(
        without(&before, "vif5.0"),
        without(&sb.snapshot(), "vif5.0")
    );
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
}

#[test]
fn a_hung_xenstored_with_sigalrm_blocked_still_ends_in_time() {
    let Some(sb) = guest_on_xenbr0("sigmask", &[]) else {
        return;
    };
    sb.fault("READ", BE, FaultAction::Hang);
    let mut cmd = sb.script_command(
        &[],
        "vif-bridge",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-bridge", 5, 0),
    );
    // SAFETY: sigprocmask is async-signal-safe and acts on the child only.
    unsafe {
        cmd.pre_exec(|| {
            let mut set = nix::sys::signal::SigSet::empty();
            set.add(nix::sys::signal::Signal::SIGALRM);
            set.thread_block().map_err(std::io::Error::from)
        });
    }
    let start = Instant::now();
    let o = cmd.output().unwrap();
    let took = start.elapsed();
    sb.xs.clear_faults();
    assert_fails(&o);
    // The default budget: done, and reported, before libxl's 40 s kill.
    assert!(took < Duration::from_secs(38), "{took:?}");
    assert!(stderr(&o).contains("did not answer"), "{}", stderr(&o));
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("error")
    );
}

#[test]
fn a_syslog_that_never_reads_does_not_stall_the_run() {
    let Some(sb) = guest_on_xenbr0("devlog", &[]) else {
        return;
    };
    // A /dev/log that takes a few datagrams and then never another (its queue is full).
    let dev = sb.path("fake-dev");
    std::fs::create_dir_all(&dev).unwrap();
    let _sink = std::os::unix::net::UnixDatagram::bind(dev.join("log")).unwrap();
    // Fill its queue first: the run's very first line finds it full.
    let filler = std::os::unix::net::UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    let mut queued = 0;
    while filler.send_to(b"<30>filler", dev.join("log")).is_ok() {
        queued += 1;
        assert!(queued < 100_000);
    }
    assert!(queued > 0);
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("XEN_VIF_LOG".into(), "debug".into()));
    let mut cmd = sb.script_command(&[], "vif-bridge", &["online", "type_if=vif"], &env);
    dev_from(&mut cmd, &dev);
    let start = Instant::now();
    let o = cmd.output().unwrap();
    let took = start.elapsed();
    assert_ok(&o);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("connected")
    );
}

#[test]
fn a_planted_lock_symlink_is_refused_and_not_followed() {
    let Some(sb) = guest_on_xenbr0("locklink", &[]) else {
        return;
    };
    let before = sb.snapshot();
    // The device lock lives in /run/xen-vif itself, which is the sandbox's run_dir().
    let victim = sb.path("victim");
    std::fs::create_dir_all(sb.run_dir()).unwrap();
    let lock = sb.run_dir().join("vif5.0.lock");
    let _ = std::fs::remove_file(&lock);
    std::os::unix::fs::symlink(&victim, &lock).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert!(!victim.exists(), "root created the symlink's target");
    assert_eq!(before, sb.snapshot());
    std::fs::remove_file(&lock).unwrap();
    assert_ok(&sb.online("vif-bridge", 5, 0));
}

fn route_host(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.ip("link add eth0 type veth peer name eth0p");
    sb.ip("link set eth0 up");
    sb.ip("link set eth0p up");
    sb.ip("address add 192.0.2.1/24 dev eth0");
    sb.ip("route add default via 192.0.2.254 dev eth0");
    Some(sb)
}

#[test]
fn state_is_private_whatever_the_umask() {
    let Some(sb) = route_host("umask") else {
        return;
    };
    std::fs::create_dir_all(sb.run_dir()).unwrap();
    std::fs::set_permissions(sb.run_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = sb.script_command(&[], "network-route", &["start"], &[]);
    // SAFETY: umask(2) is async-signal-safe and acts on the child only.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::empty());
            Ok(())
        });
    }
    assert_ok(&cmd.output().unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    let files = sb.state_files();
    assert!(!files.is_empty());
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
        assert_eq!(mode(f.parent().unwrap()), 0o700, "{}", f.display());
    }
    assert_eq!(mode(&sb.run_dir()), 0o700);
    assert_ok(&sb.net("network-route", &["stop"]));
}

#[test]
fn a_forged_state_file_is_never_acted_on() {
    let Some(sb) = route_host("forged") else {
        return;
    };
    assert_ok(&sb.net("network-route", &["start"]));
    let [state] = sb.state_files().try_into().unwrap();
    let victim = sb.path("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    // Point a sysctl record at any file: stop must refuse it, not write there.
    let forged: String = text
        .lines()
        .map(|l| {
            if l.starts_with("sysctl ") {
                let rest: Vec<&str> = l.split(' ').filter(|w| !w.starts_with("path=")).collect();
                format!("{} path={}\n", rest.join(" "), victim.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(forged, text);
    std::fs::write(&state, &forged).unwrap();
    let o = sb.net("network-route", &["stop"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("not a network sysctl"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert!(
        state.exists(),
        "the state stays for the administrator to look at"
    );

    // Someone else's state file (or one others may write) is refused outright.
    std::fs::write(&state, &text).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = sb.net("network-route", &["stop"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("lets group or others write it"),
        "{}",
        stderr(&o)
    );
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let o = sb.net("network-route", &["stop"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("owned by uid 65534"), "{}", stderr(&o));
    nix::unistd::chown(&state, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    assert_ok(&sb.net("network-route", &["stop"]));
    assert!(sb.state_files().is_empty());
}
