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
    if !require(have_tool("ping"), "ping (iputils-ping)")
        || !require(have_tool("nft"), "nft (nftables), to read the ruleset")
    {
        return;
    }
    let (hosts, opts) = dhcp_config(&sb);
    fs::create_dir_all(hosts.parent().unwrap()).unwrap();
    // Someone else's entry survives every rewrite.
    fs::write(&hosts, "00:16:3e:99:99:99,10.9.9.9,other\n").unwrap();
    let g0 = guest(&sb, 0, None, "00:16:3e:00:00:05");
    let g1 = guest(&sb, 1, Some("192.168.7.20"), "00:16:3e:00:01:05");
    // The hotplug log is written when /var/log/xen exists.
    fs::create_dir_all(sb.log_dir().join("xen")).unwrap();
    // A device without ARP gets it (proxy ARP answers for the router there).
    sb.ip("link set vif5.1 arp off");
    let before = sb.snapshot();

    hotplug(&sb, 0, "online");
    hotplug(&sb, 1, "online");
    assert_eq!(sb.addrs("vif5.0"), ["10.0.5.128/32"]);
    assert_eq!(sb.addrs("vif5.1"), ["192.168.7.147/32"]);
    assert!(sb.is_up("vif5.0") && sb.is_up("vif5.1"));
    assert!(!sb.ip("link show vif5.1").contains("NOARP"));
    // As in route mode, dom0 resolves each guest address to the backend's MAC only.
    let neigh = sb.ip("neigh show dev vif5.0");
    assert!(
        neigh.contains("10.0.5.1 lladdr 00:16:3e:00:00:05 PERMANENT"),
        "{neigh}"
    );
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

    let log = fs::read_to_string(sb.log_dir().join("xen/xen-hotplug.log")).unwrap();
    assert!(
        log.contains("vif-nat[") && log.contains("device=vif5.1 online mode=nat result=ok"),
        "{log}"
    );
    // status: both in NAT mode, connected, nothing missing.
    let o = sb.run("xen-vif", &["status"], &[]);
    assert_ok(&o);
    let status = stdout(&o);
    assert!(!status.contains("needs:"), "{status}");
    for d in ["vif5.0", "vif5.1"] {
        assert!(
            status
                .lines()
                .any(|l| l.contains(d) && l.contains(" nat ") && l.contains("connected")),
            "{status}"
        );
    }

    // Online twice changes nothing (the filter chain keeps its rule handles, too).
    let handles = || stdout(&sb.sh("nft -a list ruleset"));
    let (online, online_rules) = (sb.snapshot(), handles());
    hotplug(&sb, 0, "online");
    assert_eq!((sb.snapshot(), handles()), (online, online_rules));

    hotplug(&sb, 0, "offline");
    hotplug(&sb, 1, "offline");
    assert_eq!(sb.ip("neigh show dev vif5.0 nud permanent"), "");
    // ARP stays on (what netback's devices have); everything else is as before.
    assert!(!sb.ip("link show vif5.1").contains("NOARP"));
    sb.ip("link set vif5.1 arp off");
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
    // libxl's offline after the failed online succeeds.
    assert_ok(&sb.run(
        "vif-nat",
        &["offline", "type_if=vif"],
        &sb.libxl_env("vif-nat", 5, 0),
    ));
    assert_eq!(sb.snapshot(), before);
}

const FWD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Every sysctl network-nat may touch, directly or by the kernel's cascade.
fn sysctls(sb: &Sandbox) -> String {
    let o = sb.sh(
        "for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding \
         /proc/sys/net/ipv4/conf/*/accept_redirects; do echo \"$f=$(cat $f)\"; done",
    );
    assert!(o.status.success());
    stdout(&o)
}

