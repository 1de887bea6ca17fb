//! network-bridge in the real kernel: a veth stands in for the NIC, its peer in a "switch"
//! namespace that answers ping; the binary runs as xend runs it (`network-bridge start ...`).

mod support;
use std::fs;

use support::*;

/// A host whose eth0 reaches a switch: IPv4 primary + secondary, IPv6, a default route with
/// protocol and metric, a static route through a gateway, an IPv6 default route.
fn host(tag: &str) -> Option<(Sandbox, Netns)> {
    let sb = Sandbox::new(tag)?;
    let sw = sb.netns("sw");
    sb.veth_to("eth0", &sw, "port0");
    sw.ip("addr add 10.0.0.1/24 dev port0");
    sw.ip("addr add 2001:db8::1/64 dev port0 nodad");
    sw.ip("addr add 192.168.5.1/32 dev lo");
    sw.ip("route add 10.0.0.0/24 dev port0 table 10");
    sb.ip("link set eth0 address 02:11:22:33:44:55");
    sb.ip("link set eth0 alias uplink");
    sb.ip("link set eth0 up");
    sb.ip("addr add 10.0.0.2/24 dev eth0");
    sb.ip("addr add 10.0.0.3/24 dev eth0");
    sb.ip("addr add 2001:db8::2/64 dev eth0 nodad");
    sb.ip("route add default via 10.0.0.1 dev eth0 proto static metric 100");
    sb.ip("route add 192.168.5.0/24 via 10.0.0.1 dev eth0");
    sb.ip("-6 route add default via 2001:db8::1 dev eth0 metric 1024");
    assert!(
        sb.ping("10.0.0.1"),
        "the test switch must answer before start"
    );
    Some((sb, sw))
}

/// The inode of the sandbox's network namespace, which names its state directory.
fn netns_inode(sb: &Sandbox) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&fs::metadata(format!("/run/netns/{}", sb.ns)).unwrap())
}

fn alias(sb: &Sandbox, dev: &str) -> Option<String> {
    sb.link(dev)?["ifalias"].as_str().map(String::from)
}

fn info_data(sb: &Sandbox, dev: &str, key: &str) -> serde_json::Value {
    sb.link(dev).unwrap()["linkinfo"]["info_data"][key].clone()
}

fn kind(sb: &Sandbox, dev: &str) -> Option<String> {
    sb.link(dev)?["linkinfo"]["info_kind"]
        .as_str()
        .map(String::from)
}

