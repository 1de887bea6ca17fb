//! NAT mode in the real kernel: vif-nat gives a guest (the veth peer in its own namespace) its
//! router address, host route and proxy ARP, and a dnsmasq host entry when configured;
//! network-nat masquerades the guests out of the uplink, so an "outside" namespace that has no
//! route to 10.0.0.0/8 answers them, seeing dom0's address. Offline and stop leave the host
//! exactly as before.

mod support;
use std::fs;

use support::*;

const BE: &str = "/local/domain/0/backend/vif/5";

/// A guest behind vif5.<devid>: netback's vif in the host, its eth0 in a namespace of its own,
/// configured as DHCP would configure it (its address, the router as its default gateway).
fn guest(sb: &Sandbox, devid: u32, ip: Option<&str>, mac: &str) -> Netns {
    let vif = format!("vif5.{devid}");
    let g = Netns::new(sb, &format!("g{devid}"));
    sb.netback_vif(&vif, "eth0");
    sb.move_to("eth0", &g);
    g.ip(&format!("link set eth0 address {mac}"));
    g.ip("link set eth0 up");
    let mut keys = vec![("script", "/etc/xen/scripts/vif-nat"), ("mac", mac)];
    if let Some(ip) = ip {
        keys.push(("ip", ip));
    }
    sb.backend(5, devid, &keys);
    g
}

fn configure_guest(g: &Netns, addr: &str, router: &str) {
    g.ip(&format!("addr add {addr}/32 dev eth0"));
    g.ip(&format!("route add {router} dev eth0"));
    g.ip(&format!("route add default via {router}"));
}

fn hotplug(sb: &Sandbox, devid: u32, command: &str) {
    assert_ok(&sb.run(
        "vif-nat",
        &[command, "type_if=vif"],
        &sb.libxl_env("vif-nat", 5, devid),
    ));
}

fn dhcp_config(sb: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = sb.path("dhcp");
    let (hosts, opts) = (dir.join("hosts"), dir.join("options"));
    let cfg = sb.etc_dir().join("xen");
    fs::create_dir_all(&cfg).unwrap();
    fs::write(
        cfg.join("xen-vif.toml"),
        format!(
            "nat_dhcp_hosts = \"{}\"\nnat_dhcp_options = \"{}\"\n",
            hosts.display(),
            opts.display()
        ),
    )
    .unwrap();
    (hosts, opts)
}