/// The sandbox's nf_tables ruleset as `nft` lists it.
fn ruleset(sb: &Sandbox) -> String {
    let o = sb.sh("nft list ruleset");
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// dom0 with an uplink `up0` (192.0.2.1/24) to an "outside" namespace (192.0.2.2/24) that has
/// no route back to the guests' 10.0.0.0/8: only masqueraded packets get an answer.
fn uplinked(tag: &str) -> Option<(Sandbox, Netns)> {
    let sb = Sandbox::new(tag)?;
    if !require(have_tool("ping"), "ping (iputils-ping)")
        || !require(have_tool("nft"), "nft (nftables), to read the ruleset")
    {
        return None;
    }
    let outside = Netns::new(&sb, "out");
    sb.veth_to("up0", &outside, "o0");
    sb.ip("link set up0 up");
    sb.ip("addr add 192.0.2.1/24 dev up0");
    outside.ip("addr add 192.0.2.2/24 dev o0");
    Some((sb, outside))
}

/// Count, in `ns`, the echo requests arriving from `src`.
fn count_pings_from(ns: &Netns, src: &str) {
    let nft = format!(
        "table ip t {{ chain c {{ type filter hook input priority 0; policy accept; \
         ip saddr {src} icmp type echo-request counter; }}; }}"
    );
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", &nft])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

fn pings_counted(ns: &Netns) -> u64 {
    let o = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "ruleset"])
        .output()
        .unwrap();
    let text = stdout(&o);
    let n = text
        .split("packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("no counter in {text}"))
}

#[test]
fn a_nat_guest_reaches_the_outside_as_dom0_and_stop_restores_the_host() {
    let Some((sb, outside)) = uplinked("nat-net") else {
        return;
    };
    let g = guest(&sb, 0, None, "00:16:3e:00:00:05");
    hotplug(&sb, 0, "online");
    configure_guest(&g, "10.0.5.1", "10.0.5.128");
    count_pings_from(&outside, "192.0.2.1");
    let (before, sys_before, rules_before) = (sb.snapshot(), sysctls(&sb), ruleset(&sb));
    assert!(!g.ping("192.0.2.2"), "no forwarding, no NAT: no answer");

    assert_ok(&sb.net("network-nat", &["start", "netdev=up0"]));
    assert_eq!(sb.sysctl(FWD), "1");
    let rules = ruleset(&sb);
    assert!(
        rules.contains("table ip xen-vif-nat")
            && rules.contains("ip saddr 10.0.0.0/8 oifname \"up0\" masquerade"),
        "{rules}"
    );
    assert!(g.ping("192.0.2.2"));
    assert!(
        pings_counted(&outside) > 0,
        "the outside saw dom0's address"
    );
    let status = stdout(&sb.net("network-nat", &["status", "netdev=up0"]));
    assert!(status.contains("started by xen-vif"), "{status}");
    assert!(status.contains("postrouting-up0: as planned"), "{status}");

    // Start twice changes nothing.
    let (started, started_rules) = (sb.snapshot(), ruleset(&sb));
    assert_ok(&sb.net("network-nat", &["start", "netdev=up0"]));
    assert_eq!((sb.snapshot(), ruleset(&sb)), (started, started_rules));

    // Stop from a new process; `netdev` is found in the state.
    assert_ok(&sb.net("network-nat", &["stop"]));
    assert_eq!(sb.snapshot(), before);
    assert_eq!(sysctls(&sb), sys_before);
    assert_eq!(ruleset(&sb), rules_before);
    assert!(sb.state_files().is_empty());
    assert!(!g.ping("192.0.2.2"));
    hotplug(&sb, 0, "offline");
}

#[test]
fn stop_restores_after_an_interrupted_start_and_dry_run_changes_nothing() {
    let Some((sb, _outside)) = uplinked("nat-crash") else {
        return;
    };
    let (before, sys_before, rules_before) = (sb.snapshot(), sysctls(&sb), ruleset(&sb));
    let o = sb.run(
        "xen-vif",
        &[
            "network",
            "nat",
            "start",
            "netdev=up0",
            "range=10.1.0.0/16",
            "--dry-run",
        ],
        &[],
    );
    assert_ok(&o);
    assert!(
        stdout(&o).contains("ip saddr 10.1.0.0/16 oifname \"up0\" masquerade"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("echo 1 > /proc/sys/net/ipv4/ip_forward"),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        (sb.snapshot(), sysctls(&sb), ruleset(&sb)),
        (before.clone(), sys_before.clone(), rules_before.clone())
    );

    let args = ["start", "netdev=up0", "range=10.1.0.0/16"];
    assert_ok(&sb.net("network-nat", &args));
    let path = sb.state_files()[0].clone();
    let state = fs::read_to_string(&path).unwrap();
    // The chain is named by its uplink alone: a record cannot point stop at another chain.
    assert!(state.contains("\nmasquerade uplink=up0\n"), "{state}");
    fs::write(
        &path,
        state.replace("uplink=up0", "uplink=up0 table=filter"),
    )
    .unwrap();
    let o = sb.net("network-nat", &["stop", "netdev=up0"]);
    assert_fails(&o);
    assert!(
        stderr(&o).contains("unknown field \"table\""),
        "{}",
        stderr(&o)
    );
    assert!(ruleset(&sb).contains("postrouting-up0"));
    // A crash after every change, before the state said so: start refuses, stop restores.
    fs::write(&path, state.replace("phase started", "phase starting")).unwrap();
    let o = sb.net("network-nat", &args);
    assert_fails(&o);
    assert!(stderr(&o).contains("was interrupted"), "{}", stderr(&o));
    assert_ok(&sb.net("network-nat", &["stop", "netdev=up0"]));
    assert_eq!(sb.snapshot(), before);
    assert_eq!(sysctls(&sb), sys_before);
    assert_eq!(ruleset(&sb), rules_before);
    assert!(sb.state_files().is_empty());

    // Bad parameters change nothing.
    for bad in [
        &["start", "netdev=up0", "range=10.0.0.1/8"][..],
        &["start", "netdev=nosuch"],
        &["start", "netdev=up0", "gateway=1.2.3.4/8"],
        &["start", "netdev=up0", "dhcp=yes"],
    ] {
        assert_fails(&sb.net("network-nat", bad));
    }
    assert_eq!(sb.snapshot(), before);
    assert_eq!(sysctls(&sb), sys_before);
    assert!(sb.state_files().is_empty());
}

/// The README's dnsmasq wiring, for real: dnsmasq serves the vifs from the files vif-nat keeps,
/// re-reads them on the SIGHUP vif-nat sends, and the guest's DHCP client gets its address and
/// its router.
#[test]
fn dnsmasq_serves_the_guest_its_address_and_router() {
    let Some(sb) = Sandbox::new("nat-dhcp") else {
        return;
    };
    if !require(have_tool("dnsmasq"), "dnsmasq")
        || !require(
            have_tool("busybox"),
            "busybox (udhcpc, the guest's DHCP client)",
        )
    {
        return;
    }
    let (hosts, opts) = dhcp_config(&sb);
    let pid = sb.path("dhcp/dnsmasq.pid");
    let cfg = sb.etc_dir().join("xen/xen-vif.toml");
    let mut text = fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!("nat_dhcp_pid_file = \"{}\"\n", pid.display()));
    fs::write(&cfg, text).unwrap();
    let dir = hosts.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fs::write(&hosts, "").unwrap();
    fs::write(&opts, "").unwrap();
    let g = guest(&sb, 0, None, "00:16:3e:00:00:05");
    // The README's configuration, and no DNS; dnsmasq drops root as it would on a host.
    let o = sb.sh(&format!(
        "dnsmasq --conf-file=/dev/null --port=0 --interface='vif*' --bind-dynamic \
         --dhcp-range=10.0.0.0,static,255.0.0.0 --dhcp-hostsfile={} --dhcp-optsfile={} \
         --pid-file={} --leasefile-ro",
        hosts.display(),
        opts.display(),
        pid.display()
    ));
    assert!(o.status.success(), "dnsmasq: {}", stderr(&o));
    // dnsmasq goes however the test ends.
    struct Dnsmasq(std::path::PathBuf);
    impl Drop for Dnsmasq {
        fn drop(&mut self) {
            if let Ok(p) = fs::read_to_string(&self.0) {
                let _ = std::process::Command::new("kill").arg(p.trim()).status();
            }
        }
    }
    let dnsmasq = Dnsmasq(pid.clone());
    hotplug(&sb, 0, "online");
    assert!(
        fs::read_to_string(&hosts)
            .unwrap()
            .contains(",set:xen-vif-dom5,10.0.5.1,dom5")
    );

    let script = sb.path("udhcpc.sh");
    let out = sb.path("udhcpc.out");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"ip=$ip router=$router\" >> {}\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = std::process::Command::new("ip")
        .args([
            "netns", "exec", &g.name, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f",
        ])
        .args(["-t", "5", "-T", "1", "-s"])
        .arg(&script)
        .output()
        .unwrap();
    let lease = fs::read_to_string(&out).unwrap_or_default();
    drop(dnsmasq);
    assert!(o.status.success(), "udhcpc: {}{}", stdout(&o), stderr(&o));
    assert_eq!(lease.trim(), "ip=10.0.5.1 router=10.0.5.128");
    hotplug(&sb, 0, "offline");
    assert_eq!(fs::read_to_string(&hosts).unwrap(), "");
}

/// A DHCP file that cannot be written fails online after the kernel changes: they are undone.
#[test]
fn a_dhcp_file_that_cannot_be_written_undoes_the_online() {
    let Some(sb) = Sandbox::new("nat-undo") else {
        return;
    };
    let cfg = sb.etc_dir().join("xen");
    fs::create_dir_all(&cfg).unwrap();
    // The hosts file reads fine (absent), but its temporary's place is taken by a directory.
    fs::create_dir_all(sb.path("dhcp/.hosts.xen-vif-tmp/x")).unwrap();
    fs::write(
        cfg.join("xen-vif.toml"),
        format!(
            "nat_dhcp_hosts = \"{}\"\nantispoof = false\n",
            sb.path("dhcp/hosts").display()
        ),
    )
    .unwrap();
    let _g = guest(&sb, 0, None, "00:16:3e:00:00:05");
    let before = sb.snapshot();
    let o = sb.run(
        "vif-nat",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-nat", 5, 0),
    );
    assert_fails(&o);
    let he = sb.xs.read(&format!("{BE}/0/hotplug-error")).unwrap();
    assert!(he.starts_with("vif-nat online vif5.0: "), "{he}");
    assert!(
        he.contains("echo '00:16:3e:00:00:05,set:xen-vif-dom5,10.0.5.1,dom5' >>"),
        "{he}"
    );
    assert_eq!(sb.snapshot(), before);
    assert_eq!(sb.sysctl("/proc/sys/net/ipv4/conf/vif5.0/proxy_arp"), "0");
}

/// Guests started at once all get their entries: the file is rewritten under one lock.
#[test]
fn concurrent_onlines_keep_every_dhcp_entry() {
    let Some(sb) = Sandbox::new("nat-conc") else {
        return;
    };
    let (hosts, opts) = dhcp_config(&sb);
    const N: u32 = 12;
    for d in 0..N {
        sb.netback_vif(&format!("vif5.{d}"), &format!("g5.{d}"));
        sb.backend(
            5,
            d,
            &[
                ("script", "/etc/xen/scripts/vif-nat"),
                ("mac", &format!("00:16:3e:00:{d:02x}:05")),
            ],
        );
    }
    let run_all = |command: &str| {
        let children: Vec<_> = (0..N)
            .map(|d| {
                sb.script_command(
                    &[],
                    "vif-nat",
                    &[command, "type_if=vif"],
                    &sb.libxl_env("vif-nat", 5, d),
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        for c in children {
            assert_ok(&c.wait_with_output().unwrap());
        }
    };
    run_all("online");
    let text = fs::read_to_string(&hosts).unwrap();
    assert_eq!(text.lines().count(), N as usize, "{text}");
    for d in 0..N {
        let name = if d == 0 {
            "dom5".to_string()
        } else {
            format!("dom5-{}", d + 1)
        };
        let line = format!(
            "00:16:3e:00:{d:02x}:05,set:xen-vif-{name},10.0.5.{},{name}",
            d + 1
        );
        assert!(text.lines().any(|l| l == line), "{line} in {text}");
    }
    assert_eq!(
        fs::read_to_string(&opts).unwrap().lines().count(),
        N as usize
    );
    run_all("offline");
    assert_eq!(fs::read_to_string(&hosts).unwrap(), "");
    assert_eq!(fs::read_to_string(&opts).unwrap(), "");
}

/// The DHCP server's pid file steers a SIGHUP from root: one owned by an unprivileged user may
/// only name that user's own process (dnsmasq hands its pid file to the user it drops to). One
/// that names root's process is refused, nothing is signalled, and the online is undone.
#[test]
fn a_pid_file_of_another_user_cannot_make_root_signal_its_process() {
    use std::os::unix::fs::{PermissionsExt, chown};
    let Some(sb) = Sandbox::new("nat-pid") else {
        return;
    };
    let dir = sb.path("dhcp");
    fs::create_dir_all(&dir).unwrap();
    let pid_file = dir.join("dnsmasq.pid");
    // Root's process, which would die of a SIGHUP it does not handle.
    let mut victim = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    fs::write(&pid_file, format!("{}\n", victim.id())).unwrap();
    fs::set_permissions(&pid_file, fs::Permissions::from_mode(0o644)).unwrap();
    chown(&pid_file, Some(65534), Some(65534)).unwrap();
    let cfg = sb.etc_dir().join("xen");
    fs::create_dir_all(&cfg).unwrap();
    fs::write(
        cfg.join("xen-vif.toml"),
        format!(
            "nat_dhcp_hosts = \"{}\"\nnat_dhcp_pid_file = \"{}\"\n",
            dir.join("hosts").display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let _g = guest(&sb, 0, None, "00:16:3e:00:00:05");
    let before = sb.snapshot();
    let o = sb.run(
        "vif-nat",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-nat", 5, 0),
    );
    assert_fails(&o);
    let he = sb.xs.read(&format!("{BE}/0/hotplug-error")).unwrap();
    assert!(
        he.contains("is owned by uid 65534 but names process") && he.contains("of another user"),
        "{he}"
    );
    assert_eq!(sb.snapshot(), before);
    assert_eq!(
        victim.try_wait().unwrap(),
        None,
        "the process was signalled"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}
