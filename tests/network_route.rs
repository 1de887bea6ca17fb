//! network-route in the real kernel: start → stop restores links, addresses, routes and every
//! sysctl exactly; start twice changes nothing; a kernel without dummy links gets one clear
//! line. This host's kernel has no dummy links, so the gateway device here is a bridge without
//! ports (the dummy itself is exercised in the VM tier). Routed guest traffic is vif-route's
//! test.

mod support;
use std::fs;

use support::*;

const FWD: &str = "/proc/sys/net/ipv4/ip_forward";
const FWD6: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// Every sysctl network-route may touch, directly or by the kernel's cascade.
fn sysctls(sb: &Sandbox) -> String {
    let o = sb.sh(
        "for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding \
         /proc/sys/net/ipv4/conf/*/accept_redirects /proc/sys/net/ipv4/conf/*/proxy_arp \
         /proc/sys/net/ipv6/conf/*/forwarding; do echo \"$f=$(cat $f)\"; done",
    );
    assert!(o.status.success());
    stdout(&o)
}

/// A host with an uplink and a port-less bridge `gw0` as the gateway device.
fn host(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.netback_vif("eth0", "peer0");
    sb.ip("link set eth0 up");
    sb.ip("addr add 192.0.2.10/24 dev eth0");
    sb.ip("route add default via 192.0.2.1");
    sb.bridge("gw0");
    sb.ip("link set gw0 down");
    Some(sb)
}

#[test]
fn start_and_stop_restore_the_host_and_every_sysctl() {
    let Some(sb) = host("route") else {
        return;
    };
    // A value the cascade of ip_forward would not restore by itself.
    sb.sh("echo 1 > /proc/sys/net/ipv4/conf/eth0/forwarding");
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    let args = [
        "start",
        "netdev=gw0",
        "gateway=10.9.0.1/29",
        "gateway=2001:db8:9::1/64",
    ];
    assert_ok(&sb.net("network-route", &args));
    assert_eq!(sb.sysctl(FWD), "1");
    assert_eq!(
        sb.sysctl(FWD6),
        "1",
        "an IPv6 gateway turns on IPv6 forwarding"
    );
    assert_eq!(sb.sysctl("/proc/sys/net/ipv4/conf/gw0/proxy_arp"), "1");
    assert!(sb.is_up("gw0"));
    let mut addrs = sb.addrs("gw0");
    addrs.sort();
    assert_eq!(addrs, vec!["10.9.0.1/29", "2001:db8:9::1/64"]);
    assert!(sb.ip("addr show dev gw0").contains("brd 10.9.0.7"));

    let o = sb.net("network-route", &["status", "netdev=gw0"]);
    assert_ok(&o);
    let s = stdout(&o);
    assert!(s.contains("started by xen-vif"), "{s}");
    assert!(
        s.contains("gateway device gw0: bridge, up, addresses: 10.9.0.1/29"),
        "{s}"
    );
    assert!(s.contains("net.ipv4.ip_forward = 1"), "{s}");
    assert!(s.contains("net.ipv4.conf.gw0.proxy_arp = 1"), "{s}");

    // Start twice: nothing changes, not even the state file.
    let (started, sys_started) = (sb.snapshot(), sysctls(&sb));
    let state = fs::read_to_string(&sb.state_files()[0]).unwrap();
    assert_ok(&sb.net("network-route", &args));
    assert_eq!(started, sb.snapshot());
    assert_eq!(sys_started, sysctls(&sb));
    assert_eq!(state, fs::read_to_string(&sb.state_files()[0]).unwrap());

    // Stop, as a new process: everything as before, including eth0's own forwarding=1.
    assert_ok(&sb.net("network-route", &["stop", "netdev=gw0"]));
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
    assert!(sb.state_files().is_empty());
}

#[test]
fn without_gateways_only_forwarding_and_proxy_arp() {
    let Some(sb) = host("plain") else {
        return;
    };
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    // netdev= defaults to the device of the default route (no dummy0 here).
    assert_ok(&sb.net("network-route", &["start"]));
    assert_eq!(sb.sysctl(FWD), "1");
    assert_eq!(sb.sysctl("/proc/sys/net/ipv4/conf/eth0/proxy_arp"), "1");
    assert_eq!(
        sb.sysctl(FWD6),
        "0",
        "no IPv6 anywhere: IPv6 forwarding stays off"
    );
    assert_eq!(before, sb.snapshot());
    assert_ok(&sb.net("network-route", &["stop"]));
    assert_eq!(sys_before, sysctls(&sb));
    assert!(sb.state_files().is_empty());
}

#[test]
fn global_ipv6_on_the_host_turns_on_ipv6_forwarding() {
    let Some(sb) = host("v6") else {
        return;
    };
    sb.ip("addr add 2001:db8:1::10/64 dev eth0 nodad");
    let sys_before = sysctls(&sb);
    assert_ok(&sb.net("network-route", &["start", "netdev=eth0"]));
    assert_eq!(sb.sysctl(FWD6), "1");
    assert_ok(&sb.net("network-route", &["stop", "netdev=eth0"]));
    assert_eq!(sys_before, sysctls(&sb));
}

#[test]
fn a_kernel_without_dummy_links_gets_one_clear_line() {
    let Some(sb) = host("dummy") else {
        return;
    };
    let has_dummy = sb.ip_try("link add probe0 type dummy").0;
    if has_dummy {
        sb.ip("link del probe0");
    }
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    // The VM tier's exact form.
    let o = sb.net(
        "network-route",
        &["start", "netdev=dummy0", "gateway=10.9.0.1/29"],
    );
    if !has_dummy {
        assert_fails(&o);
        assert_eq!(
            stderr(&o).trim(),
            "network-route: network-route start: kernel has no dummy link support (CONFIG_DUMMY)"
        );
        assert_eq!(before, sb.snapshot());
        assert_eq!(sys_before, sysctls(&sb));
        assert!(sb.state_files().is_empty());
        return;
    }
    assert_ok(&o);
    assert_eq!(sb.link("dummy0").unwrap()["linkinfo"]["info_kind"], "dummy");
    assert_eq!(sb.addrs("dummy0"), vec!["10.9.0.1/29"]);
    assert_ok(&sb.net("network-route", &["stop"]));
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
}