#[test]
fn nat_guest_gets_its_router_and_offline_takes_it_away() {
    let Some(sb) = Sandbox::new("nat-vif") else {
        return;
    };
    if !require(have_tool("ping"), "ping (iputils-ping)") {
        return;
    }
    let (hosts, opts) = dhcp_config(&sb);
    fs::create_dir_all(hosts.parent().unwrap()).unwrap();
    // Someone else's entry survives every rewrite.
    fs::write(&hosts, "00:16:3e:99:99:99,10.9.9.9,other\n").unwrap();
    let g0 = guest(&sb, 0, None, "00:16:3e:00:00:05");
    let g1 = guest(&sb, 1, Some("192.168.7.20"), "00:16:3e:00:01:05");
    let before = sb.snapshot();

    hotplug(&sb, 0, "online");
    hotplug(&sb, 1, "online");
    assert_eq!(sb.addrs("vif5.0"), ["10.0.5.128/32"]);
    assert_eq!(sb.addrs("vif5.1"), ["192.168.7.147/32"]);
    assert!(sb.is_up("vif5.0") && sb.is_up("vif5.1"));
    let routes = sb.ip("route show");
    assert!(
        routes.contains("10.0.5.1 dev vif5.0 scope link src 10.0.5.128"),
        "{routes}"
    );
    assert!(
        routes.contains("192.168.7.20 dev vif5.1 scope link src 192.168.7.147"),
        "{routes}"
    );
    for v in ["vif5.0", "vif5.1"] {
        assert_eq!(
            sb.sysctl(&format!("/proc/sys/net/ipv4/conf/{v}/proxy_arp")),
            "1"
        );
    }
    for d in [0, 1] {
        assert_eq!(
            sb.xs.read(&format!("{BE}/{d}/hotplug-status")).as_deref(),
            Some("connected")
        );
    }
    assert_eq!(
        fs::read_to_string(&hosts).unwrap(),
        "00:16:3e:99:99:99,10.9.9.9,other\n\
         00:16:3e:00:00:05,set:xen-vif-dom5,10.0.5.1,dom5\n\
         00:16:3e:00:01:05,set:xen-vif-dom5-2,192.168.7.20,dom5-2\n"
    );
    assert_eq!(
        fs::read_to_string(&opts).unwrap(),
        "tag:xen-vif-dom5,option:router,10.0.5.128\n\
         tag:xen-vif-dom5-2,option:router,192.168.7.147\n"
    );

    // The guests reach dom0 through their routers.
    configure_guest(&g0, "10.0.5.1", "10.0.5.128");
    configure_guest(&g1, "192.168.7.20", "192.168.7.147");
    assert!(g0.ping("10.0.5.128"));
    assert!(g1.ping("192.168.7.147"));
    // And each other, through dom0 (forwarding on).
    sb.set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
    assert!(g0.ping("192.168.7.20"));
    sb.set_sysctl("/proc/sys/net/ipv4/ip_forward", "0");

    // Online twice changes nothing.
    let online = sb.snapshot();
    hotplug(&sb, 0, "online");
    assert_eq!(sb.snapshot(), online);

    hotplug(&sb, 0, "offline");
    hotplug(&sb, 1, "offline");
    assert_eq!(sb.snapshot(), before);
    for v in ["vif5.0", "vif5.1"] {
        assert_eq!(
            sb.sysctl(&format!("/proc/sys/net/ipv4/conf/{v}/proxy_arp")),
            "0"
        );
    }
    assert_eq!(
        fs::read_to_string(&hosts).unwrap(),
        "00:16:3e:99:99:99,10.9.9.9,other\n"
    );
    assert_eq!(fs::read_to_string(&opts).unwrap(), "");
    // Offline of a vanished vif succeeds.
    sb.ip("link del vif5.0");
    hotplug(&sb, 0, "offline");
}

#[test]
fn nat_dry_run_and_bad_ip() {
    let Some(sb) = Sandbox::new("nat-dry") else {
        return;
    };
    let _g = guest(&sb, 0, None, "00:16:3e:00:00:05");
    let before = sb.snapshot();
    let o = sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &[]);
    assert_ok(&o);
    // The anti-spoofing chain first (pinned to the guest's address and MAC), then NAT's steps.
    let out = stdout(&o);
    assert!(
        out.contains("ip saddr 10.0.5.1 accept")
            && out.contains("ether saddr != 00:16:3e:00:00:05 drop"),
        "{out}"
    );
    assert!(
        out.ends_with(
            "ip link set vif5.0 up\n\
             ip address add 10.0.5.128/32 dev vif5.0\n\
             ip route add 10.0.5.1/32 dev vif5.0 src 10.0.5.128\n\
             echo 1 > /proc/sys/net/ipv4/conf/vif5.0/proxy_arp\n\
             xenstore-write backend/vif/5/0/hotplug-status connected\n"
        ),
        "{out}"
    );
    assert_eq!(sb.snapshot(), before);
    sb.xs.write(&format!("{BE}/0/ip"), "10.0.0.1 10.0.0.2");
    let o = sb.run(
        "vif-nat",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-nat", 5, 0),
    );
    assert_fails(&o);
    let he = sb.xs.read(&format!("{BE}/0/hotplug-error")).unwrap();
    assert!(he.contains("vif-nat takes one IPv4 address"), "{he}");
    assert_eq!(sb.snapshot(), before);
}
