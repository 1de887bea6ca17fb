//! `xen-vif daemon` against the test xenstored and the real kernel: backends written as libxl
//! and netback write them (state 1, then 2 with online 1; removal: online 0, state 5, 6, the
//! directory removed), veths standing in for netback's vifs.

mod support;
use support::*;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BASE: &str = "/local/domain/0/backend/vif";

fn be(domid: u32, devid: u32) -> String {
    format!("{BASE}/{domid}/{devid}")
}

/// A running `xen-vif daemon`; killed (SIGKILL) when dropped.
struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    fn start(sb: &Sandbox) -> Daemon {
        // Ready once it watches (a restarted daemon: one more WATCH).
        let watches = || {
            sb.xs
                .traffic()
                .iter()
                .filter(|r| r.op == "WATCH" && r.path.ends_with("/backend/vif"))
                .count()
        };
        let before = watches();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(sb.path("daemon.log"))
            .unwrap();
        let child = sb
            .command(sb.path("xen-vif"))
            .args(["daemon", "--verbose"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let d = Daemon { child: Some(child) };
        wait_for(
            sb,
            "the daemon to watch backend/vif",
            Duration::from_secs(10),
            || watches() > before,
        );
        d
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Wait for it to exit; its exit code.
    fn wait(mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the daemon did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[track_caller]
fn wait_for(sb: &Sandbox, what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !cond() {
        if Instant::now() > end {
            let log = std::fs::read_to_string(sb.path("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "timed out waiting for {what}\ndaemon log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `ip -batch` in the sandbox: many links in one process.
fn ip_batch(sb: &Sandbox, lines: &[String]) {
    let mut child = Command::new("ip")
        .args(["-n", &sb.ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.join("\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ip -batch");
}

/// Netback's devices for domains `doms` (devid 0).
fn vifs(sb: &Sandbox, doms: impl Iterator<Item = u32>) {
    let lines: Vec<String> = doms
        .map(|d| format!("link add vif{d}.0 type veth peer name g{d}.0"))
        .collect();
    ip_batch(sb, &lines);
}

/// The backend as libxl writes it (state 1, online 1, hotplug-status pending), with `extra`.
fn libxl_creates(sb: &Sandbox, domid: u32, extra: &[(&str, &str)]) {
    let p = be(domid, 0);
    for (k, v) in [
        (
            "frontend",
            format!("/local/domain/{domid}/device/vif/0").as_str(),
        ),
        ("frontend-id", &domid.to_string()),
        ("online", "1"),
        ("state", "1"),
        ("script", "/etc/xen/scripts/vif-bridge"),
        ("mac", "00:16:3e:00:00:01"),
        ("handle", "0"),
        ("type", "vif"),
        ("bridge", "xenbr0"),
        ("hotplug-status", ""),
    ] {
        sb.xs.write(&format!("{p}/{k}"), v);
    }
    for (k, v) in extra {
        sb.xs.write(&format!("{p}/{k}"), v);
    }
}

/// Netback probes the device: InitWait.
fn netback_initwait(sb: &Sandbox, domid: u32) {
    sb.xs.write(&format!("{}/state", be(domid, 0)), "2");
}

/// libxl's removal (online 0 and state 5 in one go).
fn libxl_removes(sb: &Sandbox, domid: u32) {
    sb.xs.write(&format!("{}/online", be(domid, 0)), "0");
    sb.xs.write(&format!("{}/state", be(domid, 0)), "5");
}

/// Netback closes and libxl removes the directory; the device goes.
fn closed_and_gone(sb: &Sandbox, domid: u32) {
    sb.xs.write(&format!("{}/state", be(domid, 0)), "6");
    sb.xs.rm(&be(domid, 0));
    sb.ip(&format!("link del vif{domid}.0"));
}

fn status(sb: &Sandbox, domid: u32) -> Option<String> {
    sb.xs.read(&format!("{}/hotplug-status", be(domid, 0)))
}

/// Every link's master: name → master (or "").
fn masters(sb: &Sandbox) -> BTreeMap<String, String> {
    let v: serde_json::Value = serde_json::from_str(&sb.ip("-j link show")).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["master"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn attached(sb: &Sandbox, domid: u32) -> bool {
    masters(sb)
        .get(&format!("vif{domid}.0"))
        .map(String::as_str)
        == Some("xenbr0")
}

/// Hotplug-log lines per device and action.
fn log_counts(sb: &Sandbox) -> BTreeMap<(String, String), usize> {
    let text =
        std::fs::read_to_string(sb.log_dir().join("xen/xen-hotplug.log")).unwrap_or_default();
    let mut out = BTreeMap::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let dev = w.iter().find_map(|x| x.strip_prefix("device="));
        if let (Some(dev), Some(action)) = (dev, w.get(5)) {
            *out.entry((dev.to_string(), action.to_string()))
                .or_insert(0) += 1;
        }
    }
    out
}

fn sandbox(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.bridge("xenbr0");
    std::fs::create_dir_all(sb.log_dir().join("xen")).unwrap();
    Some(sb)
}

#[test]
fn two_hundred_backends_connected_then_torn_down_each_action_once() {
    let Some(sb) = sandbox("d200") else {
        return;
    };
    let doms = 1..=200u32;
    vifs(&sb, doms.clone());
    let d = Daemon::start(&sb);
    for dom in doms.clone() {
        libxl_creates(&sb, dom, &[]);
    }
    // Initialising: nothing happens before InitWait.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        doms.clone()
            .all(|dom| status(&sb, dom).as_deref() == Some(""))
    );
    for dom in doms.clone() {
        netback_initwait(&sb, dom);
    }
    wait_for(&sb, "200 connected", Duration::from_secs(60), || {
        doms.clone()
            .all(|dom| status(&sb, dom).as_deref() == Some("connected"))
    });
    let m = masters(&sb);
    for dom in doms.clone() {
        assert_eq!(m[&format!("vif{dom}.0")], "xenbr0", "vif{dom}.0");
    }
    // Netback goes on to Connected: no second action.
    for dom in doms.clone() {
        sb.xs.write(&format!("{}/state", be(dom, 0)), "4");
    }
    let st = sb.run("xen-vif", &["status"], &[]);
    assert_ok(&st);
    let out = stdout(&st);
    assert!(
        out.contains(&format!("daemon: running (pid {})", d.pid())),
        "{out}"
    );
    wait_for(&sb, "the handled list", Duration::from_secs(5), || {
        stdout(&sb.run("xen-vif", &["status"], &[])).contains("200 vifs handled")
    });
    assert!(
        stdout(&sb.run("xen-vif", &["status"], &[])).contains("    vif17.0 online ok"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run("xen-vif", &["status", "--json"], &[]))).unwrap();
    let vif17 = json
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["domid"] == 17)
        .unwrap();
    assert_eq!(
        vif17["daemon"],
        serde_json::json!({"pid": d.pid(), "action": "online", "result": "ok"})
    );

    for dom in doms.clone() {
        libxl_removes(&sb, dom);
    }
    wait_for(&sb, "200 detached", Duration::from_secs(60), || {
        let m = masters(&sb);
        doms.clone().all(|dom| m[&format!("vif{dom}.0")].is_empty())
    });
    for dom in doms.clone() {
        closed_and_gone(&sb, dom);
    }
    wait_for(
        &sb,
        "the handled list to empty",
        Duration::from_secs(10),
        || stdout(&sb.run("xen-vif", &["status"], &[])).contains(", 0 vifs handled"),
    );
    let counts = log_counts(&sb);
    for dom in doms {
        for action in ["online", "offline"] {
            let key = (format!("vif{dom}.0"), action.to_string());
            assert_eq!(counts.get(&key), Some(&1), "{key:?}: {counts:?}");
        }
    }
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    assert!(stdout(&sb.run("xen-vif", &["status"], &[])).contains("daemon: not running"));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&sb.run("xen-vif", &["status", "--json"], &[]))).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|v| v["daemon"].is_null())
    );
}

#[test]
fn a_bad_backend_gets_its_own_error_and_the_others_go_on() {
    let Some(sb) = sandbox("dbad") else {
        return;
    };
    vifs(&sb, 1..=20);
    let _d = Daemon::start(&sb);
    for dom in 1..=20 {
        let extra: &[(&str, &str)] = match dom {
            7 => &[("bridge", "nosuch0")],
            8 => &[("script", "/etc/xen/scripts/vif-custom")],
            9 => &[("mtu", "junk")],
            _ => &[],
        };
        libxl_creates(&sb, dom, extra);
        netback_initwait(&sb, dom);
    }
    wait_for(
        &sb,
        "every backend answered",
        Duration::from_secs(30),
        || (1..=20).all(|d| status(&sb, d).is_some_and(|s| !s.is_empty())),
    );
    for (dom, want) in [(7, "nosuch0"), (8, "vif-custom"), (9, "mtu")] {
        assert_eq!(status(&sb, dom).as_deref(), Some("error"), "dom {dom}");
        let err = sb
            .xs
            .read(&format!("{}/hotplug-error", be(dom, 0)))
            .unwrap();
        assert!(err.contains(want), "dom {dom}: {err}");
        assert!(!attached(&sb, dom));
    }
    for dom in (1..=20).filter(|d| ![7, 8, 9].contains(d)) {
        assert_eq!(status(&sb, dom).as_deref(), Some("connected"), "dom {dom}");
        assert!(attached(&sb, dom), "dom {dom}");
    }
    // A failure is reported once, not retried on every later event.
    sb.xs.write(&format!("{}/state", be(7, 0)), "2");
    std::thread::sleep(Duration::from_millis(300));
    let counts = log_counts(&sb);
    assert_eq!(
        counts.get(&("vif7.0".to_string(), "online".to_string())),
        Some(&1)
    );
}

#[test]
fn one_shot_calls_racing_the_daemon_never_interleave() {
    let Some(sb) = sandbox("drace") else {
        return;
    };
    let doms = 1..=30u32;
    vifs(&sb, doms.clone());
    let _d = Daemon::start(&sb);
    for dom in doms.clone() {
        libxl_creates(&sb, dom, &[("mtu", "1400")]);
    }
    std::thread::scope(|s| {
        for dom in doms.clone() {
            let sb = &sb;
            s.spawn(move || {
                netback_initwait(sb, dom);
                // The administrator (or a leftover libxl script) at the same moment.
                assert_ok(&sb.run("xen-vif", &["add", &dom.to_string(), "0"], &[]));
            });
        }
    });
    wait_for(&sb, "30 connected", Duration::from_secs(30), || {
        doms.clone()
            .all(|dom| status(&sb, dom).as_deref() == Some("connected"))
    });
    for dom in doms.clone() {
        assert!(attached(&sb, dom));
        assert_eq!(sb.mtu(&format!("vif{dom}.0")), 1400);
        assert_eq!(sb.xs.read(&format!("{}/hotplug-error", be(dom, 0))), None);
    }
    // Removal raced by the administrator's remove: the end is the same.
    std::thread::scope(|s| {
        for dom in doms.clone() {
            let sb = &sb;
            s.spawn(move || {
                libxl_removes(sb, dom);
                assert_ok(&sb.run("xen-vif", &["remove", &dom.to_string(), "0"], &[]));
            });
        }
    });
    wait_for(&sb, "30 detached", Duration::from_secs(30), || {
        let m = masters(&sb);
        doms.clone().all(|dom| m[&format!("vif{dom}.0")].is_empty())
    });
}

#[test]
fn killed_mid_run_and_restarted_converges() {
    let Some(sb) = sandbox("dkill") else {
        return;
    };
    let doms = 1..=100u32;
    vifs(&sb, doms.clone());
    let d = Daemon::start(&sb);
    for dom in doms.clone() {
        libxl_creates(&sb, dom, &[]);
        netback_initwait(&sb, dom);
    }
    wait_for(&sb, "some connected", Duration::from_secs(30), || {
        doms.clone()
            .filter(|&dom| status(&sb, dom).as_deref() == Some("connected"))
            .count()
            >= 10
    });
    d.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = d.wait(Duration::from_secs(5));
    // Removals and creations while nobody watches.
    for dom in 1..=5 {
        libxl_removes(&sb, dom);
    }
    vifs(&sb, 101..=110);
    for dom in 101..=110 {
        libxl_creates(&sb, dom, &[]);
        netback_initwait(&sb, dom);
    }
    let _d = Daemon::start(&sb);
    wait_for(
        &sb,
        "all connected after the restart",
        Duration::from_secs(60),
        || (6..=110).all(|dom| status(&sb, dom).as_deref() == Some("connected")),
    );
    wait_for(
        &sb,
        "the removed ones detached",
        Duration::from_secs(10),
        || (1..=5).all(|dom| !attached(&sb, dom)),
    );
    let m = masters(&sb);
    for dom in 6..=110 {
        assert_eq!(m[&format!("vif{dom}.0")], "xenbr0", "vif{dom}.0");
    }
}

#[test]
fn xenstored_restarting_reconnects_and_resyncs() {
    let Some(mut sb) = sandbox("dxsr") else {
        return;
    };
    vifs(&sb, 1..=30);
    let _d = Daemon::start(&sb);
    for dom in 1..=20 {
        libxl_creates(&sb, dom, &[]);
        netback_initwait(&sb, dom);
    }
    wait_for(&sb, "20 connected", Duration::from_secs(30), || {
        (1..=20).all(|dom| status(&sb, dom).as_deref() == Some("connected"))
    });
    sb.xs.crash();
    // While xenstored is away: five removed, ten new.
    for dom in 1..=5 {
        libxl_removes(&sb, dom);
    }
    for dom in 21..=30 {
        libxl_creates(&sb, dom, &[]);
        netback_initwait(&sb, dom);
    }
    std::thread::sleep(Duration::from_millis(500));
    sb.xs.resume().unwrap();
    wait_for(
        &sb,
        "the new ones connected",
        Duration::from_secs(30),
        || (21..=30).all(|dom| status(&sb, dom).as_deref() == Some("connected")),
    );
    wait_for(
        &sb,
        "the removed ones detached",
        Duration::from_secs(10),
        || (1..=5).all(|dom| !attached(&sb, dom)),
    );
    for dom in 6..=30 {
        assert!(attached(&sb, dom), "vif{dom}.0");
    }
    // Still watching: a backend after the reconnect.
    vifs(&sb, 31..=31);
    libxl_creates(&sb, 31, &[]);
    netback_initwait(&sb, 31);
    wait_for(&sb, "one more connected", Duration::from_secs(10), || {
        status(&sb, 31).as_deref() == Some("connected")
    });
}

#[test]
fn libxl_running_the_scripts_is_left_alone_and_udev_steps_aside() {
    let Some(sb) = sandbox("dalone") else {
        return;
    };
    vifs(&sb, 1..=2);
    let d = Daemon::start(&sb);
    // udev's call for a vif while the daemon runs: nothing (the daemon does it).
    libxl_creates(&sb, 2, &[]);
    let mut env = sb.libxl_env("vif-setup", 2, 0);
    env.push(("UDEV_CALL".into(), "1".into()));
    assert_ok(&sb.run("vif-setup", &["online", "type_if=vif"], &env));
    assert_eq!(status(&sb, 2).as_deref(), Some(""));
    assert!(!attached(&sb, 2));

    sb.xs.write("/local/domain/0/libxl/disable_udev", "1");
    libxl_creates(&sb, 1, &[]);
    netback_initwait(&sb, 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(&sb, 1).as_deref(), Some(""));
    assert!(!attached(&sb, 1));

    // SIGTERM: stops, lock released; udev's call then acts again.
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    sb.xs.rm("/local/domain/0/libxl/disable_udev");
    assert_ok(&sb.run("vif-setup", &["online", "type_if=vif"], &env));
    assert_eq!(status(&sb, 2).as_deref(), Some("connected"));
}

#[test]
fn a_second_daemon_is_refused() {
    let Some(sb) = sandbox("dtwo") else {
        return;
    };
    let d = Daemon::start(&sb);
    let o = sb.run("xen-vif", &["daemon"], &[]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains(&format!(
            "another xen-vif daemon is running (pid {})",
            d.pid()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn in_a_driver_domain_it_serves_its_own_backends_only() {
    let Some(mut sb) = sandbox("ddom") else {
        return;
    };
    // xenstored answering as domain 3: relative paths are under /local/domain/3.
    sb.xs = test_xenstored::Daemon::start_with(
        &sb.path("xenstored-dom3.sock"),
        test_xenstored::Options {
            domid: 3,
            ..Default::default()
        },
    )
    .unwrap();
    vifs(&sb, 5..=6);
    let _d = Daemon::start(&sb);
    let mine = "/local/domain/3/backend/vif/5/0";
    let dom0s = "/local/domain/0/backend/vif/6/0";
    for p in [mine, dom0s] {
        for (k, v) in [
            ("frontend-id", if p == mine { "5" } else { "6" }),
            ("handle", "0"),
            ("online", "1"),
            ("bridge", "xenbr0"),
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("hotplug-status", ""),
            ("state", "2"),
        ] {
            sb.xs.write(&format!("{p}/{k}"), v);
        }
    }
    wait_for(
        &sb,
        "its own backend connected",
        Duration::from_secs(10),
        || sb.xs.read(&format!("{mine}/hotplug-status")).as_deref() == Some("connected"),
    );
    assert!(attached(&sb, 5));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        sb.xs.read(&format!("{dom0s}/hotplug-status")).as_deref(),
        Some("")
    );
    assert!(!attached(&sb, 6));
    sb.xs.write(&format!("{mine}/online"), "0");
    sb.xs.write(&format!("{mine}/state"), "5");
    wait_for(
        &sb,
        "its own backend detached",
        Duration::from_secs(10),
        || !attached(&sb, 5),
    );
}

#[test]
fn in_a_driver_domain_it_removes_the_backends_it_took_down() {
    let Some(mut sb) = sandbox("drm") else {
        return;
    };
    sb.xs = test_xenstored::Daemon::start_with(
        &sb.path("xenstored-dom3.sock"),
        test_xenstored::Options {
            domid: 3,
            ..Default::default()
        },
    )
    .unwrap();
    // libxl writes `domid` in every domain's home; dom0's says 0 (and there libxl removes).
    sb.xs.write("/local/domain/3/domid", "3");
    vifs(&sb, 5..=5);
    let _d = Daemon::start(&sb);
    let dir = "/local/domain/3/backend/vif";
    for (p, online) in [(format!("{dir}/5/0"), "1"), (format!("{dir}/5/1"), "0")] {
        for (k, v) in [
            ("frontend-id", "5"),
            ("online", online),
            ("bridge", "xenbr0"),
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("hotplug-status", ""),
            ("state", "1"),
        ] {
            sb.xs.write(&format!("{p}/{k}"), v);
        }
    }
    sb.xs.write(&format!("{dir}/5/0/state"), "2");
    wait_for(&sb, "vif5.0 connected", Duration::from_secs(10), || {
        sb.xs.read(&format!("{dir}/5/0/hotplug-status")).as_deref() == Some("connected")
    });
    // Closing (libxl's removal): taken down, the directory still netback's.
    sb.xs.write(&format!("{dir}/5/0/online"), "0");
    sb.xs.write(&format!("{dir}/5/0/state"), "5");
    wait_for(&sb, "vif5.0 detached", Duration::from_secs(10), || {
        !attached(&sb, 5)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(sb.xs.read(&format!("{dir}/5/0/state")).is_some());
    // Closed: the directory goes, and only it (the guest's directory is dom0's).
    sb.xs.write(&format!("{dir}/5/0/state"), "6");
    wait_for(
        &sb,
        "vif5.0's backend removed",
        Duration::from_secs(10),
        || sb.xs.read(&format!("{dir}/5/0")).is_none(),
    );
    assert_eq!(
        sb.xs.read(&format!("{dir}/5/1/online")).as_deref(),
        Some("0")
    );
    sb.xs.write(&format!("{dir}/5/1/state"), "6");
    wait_for(
        &sb,
        "vif5.1's backend removed",
        Duration::from_secs(10),
        || sb.xs.read(&format!("{dir}/5/1")).is_none(),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sb.xs.read(&format!("{dir}/5")).as_deref(), Some(""));
}

#[test]
fn sigterm_finishes_the_action_in_flight() {
    let Some(sb) = sandbox("dterm") else {
        return;
    };
    let hooks = sb.etc_dir().join("xen/scripts/vif-post.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("slow.hook");
    std::fs::write(&hook, "touch /var/log/hook-started\nsleep 1\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    vifs(&sb, 1..=1);
    let d = Daemon::start(&sb);
    libxl_creates(&sb, 1, &[]);
    netback_initwait(&sb, 1);
    wait_for(&sb, "the hook to start", Duration::from_secs(10), || {
        sb.log_dir().join("hook-started").exists()
    });
    assert_eq!(status(&sb, 1).as_deref(), Some(""));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
    assert_eq!(status(&sb, 1).as_deref(), Some("connected"));
    assert!(attached(&sb, 1));
}

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn memory_stays_flat_over_guest_lifetimes() {
    let Some(sb) = sandbox("dmem") else {
        return;
    };
    let d = Daemon::start(&sb);
    let mut after = Vec::new();
    for round in 0..6u32 {
        let doms: Vec<u32> = (1..=50).map(|i| round * 100 + i).collect();
        vifs(&sb, doms.iter().copied());
        for &dom in &doms {
            libxl_creates(&sb, dom, &[]);
            netback_initwait(&sb, dom);
        }
        wait_for(&sb, "50 connected", Duration::from_secs(30), || {
            doms.iter()
                .all(|&dom| status(&sb, dom).as_deref() == Some("connected"))
        });
        for &dom in &doms {
            libxl_removes(&sb, dom);
        }
        wait_for(&sb, "50 detached", Duration::from_secs(30), || {
            let m = masters(&sb);
            doms.iter().all(|dom| m[&format!("vif{dom}.0")].is_empty())
        });
        for &dom in &doms {
            closed_and_gone(&sb, dom);
        }
        wait_for(&sb, "nothing remembered", Duration::from_secs(10), || {
            std::fs::read_to_string(sb.run_dir().join("daemon.vifs")).is_ok_and(|s| s.is_empty())
        });
        after.push(rss_kib(d.pid()));
    }
    // The first round grows the allocator's pools; later rounds must not add to them.
    eprintln!("RSS after each round (KiB): {after:?}");
    let (first, last) = (after[1], after[after.len() - 1]);
    assert!(last <= first + 512, "RSS after each round (KiB): {after:?}");
}

/// The memory benchmark of BENCHMARKS.md ("Resident mode"), not a test: the daemon's RSS over
/// 100,000 guest lifetimes (BENCH_CYCLES), 50 vifs at a time, each created, connected, taken
/// offline and removed as libxl and netback do it. Run with
/// `cargo test --release --test daemon -- --ignored --nocapture bench_memory`.
#[test]
#[ignore]
fn bench_memory_over_100000_cycles() {
    let Some(sb) = sandbox("dcycles") else {
        return;
    };
    let cycles: u32 = std::env::var("BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let per_round = 50u32;
    let rounds = cycles.div_ceil(per_round);
    let d = Daemon::start(&sb);
    let log = sb.log_dir().join("xen/xen-hotplug.log");
    let mut read_to = 0u64;
    let mut offlines = 0usize;
    // Counts the new `offline` lines only: the log grows by a line per action.
    let mut count_offlines = || {
        use std::io::{Read, Seek, SeekFrom};
        if let Ok(mut f) = std::fs::File::open(&log) {
            let mut new = String::new();
            f.seek(SeekFrom::Start(read_to)).unwrap();
            f.read_to_string(&mut new).unwrap();
            let complete = new.rfind('\n').map_or(0, |i| i + 1);
            offlines += new[..complete]
                .lines()
                .filter(|l| l.contains(" offline ") && l.contains("result=ok"))
                .count();
            read_to += complete as u64;
        }
        offlines
    };
    let doms: Vec<u32> = (1..=per_round).collect();
    // The devices stay between lifetimes: deleting a veth waits for an RCU grace period,
    // which would time the test harness, not the daemon.
    vifs(&sb, doms.iter().copied());
    let mut samples = Vec::new();
    let t = Instant::now();
    for round in 1..=rounds {
        for &dom in &doms {
            libxl_creates(&sb, dom, &[]);
            netback_initwait(&sb, dom);
        }
        let end = Instant::now() + Duration::from_secs(60);
        while !doms
            .iter()
            .all(|&dom| status(&sb, dom).as_deref() == Some("connected"))
        {
            assert!(Instant::now() < end, "round {round}: not all connected");
            std::thread::sleep(Duration::from_millis(1));
        }
        for &dom in &doms {
            libxl_removes(&sb, dom);
        }
        let want = (round * per_round) as usize;
        while count_offlines() < want {
            assert!(Instant::now() < end, "round {round}: not all offline");
            std::thread::sleep(Duration::from_millis(1));
        }
        for &dom in &doms {
            sb.xs.write(&format!("{}/state", be(dom, 0)), "6");
            sb.xs.rm(&be(dom, 0));
        }
        if round % (rounds / 10).max(1) == 0 || round == 1 {
            samples.push((round * per_round, rss_kib(d.pid())));
        }
    }
    let hwm = std::fs::read_to_string(format!("/proc/{}/status", d.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        .unwrap();
    println!(
        "\n{} cycles in {:.0} s; daemon RSS (KiB) after N cycles: {samples:?}; peak {hwm}",
        rounds * per_round,
        t.elapsed().as_secs_f64()
    );
    // The first tenth grows the allocator's pools (one per worker); the rest must not.
    let (warm, last) = (
        samples[1.min(samples.len() - 1)].1,
        samples[samples.len() - 1].1,
    );
    assert!(last <= warm + 512, "RSS grew: {samples:?}");
}

/// The benchmark of BENCHMARKS.md ("Resident mode"), not a test: 1000 vifs through the daemon,
/// from the backend writes to the last `hotplug-status=connected`, beside the one-shot path
/// (benches/drive.py starting one `vif-bridge online` per vif, as a toolstack does), in one
/// run against the same xenstored and kernel. Run with
/// `cargo test --release --test daemon -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_1000_vifs_daemon_against_one_shot() {
    let Some(sb) = sandbox("dbench") else {
        return;
    };
    let n: u32 = std::env::var("BENCH_VIFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    vifs(&sb, 1..=n);
    for dom in 1..=n {
        libxl_creates(&sb, dom, &[]);
    }
    let all_connected = || (1..=n).all(|d| status(&sb, d).as_deref() == Some("connected"));
    let lines = |what: &str| {
        std::fs::read_to_string(sb.log_dir().join("xen/xen-hotplug.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {what} ")) && l.contains("result=ok"))
            .count()
    };
    let reset = || {
        for dom in 1..=n {
            sb.xs.write(&format!("{}/online", be(dom, 0)), "1");
            sb.xs.write(&format!("{}/state", be(dom, 0)), "1");
            sb.xs.write(&format!("{}/hotplug-status", be(dom, 0)), "");
        }
        let _ = std::fs::remove_file(sb.log_dir().join("xen/xen-hotplug.log"));
    };
    let mut rows = Vec::new();
    // BENCH_DAEMON_ONLY=1: the kernel work and the daemon rows only (A/B runs of two builds).
    let one_shot: &[u32] = if std::env::var_os("BENCH_DAEMON_ONLY").is_some() {
        &[]
    } else {
        &[1, 16]
    };
    // One-shot: every backend at InitWait, one process per vif.
    for &par in one_shot {
        for dom in 1..=n {
            netback_initwait(&sb, dom);
        }
        let drive = |command: &str| {
            let o = sb
                .command("python3")
                .arg(env!("CARGO_MANIFEST_DIR").to_string() + "/benches/drive.py")
                .args([
                    sb.path("vif-bridge").to_str().unwrap(),
                    command,
                    &n.to_string(),
                    &par.to_string(),
                ])
                .env("script", "/etc/xen/scripts/vif-bridge")
                .env("XENBUS_TYPE", "vif")
                .env("XENBUS_BASE_PATH", "backend")
                .output()
                .unwrap();
            assert_ok(&o);
            let out = stdout(&o);
            let mut w = out.split_whitespace();
            let ms: u64 = w.next().unwrap().parse().unwrap();
            assert_eq!(w.next(), Some("0"), "failures");
            ms
        };
        let on = drive("online");
        assert!(all_connected());
        let off = drive("offline");
        assert_eq!(lines("offline"), n as usize);
        rows.push(format!(
            "| one-shot, {par} at a time | {on} ms | {:.2} ms | {off} ms |",
            on as f64 / n as f64
        ));
        reset();
    }
    // The kernel work alone: the same plans and steps, one loop, no process and no xenstore.
    for filter in [true, false] {
        let on = kernel_work(&sb, n, xen_vif::invocation::Command::Online, filter);
        let off = kernel_work(&sb, n, xen_vif::invocation::Command::Offline, filter);
        rows.push(format!(
            "| kernel work alone (one loop, one thread){} | {on} ms | {:.2} ms | {off} ms |",
            if filter { "" } else { ", antispoof = false" },
            on as f64 / n as f64
        ));
    }
    // The daemon: running and idle, then every backend reaches InitWait at once.
    let config = sb.etc_dir().join("xen/xen-vif.toml");
    for (workers, filter) in [("2", true), ("8", true), ("8", false)] {
        if filter {
            let _ = std::fs::remove_file(&config);
        } else {
            std::fs::create_dir_all(config.parent().unwrap()).unwrap();
            std::fs::write(&config, "antispoof = false\n").unwrap();
        }
        let log = std::fs::File::create(sb.path("daemon.log")).unwrap();
        let mut child = sb
            .command(sb.path("xen-vif"))
            .args(["daemon", "--workers", workers])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        wait_for(&sb, "the daemon to watch", Duration::from_secs(10), || {
            sb.run_dir().join("daemon.pid").exists()
                && std::fs::read_to_string(sb.run_dir().join("daemon.pid"))
                    .is_ok_and(|s| s.trim() == pid.to_string())
        });
        std::thread::sleep(Duration::from_millis(300));
        let idle_rss = rss_kib(pid);
        let t = Instant::now();
        for dom in 1..=n {
            netback_initwait(&sb, dom);
        }
        while !all_connected() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let on = t.elapsed().as_millis();
        let busy_rss = rss_kib(pid);
        let t = Instant::now();
        for dom in 1..=n {
            libxl_removes(&sb, dom);
        }
        while lines("offline") < n as usize {
            std::thread::sleep(Duration::from_millis(2));
        }
        let off = t.elapsed().as_millis();
        let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
            .unwrap();
        rows.push(format!(
            "| daemon, --workers {workers}{} | {on} ms | {:.2} ms | {off} ms |",
            if filter { "" } else { ", antispoof = false" },
            on as f64 / n as f64
        ));
        rows.push(format!(
            "|   RSS: idle {idle_rss} KiB, with {n} vifs connected {busy_rss} KiB, peak {hwm} | | | |"
        ));
        let _ = child.kill();
        let _ = child.wait();
        reset();
    }
    println!("\n| {n} vifs | online, all | per vif | offline, all |\n|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

/// What the kernel alone takes for `command` on vifs 1..=n: each vif's plan made and applied
/// exactly as the daemon's worker does it (the same reads, the same steps, the filter's socket
/// kept), in one thread of this process inside the sandbox's namespace, timed around the loop.
fn kernel_work(
    sb: &Sandbox,
    n: u32,
    command: xen_vif::invocation::Command,
    antispoof: bool,
) -> u128 {
    use xen_vif::{deadline, netlink::Netlink};
    let ns = std::fs::File::open(format!("/run/netns/{}", sb.ns)).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let _budget = deadline::Deadline::after(Duration::from_secs(600)).enter();
            let hps: Vec<_> = (1..=n)
                .map(|d| bridge_hotplug(d, command, antispoof, "", [0x00, 0x16, 0x3e, 0, 0, 1]))
                .collect();
            let mut nl = Netlink::open().unwrap();
            let t = Instant::now();
            for hp in &hps {
                let steps = xen_vif::modes::plan(&mut nl, &NoStore, hp).unwrap();
                let _undo = xen_vif::plan::apply(&mut nl, &NoStore, &steps).unwrap();
            }
            t.elapsed().as_millis()
        })
        .join()
        .unwrap()
    })
}

fn master_of(sb: &Sandbox, link: &str) -> Option<String> {
    masters(sb).get(link).cloned()
}

#[test]
fn an_emulated_nics_tap_is_added_and_removed_from_kernel_uevents() {
    let Some(sb) = sandbox("dtap") else {
        return;
    };
    for dom in [7, 8, 9] {
        libxl_creates(&sb, dom, &[]);
    }
    // A tap that qemu made while no daemon ran: added at start.
    sb.ip("link add vif8.0-emu type veth peer name g8e");
    let d = Daemon::start(&sb);
    wait_for(
        &sb,
        "the existing tap attached",
        Duration::from_secs(10),
        || master_of(&sb, "vif8.0-emu").as_deref() == Some("xenbr0"),
    );
    // qemu makes one now.
    sb.ip("link add vif7.0-emu type veth peer name g7e");
    wait_for(&sb, "the new tap attached", Duration::from_secs(10), || {
        master_of(&sb, "vif7.0-emu").as_deref() == Some("xenbr0")
    });
    assert!(sb.is_up("vif7.0-emu"));
    // udev's call for the same tap while the daemon runs: nothing.
    sb.ip("link set vif7.0-emu nomaster");
    let env = vec![
        ("INTERFACE".to_string(), "vif7.0-emu".to_string()),
        ("UDEV_CALL".to_string(), "1".to_string()),
        (
            "script".to_string(),
            "/etc/xen/scripts/vif-bridge".to_string(),
        ),
    ];
    assert_ok(&sb.run("vif-setup", &["add", "type_if=tap"], &env));
    assert_eq!(master_of(&sb, "vif7.0-emu").as_deref(), Some(""));
    // qemu exits: the tap goes, and the removal runs once.
    sb.ip("link del vif7.0-emu");
    wait_for(&sb, "the removal logged", Duration::from_secs(10), || {
        log_counts(&sb).get(&("vif7.0-emu".to_string(), "remove".to_string())) == Some(&1)
    });
    assert_eq!(
        log_counts(&sb).get(&("vif7.0-emu".to_string(), "add".to_string())),
        Some(&1)
    );
    // libxl running the scripts itself: left alone.
    sb.xs.write("/local/domain/0/libxl/disable_udev", "1");
    sb.ip("link add vif9.0-emu type veth peer name g9e");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(master_of(&sb, "vif9.0-emu").as_deref(), Some(""));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(10)), Some(0));
}

/// Reading a backend's keys as libxl leaves them, against the test xenstored: one listing, then
/// the reads of the keys present sent at once (what `xenstore::read_keys` does), against the
/// same reads one round trip each (what it did before 2026-12-02). Alternating batches.
///   cargo test --release --test daemon -- --ignored --nocapture bench_xenstore_reads
#[test]
#[ignore]
fn bench_xenstore_reads() {
    use xen_vif::xenstore::{Store, XenStore, read_keys};
    /// The same connection, one read per round trip (the trait's own `read_many`).
    struct OneByOne<'a>(&'a XenStore);
    impl Store for OneByOne<'_> {
        fn read(&self, path: &str) -> std::io::Result<Option<String>> {
            self.0.read(path)
        }
        fn write(&self, path: &str, value: &str) -> std::io::Result<()> {
            self.0.write(path, value)
        }
        fn directory(&self, path: &str) -> std::io::Result<Option<Vec<String>>> {
            self.0.directory(path)
        }
    }
    let Some(sb) = sandbox("xsbench") else {
        return;
    };
    libxl_creates(&sb, 5, &[("bridge", "xenbr0"), ("ip", "10.0.0.5")]);
    let be = be(5, 0);
    let keys = xen_vif::invocation::backend_keys(Some(xen_vif::invocation::Mode::Bridge));
    let _budget = xen_vif::deadline::Deadline::after(Duration::from_secs(600)).enter();
    let xs = XenStore::open_socket(sb.xs.socket().to_str().unwrap()).unwrap();
    let present = read_keys(&xs, &be, &keys).unwrap().len();
    assert_eq!(
        read_keys(&OneByOne(&xs), &be, &keys).unwrap().len(),
        present
    );
    let n = 2000;
    let (mut at_once, mut one_by_one) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            read_keys(&xs, &be, &keys).unwrap();
        }
        at_once.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            read_keys(&OneByOne(&xs), &be, &keys).unwrap();
        }
        one_by_one.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "\nread_keys of the bridge-mode keys ({present} of {} present), µs per call, 5 batches of {n}:\n  \
         listing + reads at once: {}\n  listing + one read per round trip: {}",
        keys.len(),
        show(&at_once),
        show(&one_by_one)
    );
}
