//! vif-route in the real kernel: a routed guest (the veth peer in its own namespace, configured
//! as the guest would be) exchanges packets with a "world" namespace through xen-vif's routes,
//! proxy ARP and proxy NDP; offline leaves nothing behind.

mod support;
use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";

/// The host side of the Debian-Administration set-up: a routed 10.9.0.0/29 (and 2001:db8:9::/64)
/// whose gateway address sits on a gateway device. This host kernel has no dummy links, so the
/// gateway device is a bridge whose one port leads to the "world" namespace, which reaches the
/// guests by IPv4 routing through the host and by IPv6 on-link (proxy NDP).
struct Routed {
    sb: Sandbox,
    world: Netns,
}

fn routed(tag: &str) -> Option<Routed> {
    let sb = Sandbox::new(tag)?;
    if !require(have_tool("ping"), "ping (iputils-ping)") {
        return None;
    }
    let world = Netns::new(&sb, "w");
    sb.bridge("gw0");
    sb.ip("addr add 10.9.0.1/29 dev gw0");
    sb.ip("addr add 198.51.100.1/24 dev gw0");
    sb.ip("addr add 2001:db8:9::1/64 dev gw0 nodad");
    sb.ip("link add up0 type veth peer name w0");
    sb.ip("link set up0 master gw0");
    sb.ip("link set up0 up");
    sb.move_to("w0", &world);
    world.ip("link set w0 up");
    world.ip("addr add 198.51.100.2/24 dev w0");
    world.ip("addr add 2001:db8:9::100/64 dev w0 nodad");
    world.ip("route add 10.9.0.0/29 via 198.51.100.1");
    sb.set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
    sb.set_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1");
    Some(Routed { sb, world })
}

/// A guest: netback's vif in the host, its eth0 in a namespace of its own, configured as the
/// guest would configure itself (its address, default route via the gateway address).
fn guest(r: &Routed, domid: u32, v4: &str, v6: Option<&str>, ip_key: &str) -> Netns {
    let vif = format!("vif{domid}.0");
    let g = Netns::new(&r.sb, &format!("g{domid}"));
    r.sb.netback_vif(&vif, "eth0");
    // The guest's NIC has the backend's MAC, which the anti-spoofing filter holds it to.
    let mac = format!("00:16:3e:00:00:{domid:02x}");
    r.sb.ip(&format!("link set eth0 address {mac}"));
    r.sb.move_to("eth0", &g);
    g.ip("link set eth0 up");
    g.ip(&format!("addr add {v4}/29 dev eth0"));
    g.ip("route add default via 10.9.0.1");
    if let Some(v6) = v6 {
        // A routed IPv6 guest (as Qubes configures them): its address alone, the gateway
        // reachable over the link; everything else goes through the gateway.
        g.ip(&format!("addr add {v6}/128 dev eth0 nodad"));
        g.ip("-6 route add 2001:db8:9::1 dev eth0");
        g.ip("-6 route add default via 2001:db8:9::1");
    }
    r.sb.backend(
        domid,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("ip", ip_key),
            ("gatewaydev", "gw0"),
            ("mac", &mac),
        ],
    );
    g
}

/// `vif-route COMMAND type_if=vif` as libxl runs it, with the backend's gatewaydev as netdev.
fn hotplug(r: &Routed, domid: u32, command: &str) {
    let mut env = r.sb.libxl_env("vif-route", domid, 0);
    env.retain(|(k, _)| k != "netdev");
    env.push(("netdev".into(), "gw0".into()));
    assert_ok(&r.sb.run("vif-route", &[command, "type_if=vif"], &env));
}

fn online(r: &Routed, domid: u32) {
    hotplug(r, domid, "online")
}

fn offline(r: &Routed, domid: u32) {
    hotplug(r, domid, "offline")
}