#[test]
fn start_bridges_the_nic_and_stop_restores_the_host() {
    let Some((sb, _sw)) = host("nic") else {
        return;
    };
    let before = sb.snapshot();
    // No netdev=: the device of the default route, as xend chose it.
    let o = sb.net("network-bridge", &["start"]);
    assert_ok(&o);
    assert_eq!(kind(&sb, "eth0").as_deref(), Some("bridge"));
    assert_eq!(sb.master("peth0").as_deref(), Some("eth0"));
    assert!(sb.is_up("peth0") && sb.is_up("eth0"));
    assert_eq!(sb.mac("eth0"), "02:11:22:33:44:55");
    assert_eq!(alias(&sb, "peth0").as_deref(), Some("uplink"));
    assert!(sb.addrs("peth0").is_empty(), "{:?}", sb.addrs("peth0"));
    let mut addrs = sb.addrs("eth0");
    addrs.sort();
    assert_eq!(addrs, vec!["10.0.0.2/24", "10.0.0.3/24", "2001:db8::2/64"]);
    assert_eq!(info_data(&sb, "eth0", "stp_state"), 0);
    assert_eq!(info_data(&sb, "eth0", "forward_delay"), 0);
    let routes = sb.ip("route show");
    assert!(
        routes.contains("default via 10.0.0.1 dev eth0 proto static metric 100"),
        "{routes}"
    );
    assert!(
        routes.contains("192.168.5.0/24 via 10.0.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        sb.ip("-6 route show")
            .contains("default via 2001:db8::1 dev eth0 metric 1024")
    );
    assert!(
        sb.ping("10.0.0.1"),
        "host reaches the switch through the bridge"
    );
    assert!(
        sb.ping("192.168.5.1"),
        "and through the moved gateway route"
    );
    assert!(sb.ping("2001:db8::1"), "and over IPv6");
    assert_eq!(sb.state_files().len(), 1);

    let o = sb.net("network-bridge", &["status"]);
    assert_ok(&o);
    let s = stdout(&o);
    assert!(s.contains("started by xen-vif"), "{s}");
    assert!(
        s.contains("bridge eth0: up, stp off, forward delay 0 s"),
        "{s}"
    );
    assert!(s.contains("port peth0 up (the NIC)"), "{s}");
    assert!(s.contains("address 10.0.0.2/24"), "{s}");

    // Start again: nothing changes.
    let started = sb.snapshot();
    let state = fs::read_to_string(&sb.state_files()[0]).unwrap();
    assert_ok(&sb.net("network-bridge", &["start"]));
    assert_eq!(started, sb.snapshot());
    assert_eq!(state, fs::read_to_string(&sb.state_files()[0]).unwrap());

    // Stop in a new process, as xend does, without netdev=: back exactly as before.
    assert_ok(&sb.net("network-bridge", &["stop"]));
    assert_eq!(before, sb.snapshot());
    assert_eq!(alias(&sb, "eth0").as_deref(), Some("uplink"));
    assert!(sb.state_files().is_empty());
    assert!(sb.ping("10.0.0.1"));
    // Stop again: nothing to undo.
    assert_ok(&sb.net("network-bridge", &["stop"]));
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_named_bridge_and_an_explicit_netdev() {
    let Some((sb, _sw)) = host("named") else {
        return;
    };
    let before = sb.snapshot();
    assert_ok(&sb.net("network-bridge", &["start", "netdev=eth0", "bridge=xenbr0"]));
    assert_eq!(sb.master("peth0").as_deref(), Some("xenbr0"));
    assert!(sb.link("eth0").is_none());
    assert!(sb.ping("10.0.0.1"));
    // Labels follow the device (ip shows them for IPv4).
    assert!(sb.ip("addr show dev xenbr0").contains("xenbr0"));
    assert_ok(&sb.net("network-bridge", &["stop", "netdev=eth0", "bridge=xenbr0"]));
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_vif_attached_by_vif_bridge_reaches_the_switch() {
    let Some((sb, _sw)) = host("vif") else {
        return;
    };
    let before = sb.snapshot();
    assert_ok(&sb.net("network-bridge", &["start", "netdev=eth0"]));
    // The guest: netback's vif5.0 here, the guest's end in its own namespace.
    let guest = sb.netns("guest");
    sb.veth_to("vif5.0", &guest, "geth0");
    // The backend's MAC (the anti-spoofing filter holds the guest to it).
    guest.ip("link set geth0 address 00:16:3e:00:00:01");
    guest.ip("addr add 10.0.0.5/24 dev geth0");
    sb.backend(5, 0, &[("bridge", "eth0")]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("eth0"));
    assert!(guest.ping("10.0.0.1"), "the guest reaches the switch");
    assert!(guest.ping("10.0.0.2"), "and the host on the bridge");

    let status = stdout(&sb.net("network-bridge", &["status"]));
    assert!(status.contains("port vif5.0 up"), "{status}");

    // A vif still on the bridge: stop refuses and changes nothing.
    let running = sb.snapshot();
    let o = sb.net("network-bridge", &["stop"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("vif5.0"), "{}", stderr(&o));
    assert!(stderr(&o).contains("force=yes"), "{}", stderr(&o));
    assert_eq!(running, sb.snapshot());
    assert_eq!(sb.state_files().len(), 1);

    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_ok(&sb.net("network-bridge", &["stop"]));
    assert_eq!(
        without(&before, "vif5.0"),
        without(&sb.snapshot(), "vif5.0")
    );
}

#[test]
fn stop_with_force_detaches_the_vifs() {
    let Some((sb, _sw)) = host("force") else {
        return;
    };
    let before = sb.snapshot();
    assert_ok(&sb.net("network-bridge", &["start"]));
    sb.netback_vif("vif7.0", "g7.0");
    sb.backend(7, 0, &[("bridge", "eth0")]);
    assert_ok(&sb.online("vif-bridge", 7, 0));
    assert_ok(&sb.net("network-bridge", &["stop", "netdev=eth0", "force=yes"]));
    assert_eq!(sb.master("vif7.0"), None);
    let clean = |s: &str| without(&without(s, "vif7.0"), "g7.0");
    assert_eq!(clean(&before), clean(&sb.snapshot()));
}

#[test]
fn refusals_change_nothing() {
    let Some((sb, _sw)) = host("refuse") else {
        return;
    };
    // The rename target exists and is not ours.
    sb.netback_vif("peth0", "other0");
    let before = sb.snapshot();
    let o = sb.net("network-bridge", &["start", "netdev=eth0"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("peth0 already exists"),
        "{}",
        stderr(&o)
    );
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty());

    sb.ip("link set peth0 name spare0");
    let o = sb.net("network-bridge", &["start", "netdev=eth9"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("eth9 does not exist"), "{}", stderr(&o));

    // A bridge port cannot be bridged again.
    sb.bridge("br9");
    sb.ip("link set other0 master br9");
    let before = sb.snapshot();
    let o = sb.net("network-bridge", &["start", "netdev=other0"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("other0 is a port of bridge br9"),
        "{}",
        stderr(&o)
    );
    // bridge= names a link that exists.
    let o = sb.net("network-bridge", &["start", "netdev=eth0", "bridge=br9"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("br9 already exists"), "{}", stderr(&o));
    // Typos are not the default set-up.
    let o = sb.net("network-bridge", &["start", "vlan=4"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("unknown parameter"), "{}", stderr(&o));
    let o = sb.net("network-bridge", &["begin"]);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty());
}

#[test]
fn a_failure_midway_leaves_the_host_unchanged() {
    let Some((sb, _sw)) = host("midway") else {
        return;
    };
    // A macvlan on the NIC holds its receive hook: enslaving it fails after the addresses,
    // routes and name have already moved.
    let mv = sb.ip_try("link add link eth0 name mv0 type macvlan");
    if !require(mv.0, "macvlan (to make the enslave step fail)") {
        return;
    }
    let before = sb.snapshot();
    let o = sb.net("network-bridge", &["start"]);
    assert_fails(&o);
    let err = stderr(&o);
    assert!(err.contains("ip link set peth0 master eth0"), "{err}");
    assert!(err.contains("EBUSY"), "{err}");
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty(), "no state after a clean undo");
    assert_eq!(alias(&sb, "eth0").as_deref(), Some("uplink"));
    assert!(sb.ping("10.0.0.1"));
}

#[test]
fn an_unusable_state_directory_refuses_before_any_change() {
    let Some((sb, _sw)) = host("nostate") else {
        return;
    };
    let before = sb.snapshot();
    // A file where this namespace's state directory must go.
    fs::create_dir_all(sb.run_dir()).unwrap();
    fs::write(sb.run_dir().join(format!("netns-{}", netns_inode(&sb))), "").unwrap();
    let o = sb.run("network-bridge", &["start"], &[]);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_nic_that_already_is_a_bridge_is_left_alone() {
    let Some(sb) = Sandbox::new("prebr") else {
        return;
    };
    // Built by the distro (Rocks): eth0 a bridge over peth0.
    sb.bridge("eth0");
    sb.netback_vif("peth0", "x0");
    sb.ip("link set peth0 master eth0");
    let before = sb.snapshot();
    assert_ok(&sb.net("network-bridge", &["start", "netdev=eth0"]));
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty());
    assert_ok(&sb.net("network-bridge", &["stop", "netdev=eth0"]));
    assert_eq!(before, sb.snapshot());
    // xend's bridge=null: nothing at all.
    assert_ok(&sb.net("network-bridge", &["start", "bridge=null"]));
    assert_eq!(before, sb.snapshot());
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let Some((sb, _sw)) = host("dry") else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.net("xen-vif", &["network", "bridge", "start", "--dry-run"]);
    assert_ok(&o);
    let plan = stdout(&o);
    for line in [
        "ip link set eth0 name peth0",
        "type bridge stp_state 0 forward_delay 0",
        "ip link set eth0 address 02:11:22:33:44:55",
        "ip link set peth0 master eth0",
        "ip address add 10.0.0.2/24 dev eth0",
        "ip route add 0.0.0.0/0 via 10.0.0.1 dev eth0 metric 100",
    ] {
        assert!(plan.contains(line), "{line}\n{plan}");
    }
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty());
    // The personality takes xend's words only: an option is an error, not a silent real run.
    let o = sb.net("network-bridge", &["start", "--dry-run"]);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
    // Every subcommand has help.
    for args in [
        &["network", "--help"][..],
        &["network", "bridge", "--help"],
        &["network", "route", "--help"],
        &["network", "check", "--help"],
    ] {
        let o = sb.net("xen-vif", args);
        assert_ok(&o);
        assert!(stdout(&o).contains("Usage"), "{args:?}");
    }
}

/// The state file a start left, with `phase started` replaced.
fn interrupted(state: &str) -> String {
    state.replace("phase started", "phase starting")
}

fn state_field(state: &str, kind: &str, key: &str) -> String {
    let line = state
        .lines()
        .find(|l| l.starts_with(&format!("{kind} ")))
        .unwrap();
    line.split(' ')
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap()
        .to_string()
}

#[test]
fn stop_restores_after_a_start_that_was_interrupted() {
    let Some((sb, _sw)) = host("crash") else {
        return;
    };
    let before = sb.snapshot();
    // Learn the state file a real start writes, then undo that start.
    assert_ok(&sb.net("network-bridge", &["start"]));
    let path = sb.state_files()[0].clone();
    let state = fs::read_to_string(&path).unwrap();
    assert_ok(&sb.net("network-bridge", &["stop"]));
    assert_eq!(before, sb.snapshot());
    let bindex = state_field(&state, "bridge", "index");

    // Crash after the rename and the bridge's creation: the state says "starting".
    for (label, done) in [
        (
            "after the rename",
            vec![
                "route del 192.168.5.0/24 via 10.0.0.1 dev eth0",
                "route del default via 10.0.0.1 dev eth0",
                "addr del 10.0.0.3/24 dev eth0",
                "addr del 10.0.0.2/24 dev eth0",
                "link set eth0 down",
                "link set eth0 name peth0",
            ],
        ),
        (
            "after the enslave",
            vec![
                "route del 192.168.5.0/24 via 10.0.0.1 dev eth0",
                "route del default via 10.0.0.1 dev eth0",
                "-6 route del default via 2001:db8::1 dev eth0",
                "addr del 10.0.0.3/24 dev eth0",
                "addr del 10.0.0.2/24 dev eth0",
                "addr del 2001:db8::2/64 dev eth0",
                "link set eth0 down",
                "link set eth0 name peth0",
                &format!("link add eth0 index {bindex} type bridge"),
                "link set peth0 master eth0",
                "link set peth0 up",
            ],
        ),
        ("before any change", vec![]),
    ] {
        fs::write(&path, interrupted(&state)).unwrap();
        for cmd in done {
            sb.ip(cmd);
        }
        let crashed = sb.snapshot();
        let o = sb.net("network-bridge", &["status"]);
        assert_ok(&o);
        assert!(stdout(&o).contains("interrupted"), "{}", stdout(&o));
        // A new start refuses: the host is half-way.
        let o = sb.net("network-bridge", &["start", "netdev=eth0"]);
        assert_fails(&o);
        assert!(
            stderr(&o).contains("was interrupted"),
            "{label}: {}",
            stderr(&o)
        );
        assert_eq!(crashed, sb.snapshot(), "{label}");
        // Plain `stop`, as xend runs it: the crash took the default route along, so the
        // instance comes from the state file.
        let o = sb.net("network-bridge", &["stop"]);
        assert_ok(&o);
        assert_eq!(before, sb.snapshot(), "{label}");
        assert_eq!(alias(&sb, "eth0").as_deref(), Some("uplink"), "{label}");
        assert!(sb.state_files().is_empty(), "{label}");
    }
}

#[test]
fn the_state_lives_under_run_per_network_namespace() {
    let Some((sb, _sw)) = host("runxv") else {
        return;
    };
    // /run/xen-vif, in a directory of this network namespace (the sandbox gives the binary its
    // own /run/xen-vif: `run_dir()`).
    let dir = sb.run_dir().join(format!("netns-{}", netns_inode(&sb)));
    assert_ok(&sb.run("network-bridge", &["start"], &[]));
    assert!(dir.join("network-bridge@eth0.state").exists());
    assert_ok(&sb.run("network-bridge", &["stop"], &[]));
    assert!(!dir.join("network-bridge@eth0.state").exists());
}

#[test]
fn a_second_start_waits_for_the_first() {
    let Some((sb, _sw)) = host("lock") else {
        return;
    };
    // Hold the lock as a running start would; the second start must not touch the host.
    let lockdir = sb.run_dir().join(format!("netns-{}", netns_inode(&sb)));
    fs::create_dir_all(&lockdir).unwrap();
    let before = sb.snapshot();
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lockdir.join("network-scripts.lock"))
        .unwrap();
    let held = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let mut child = sb
        .command(sb.path("network-bridge"))
        .arg("start")
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        before,
        sb.snapshot(),
        "nothing changes while the lock is held"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the second start waits"
    );
    drop(held);
    assert!(child.wait().unwrap().success());
    assert_eq!(sb.master("peth0").as_deref(), Some("eth0"));
    assert_ok(&sb.net("network-bridge", &["stop"]));
    assert_eq!(before, sb.snapshot());
}

// ---------------------------------------------------------------------------------------------
// Per-VLAN bridges on a trunk

fn trunk_host(tag: &str) -> Option<(Sandbox, Netns)> {
    let sb = Sandbox::new(tag)?;
    let sw = sb.netns("sw");
    sb.veth_to("eth1", &sw, "trunk0");
    Some((sb, sw))
}

fn kernel_has(sb: &Sandbox, probe: &str, cleanup: &str) -> bool {
    let ok = sb.ip_try(probe).0;
    if ok {
        sb.ip(cleanup);
    }
    ok
}

#[test]
fn per_vlan_bridges_on_a_trunk() {
    let Some((sb, sw)) = trunk_host("trunk") else {
        return;
    };
    let before = sb.snapshot();
    let has_8021q = kernel_has(
        &sb,
        "link add link eth1 name probe.7 type vlan id 7",
        "link del probe.7",
    );
    let o = sb.net("network-bridge", &["start", "trunk=eth1", "vlans=4,100"]);
    if !has_8021q {
        // This host's kernel: one clear line, nothing changed.
        assert_fails(&o);
        assert_eq!(
            stderr(&o).trim(),
            "network-bridge: network-bridge start: kernel has no 802.1q support (CONFIG_VLAN_8021Q)"
        );
        assert_eq!(before, sb.snapshot());
        assert!(sb.state_files().is_empty());
        return;
    }
    assert_ok(&o);
    for (vid, dev, br) in [(4, "eth1.4", "br4"), (100, "eth1.100", "br100")] {
        let l = sb.link(dev).unwrap();
        assert_eq!(l["linkinfo"]["info_data"]["id"], vid);
        assert_eq!(sb.master(dev).as_deref(), Some(br));
        assert!(sb.is_up(dev) && sb.is_up(br));
        assert!(sb.addrs(dev).is_empty() && sb.addrs(br).is_empty());
        assert_eq!(info_data(&sb, br, "stp_state"), 0);
    }
    // A guest on br4 reaches the switch's VLAN 4.
    sw.ip("link add link trunk0 name trunk0.4 type vlan id 4");
    sw.ip("link set trunk0.4 up");
    sw.ip("addr add 10.4.0.1/24 dev trunk0.4");
    let guest = sb.netns("guest");
    sb.veth_to("vif5.0", &guest, "geth0");
    guest.ip("addr add 10.4.0.5/24 dev geth0");
    sb.backend(5, 0, &[("bridge", "br4")]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(guest.ping("10.4.0.1"));
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_ok(&sb.net("network-bridge", &["start", "trunk=eth1", "vlans=4,100"]));
    assert_ok(&sb.net("network-bridge", &["stop", "trunk=eth1", "vlans=4,100"]));
    assert_eq!(
        without(&before, "vif5.0"),
        without(&sb.snapshot(), "vif5.0")
    );
}

#[test]
fn a_vlan_aware_bridge_on_a_trunk() {
    let Some((sb, _sw)) = trunk_host("vfilt") else {
        return;
    };
    let before = sb.snapshot();
    let has_filtering = kernel_has(
        &sb,
        "link add probebr type bridge vlan_filtering 1",
        "link del probebr",
    );
    let args = ["start", "trunk=eth1", "vlans=4,100", "vlan_filtering=yes"];
    let o = sb.net("network-bridge", &args);
    if !has_filtering {
        assert_fails(&o);
        assert_eq!(
            stderr(&o).trim(),
            "network-bridge: network-bridge start: kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)"
        );
        assert_eq!(before, sb.snapshot());
        assert!(sb.state_files().is_empty());
        return;
    }
    assert_ok(&o);
    assert_eq!(sb.master("eth1").as_deref(), Some("xenbr0"));
    assert_eq!(info_data(&sb, "xenbr0", "vlan_filtering"), 1);
    let vlans = stdout(&sb.sh("bridge -j vlan show dev eth1"));
    assert!(vlans.contains("4") && vlans.contains("100"), "{vlans}");
    assert_ok(&sb.net("network-bridge", &["stop", "trunk=eth1"]));
    assert_eq!(before, sb.snapshot());
}

#[test]
fn trunk_plans_and_refusals() {
    let Some((sb, _sw)) = trunk_host("tplan") else {
        return;
    };
    let before = sb.snapshot();
    // The plan, on any kernel.
    let o = sb.net(
        "xen-vif",
        &[
            "network",
            "bridge",
            "start",
            "trunk=eth1",
            "vlans=4,100",
            "bridge_template=vlanbr%d",
            "--dry-run",
        ],
    );
    assert_ok(&o);
    let plan = stdout(&o);
    for line in [
        "type vlan id 4",
        "ip link add vlanbr4 ",
        "ip link set eth1.4 master vlanbr4",
        "ip link set eth1.100 master vlanbr100",
        "ip link set eth1 up",
    ] {
        assert!(plan.contains(line), "{line}\n{plan}");
    }
    assert!(!plan.contains("address add"), "{plan}");
    assert_eq!(before, sb.snapshot());
    // A bridge the distro built is not rebuilt.
    sb.bridge("br4");
    let o = sb.net("network-bridge", &["start", "trunk=eth1", "vlans=4"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("br4 already exists and is not ours"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("network-prebuilt"), "{}", stderr(&o));
    for bad in [
        &["start", "trunk=eth9", "vlans=4"][..],
        &["start", "trunk=eth1"],
        &["start", "trunk=eth1", "vlans=4096"],
        &["start", "trunk=eth1", "vlans=5", "bridge_template=br"],
        &["start", "vlans=5"],
    ] {
        let o = sb.net("network-bridge", bad);
        assert_fails(&o);
        assert_eq!(stderr(&o).lines().count(), 1, "{bad:?}: {}", stderr(&o));
    }
    assert!(sb.state_files().is_empty());
}

/// What xen-vif-network.service runs at boot and shutdown: the script named by
/// `network_script` in /etc/xen/xen-vif.toml; without the key, nothing.
#[test]
fn the_host_network_from_the_configuration_file() {
    let Some((sb, _sw)) = host("conf") else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.run("xen-vif", &["network", "host", "start"], &[]);
    assert_ok(&o);
    assert_eq!(before, sb.snapshot(), "no key: nothing changes");
    fs::create_dir_all(sb.etc_dir().join("xen")).unwrap();
    fs::write(
        sb.etc_dir().join("xen/xen-vif.toml"),
        "# was (network-script 'network-bridge netdev=eth0')\n\
         network_script = \"network-bridge netdev=eth0\"\n",
    )
    .unwrap();
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains("network_script = network-bridge netdev=eth0\n"));
    assert_ok(&sb.run("xen-vif", &["network", "host", "start"], &[]));
    assert_eq!(kind(&sb, "eth0").as_deref(), Some("bridge"));
    assert_eq!(sb.master("peth0").as_deref(), Some("eth0"));
    assert!(sb.ping("10.0.0.1"));
    let o = sb.run("xen-vif", &["network", "host", "status"], &[]);
    assert_ok(&o);
    assert_ok(&sb.run("xen-vif", &["network", "host", "stop"], &[]));
    assert_eq!(before, sb.snapshot());
    // A bad value fails start with the line named, and check-config says the same.
    fs::write(
        sb.etc_dir().join("xen/xen-vif.toml"),
        "network_script = \"network-bridge eth0\"\n",
    )
    .unwrap();
    for args in [&["network", "host", "start"][..], &["check-config"]] {
        let o = sb.run("xen-vif", args, &[]);
        assert_fails(&o);
        assert!(
            stderr(&o).contains("line 1: network_script: \"eth0\" is not key=value"),
            "{}",
            stderr(&o)
        );
    }
    assert_eq!(before, sb.snapshot());
}