#[test]
fn status_lists_each_vif_with_its_guest_routes() {
    let Some(sb) = host("status") else {
        return;
    };
    assert_ok(&sb.net(
        "network-route",
        &["start", "netdev=gw0", "gateway=10.9.0.1/29"],
    ));
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
    let o = sb.online("vif-route", 5, 0);
    if !require(
        o.status.success(),
        "vif-route online (the lead's route mode)",
    ) {
        return;
    }
    let o = sb.net("network-route", &["status"]);
    assert_ok(&o);
    let s = stdout(&o);
    assert!(s.contains("vif5.0 up, proxy_arp 1"), "{s}");
    assert!(
        s.contains("10.9.0.2/32 dev vif5.0 src 10.9.0.1 metric 2"),
        "{s}"
    );
    assert_ok(&sb.offline("vif-route", 5, 0));
    assert_ok(&sb.net("network-route", &["stop"]));
}

#[test]
fn stop_restores_after_a_start_that_was_interrupted() {
    let Some(sb) = host("crash") else {
        return;
    };
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    let args = ["start", "netdev=gw0", "gateway=10.9.0.1/29"];
    assert_ok(&sb.net("network-route", &args));
    let path = sb.state_files()[0].clone();
    let state = fs::read_to_string(&path).unwrap();
    assert_ok(&sb.net("network-route", &["stop", "netdev=gw0"]));
    assert_eq!(sys_before, sysctls(&sb));

    // The crash came after the forwarding and proxy ARP writes, before the address.
    fs::write(&path, state.replace("phase started", "phase starting")).unwrap();
    sb.sh("echo 1 > /proc/sys/net/ipv4/ip_forward; echo 1 > /proc/sys/net/ipv4/conf/gw0/proxy_arp");
    let o = sb.net("network-route", &args);
    assert_fails(&o);
    assert!(stderr(&o).contains("was interrupted"), "{}", stderr(&o));
    assert_ok(&sb.net("network-route", &["stop", "netdev=gw0"]));
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
    assert!(sb.state_files().is_empty());
}

#[test]
fn values_changed_since_start_are_left_alone() {
    let Some(sb) = host("since") else {
        return;
    };
    assert_ok(&sb.net("network-route", &["start", "netdev=gw0"]));
    // The administrator turned proxy ARP off again meanwhile: stop does not fight that.
    sb.sh("echo 0 > /proc/sys/net/ipv4/conf/gw0/proxy_arp");
    assert_ok(&sb.net("network-route", &["stop", "netdev=gw0"]));
    assert_eq!(sb.sysctl("/proc/sys/net/ipv4/conf/gw0/proxy_arp"), "0");
    assert_eq!(sb.sysctl(FWD), "0");
}

#[test]
fn bad_parameters_change_nothing() {
    let Some(sb) = host("bad") else {
        return;
    };
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    for (args, says) in [
        (&["start", "netdev=nosuch0"][..], "nosuch0 does not exist"),
        (&["start", "gateway=10.9.0.1"], "prefix length"),
        (&["start", "gateway=10.9.0.1/33"], "bad prefix length"),
        (&["start", "gateway=10.9.0.1/29,10.9.0.1/30"], "given twice"),
        (&["start", "bridge=xenbr0"], "unknown parameter"),
        (&["start", "netdev=a/b"], "not a valid interface name"),
    ] {
        let o = sb.net("network-route", args);
        assert_fails(&o);
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{args:?}");
    }
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
    assert!(sb.state_files().is_empty());
    // Dry run: the plan, no change.
    let o = sb.net(
        "xen-vif",
        &[
            "network",
            "route",
            "start",
            "netdev=gw0",
            "gateway=10.9.0.1/29",
            "--dry-run",
        ],
    );
    assert_ok(&o);
    let plan = stdout(&o);
    assert!(
        plan.contains("echo 1 > /proc/sys/net/ipv4/ip_forward"),
        "{plan}"
    );
    assert!(
        plan.contains("ip address add 10.9.0.1/29 dev gw0"),
        "{plan}"
    );
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
}

#[test]
fn a_failure_midway_leaves_the_host_and_the_sysctls_unchanged() {
    let Some(sb) = host("midway") else {
        return;
    };
    // The kernel refuses an IPv6 address on a device with IPv6 disabled: the last step fails
    // after forwarding, proxy ARP and the IPv4 address are done.
    sb.sh("echo 1 > /proc/sys/net/ipv6/conf/gw0/disable_ipv6");
    // Undoing ip_forward resets every device's forwarding; this one must come back as 1.
    sb.sh("echo 1 > /proc/sys/net/ipv4/conf/eth0/forwarding");
    let (before, sys_before) = (sb.snapshot(), sysctls(&sb));
    let o = sb.net(
        "network-route",
        &[
            "start",
            "netdev=gw0",
            "gateway=10.9.0.1/29",
            "gateway=2001:db8:9::1/64",
        ],
    );
    assert_fails(&o);
    assert!(
        stderr(&o).contains("ip address add 2001:db8:9::1/64 dev gw0"),
        "{}",
        stderr(&o)
    );
    assert_eq!(before, sb.snapshot());
    assert_eq!(sys_before, sysctls(&sb));
    assert!(sb.state_files().is_empty());
}