#[test]
fn routed_guest_reaches_the_world_ipv4_and_ipv6() {
    let Some(r) = routed("route-ping") else {
        return;
    };
    let g = guest(
        &r,
        5,
        "10.9.0.2",
        Some("2001:db8:9::2"),
        "10.9.0.2 2001:db8:9::2",
    );
    online(&r, 5);
    let sb = &r.sb;
    assert_eq!(
        sb.addrs("vif5.0"),
        vec!["10.9.0.1/32".to_string(), "2001:db8:9::1/128".to_string()]
    );
    assert!(sb.is_up("vif5.0"));
    assert_eq!(sb.sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp"), "1");
    assert_eq!(sb.sysctl("/proc/sys/net/ipv6/conf/gw0/proxy_ndp"), "1");
    let routes = sb.ip("route show dev vif5.0");
    assert!(
        routes.contains("10.9.0.2 scope link src 10.9.0.1 metric 2"),
        "{routes}"
    );
    let routes6 = sb.ip("-6 route show dev vif5.0");
    assert!(routes6.contains("2001:db8:9::2 "), "{routes6}");
    assert!(sb.ip("neigh show proxy").contains("2001:db8:9::2 dev gw0"));
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
        Some("connected")
    );

    assert!(g.ping("198.51.100.2"), "guest → world over IPv4");
    assert!(r.world.ping("10.9.0.2"), "world → guest over IPv4");
    assert!(g.ping("2001:db8:9::100"), "guest → world over IPv6");
    assert!(
        r.world.ping("2001:db8:9::2"),
        "world → guest over IPv6 (proxy NDP)"
    );
}

#[test]
fn offline_leaves_nothing_behind() {
    let Some(r) = routed("route-clean") else {
        return;
    };
    let _g = guest(
        &r,
        5,
        "10.9.0.2",
        Some("2001:db8:9::2"),
        "10.9.0.2 2001:db8:9::2",
    );
    let before = r.sb.snapshot();
    let proxy_arp_before = r.sb.sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp");
    online(&r, 5);
    assert_ne!(before, r.sb.snapshot());
    offline(&r, 5);
    assert_eq!(before, r.sb.snapshot());
    assert_eq!(
        r.sb.sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp"),
        proxy_arp_before
    );
    // Offline again (libxl may run it after a failed online): still fine, still clean.
    offline(&r, 5);
    assert_eq!(before, r.sb.snapshot());
}

#[test]
fn online_twice_is_the_same_state() {
    let Some(r) = routed("route-twice") else {
        return;
    };
    let _g = guest(
        &r,
        5,
        "10.9.0.2",
        Some("2001:db8:9::2"),
        "10.9.0.2 2001:db8:9::2",
    );
    online(&r, 5);
    let first = r.sb.snapshot();
    online(&r, 5);
    assert_eq!(first, r.sb.snapshot());
}

#[test]
fn two_guests_on_one_gateway_reach_each_other_by_proxy_arp() {
    let Some(r) = routed("route-two") else { return };
    let g5 = guest(&r, 5, "10.9.0.2", None, "10.9.0.2");
    let g6 = guest(&r, 6, "10.9.0.3", None, "10.9.0.3");
    online(&r, 5);
    online(&r, 6);
    // Each guest thinks the other is on its /29 and ARPs for it: the host answers on the vif.
    assert!(g5.ping("10.9.0.3"), "guest 5 → guest 6");
    assert!(g6.ping("10.9.0.2"), "guest 6 → guest 5");
    offline(&r, 5);
    assert!(!r.sb.ip("route show").contains("10.9.0.2 "));
    assert!(
        r.sb.ip("route show").contains("10.9.0.3 "),
        "the other guest keeps its route"
    );
}

#[test]
fn tap_and_vif_of_one_guest_do_not_collide() {
    let Some(r) = routed("route-tap") else { return };
    let _g = guest(&r, 5, "10.9.0.2", None, "10.9.0.2");
    r.sb.netback_vif("vif5.0-emu", "t5.0");
    online(&r, 5);
    let mut env = r.sb.libxl_env("vif-route", 5, 0);
    env.push(("INTERFACE".into(), "vif5.0-emu".into()));
    assert_ok(&r.sb.run("vif-route", &["add", "type_if=tap"], &env));
    let routes = r.sb.ip("route show 10.9.0.2");
    assert!(
        routes.contains("dev vif5.0-emu scope link src 10.9.0.1 metric 1"),
        "{routes}"
    );
    assert!(
        routes.contains("dev vif5.0 scope link src 10.9.0.1 metric 2"),
        "{routes}"
    );
    assert_ok(&r.sb.run("vif-route", &["remove", "type_if=tap"], &env));
    let routes = r.sb.ip("route show 10.9.0.2");
    assert!(!routes.contains("vif5.0-emu"), "{routes}");
    assert!(routes.contains("dev vif5.0 "), "{routes}");
}

/// Two guests given the same IPv6 address: the second's online fails; its offline (which libxl
/// always runs) and the first guest's tap `remove` leave the proxy NDP entry the first guest's
/// vif still needs.
#[test]
fn a_shared_address_keeps_the_proxy_entry_the_other_guest_needs() {
    let Some(r) = routed("route-shared") else {
        return;
    };
    let _a = guest(
        &r,
        5,
        "10.9.0.2",
        Some("2001:db8:9::2"),
        "10.9.0.2 2001:db8:9::2",
    );
    online(&r, 5);
    let proxy = || r.sb.ip("neigh show proxy");
    assert!(proxy().contains("2001:db8:9::2 dev gw0"), "{}", proxy());
    let before = r.sb.snapshot();
    // Domain 6 is given the same IPv6 address.
    let _b = guest(
        &r,
        6,
        "10.9.0.3",
        Some("2001:db8:9::2"),
        "10.9.0.3 2001:db8:9::2",
    );
    let mut env = r.sb.libxl_env("vif-route", 6, 0);
    env.retain(|(k, _)| k != "netdev");
    env.push(("netdev".into(), "gw0".into()));
    let o = r.sb.run("vif-route", &["online", "type_if=vif"], &env);
    assert_fails(&o);
    let err =
        r.sb.xs
            .read("/local/domain/0/backend/vif/6/0/hotplug-error")
            .unwrap();
    assert_eq!(
        err,
        "vif-route online vif6.0: ip entry 2001:db8:9::2/128 is already routed to vif5.0 \
         (another guest's address?)"
    );
    assert_eq!(before, without(&r.sb.snapshot(), "vif6.0"));
    // Its offline: domain 5's proxy entry and routes stay.
    assert_ok(&r.sb.run("vif-route", &["offline", "type_if=vif"], &env));
    assert!(proxy().contains("2001:db8:9::2 dev gw0"), "{}", proxy());
    assert_eq!(before, without(&r.sb.snapshot(), "vif6.0"));
    // Domain 5's emulated NIC comes and goes: its vif still needs the entry.
    r.sb.netback_vif("vif5.0-emu", "t5.0");
    let mut tap = r.sb.libxl_env("vif-route", 5, 0);
    tap.retain(|(k, _)| k != "netdev");
    tap.push(("netdev".into(), "gw0".into()));
    tap.push(("INTERFACE".into(), "vif5.0-emu".into()));
    assert_ok(&r.sb.run("vif-route", &["add", "type_if=tap"], &tap));
    assert_ok(&r.sb.run("vif-route", &["remove", "type_if=tap"], &tap));
    assert!(proxy().contains("2001:db8:9::2 dev gw0"), "{}", proxy());
    r.sb.ip("link del vif5.0-emu");
    assert_eq!(before, without(&r.sb.snapshot(), "vif6.0"));
    // The world still reaches domain 5 over IPv6 (proxy NDP on gw0).
    assert!(r.world.ping("2001:db8:9::2"), "world → guest over IPv6");
    // Domain 5's own offline takes the entry away: nobody needs it any more.
    offline(&r, 5);
    assert!(!proxy().contains("2001:db8:9::2"), "{}", proxy());
}

/// The `ip` key went bad after online: offline finds the guest's routes on the vif in the
/// kernel, and removes them and the proxy NDP entry all the same.
#[test]
fn offline_with_a_bad_ip_key_finds_the_routes_in_the_kernel() {
    let Some(r) = routed("route-badip") else {
        return;
    };
    let _g = guest(
        &r,
        5,
        "10.9.0.2",
        Some("2001:db8:9::2"),
        "10.9.0.2 2001:db8:9::2",
    );
    let before = r.sb.snapshot();
    online(&r, 5);
    assert!(
        r.sb.ip("neigh show proxy")
            .contains("2001:db8:9::2 dev gw0")
    );
    r.sb.xs.write(&format!("{BE}/ip"), "10.9.0.2 junk");
    offline(&r, 5);
    assert!(r.sb.ip("route show dev vif5.0").trim().is_empty());
    assert!(
        r.sb.ip("-6 route show dev vif5.0")
            .lines()
            .all(|l| l.starts_with("fe80"))
    );
    assert!(!r.sb.ip("neigh show proxy").contains("2001:db8:9::2"));
    assert_eq!(before, r.sb.snapshot());
}

#[test]
fn without_ip_only_the_gateway_address_and_proxy_arp() {
    let Some(r) = routed("route-noip") else {
        return;
    };
    r.sb.netback_vif("vif5.0", "g5.0");
    r.sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("gatewaydev", "gw0"),
        ],
    );
    let before_routes = r.sb.ip("route show table main");
    online(&r, 5);
    assert_eq!(r.sb.addrs("vif5.0"), vec!["10.9.0.1/32".to_string()]);
    assert_eq!(r.sb.sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp"), "1");
    // No guest routes: only what the kernel itself adds for an up link with no prefix route.
    assert_eq!(before_routes, r.sb.ip("route show table main"));
}

#[test]
fn bad_ip_entries_change_nothing() {
    let Some(r) = routed("route-bad") else { return };
    r.sb.netback_vif("vif5.0", "g5.0");
    for bad in [
        "10.9.0.2 junk",
        "10.9.0.2/40",
        "10.9.0.5/29",
        "fe80::1%eth0",
        "10.9.0.2 10.9.0.2",
    ] {
        r.sb.backend(
            5,
            0,
            &[
                ("script", "/etc/xen/scripts/vif-route"),
                ("gatewaydev", "gw0"),
                ("ip", bad),
            ],
        );
        let before = r.sb.snapshot();
        let mut env = r.sb.libxl_env("vif-route", 5, 0);
        env.retain(|(k, _)| k != "netdev");
        let o = r.sb.run("vif-route", &["online", "type_if=vif"], &env);
        assert_fails(&o);
        let err = r.sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
        assert!(
            err.starts_with("vif-route online vif5.0: ip"),
            "{bad}: {err}"
        );
        assert_eq!(
            r.sb.xs.read(&format!("{BE}/hotplug-status")).as_deref(),
            Some("error")
        );
        assert_eq!(before, r.sb.snapshot(), "{bad}");
    }
}

#[test]
fn gateway_without_address_is_a_clear_error() {
    let Some(sb) = Sandbox::new("route-noaddr") else {
        return;
    };
    sb.bridge("gw0");
    sb.netback_vif("vif5.0", "g5.0");
    sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("gatewaydev", "gw0"),
            ("ip", "10.9.0.2"),
        ],
    );
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-route", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        err,
        "vif-route online vif5.0: gateway device gw0 has no IPv4 address"
    );
    assert_eq!(before, sb.snapshot());
}

#[test]
fn vif_setup_dispatches_to_route_by_script() {
    let Some(r) = routed("route-setup") else {
        return;
    };
    let _g = guest(&r, 5, "10.9.0.2", None, "10.9.0.2");
    let mut env = r.sb.libxl_env("vif-route", 5, 0);
    env.retain(|(k, _)| k != "netdev");
    assert_ok(&r.sb.run("vif-setup", &["online", "type_if=vif"], &env));
    assert!(r.sb.ip("route show dev vif5.0").contains("10.9.0.2"));
}
