//! The anti-spoofing filter in the real kernel: guests are namespaces behind veths whose guest
//! end carries the backend's MAC; frames are sent raw (AF_PACKET) from inside a guest, so each
//! test controls every address, and listeners in dom0 and in the other guest say what arrived.

mod support;
use support::*;

use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use serde_json::Value;

const MAC5: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x05];
const MAC6: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x06];
const MAC_OTHER: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x99];

fn mac_str(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn parse_mac(s: &str) -> [u8; 6] {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// Run `f` on a thread inside network namespace `ns` (sockets it opens stay there).
fn in_ns<R: Send>(ns: &str, f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).unwrap();
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn listen(ns: &str, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        s
    })
}

/// Whether a datagram with `payload` arrives within `wait`.
fn arrived(sock: &UdpSocket, payload: &[u8], wait: Duration) -> bool {
    let end = std::time::Instant::now() + wait;
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            if &buf[..n] == payload {
                return true;
            }
        }
    }
    false
}

/// Send one Ethernet frame out of `ifname` in namespace `ns`.
fn send_frame(ns: &str, ifname: &str, frame: &[u8]) {
    let ifname = std::ffi::CString::new(ifname).unwrap();
    let frame = frame.to_vec();
    in_ns(ns, move || {
        use nix::libc;
        // SAFETY: a raw packet socket used for one sendto of a buffer we own, then closed;
        // sockaddr_ll is plain data, zeroed then filled.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(fd >= 0, "AF_PACKET socket");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = libc::if_nametoindex(ifname.as_ptr()) as i32;
            sll.sll_halen = 6;
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            libc::close(fd);
            assert_eq!(n, frame.len() as isize, "sendto");
        }
    });
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn eth(dst: [u8; 6], src: [u8; 6], ty: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend(src);
    f.extend(ty.to_be_bytes());
    f.extend(payload);
    f
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + payload.len();
    let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h.extend(src.octets());
    h.extend(dst.octets());
    let c = csum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend(sport.to_be_bytes());
    h.extend(dport.to_be_bytes());
    h.extend(((8 + payload.len()) as u16).to_be_bytes());
    h.extend([0, 0]); // no UDP checksum (IPv4 allows it)
    h.extend(payload);
    h
}

/// An IPv6 packet with `next` header and `body`, the transport checksum at `csum_at` filled.
fn ip6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    hop: u8,
    mut body: Vec<u8>,
    csum_at: usize,
) -> Vec<u8> {
    let mut pseudo = src.octets().to_vec();
    pseudo.extend(dst.octets());
    pseudo.extend((body.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, next]);
    pseudo.extend(&body);
    let c = csum(&pseudo);
    body[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((body.len() as u16).to_be_bytes());
    h.extend([next, hop]);
    h.extend(src.octets());
    h.extend(dst.octets());
    h.extend(body);
    h
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = sport.to_be_bytes().to_vec();
    b.extend(dport.to_be_bytes());
    b.extend(((8 + payload.len()) as u16).to_be_bytes());
    b.extend([0, 0]);
    b.extend(payload);
    ip6(src, dst, 17, 64, b, 6)
}

/// An unsolicited, overriding neighbour advertisement for `target` at `mac`.
fn na(src: Ipv6Addr, target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut b = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    b.extend(target.octets());
    b.extend([2, 1]);
    b.extend(mac);
    ip6(src, "ff02::1".parse().unwrap(), 58, 255, b, 2)
}

/// A gratuitous ARP request: `ip` is at `mac`.
fn garp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend(mac);
    a.extend(ip.octets());
    a.extend([0; 6]);
    a.extend(ip.octets());
    eth([0xff; 6], mac, 0x0806, &a)
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// dom0 with xenbr0 (10.0.0.1/24, 2001:db8::1/64) and guests behind vifD.0.
struct Lan {
    sb: Sandbox,
    br_mac: [u8; 6],
}

/// A sandbox for a test that reads the ruleset with `nft` (required in CI).
fn nft_sandbox(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    require(have_tool("nft"), "nft (nftables)").then_some(sb)
}

fn lan(tag: &str) -> Option<Lan> {
    let sb = nft_sandbox(tag)?;
    sb.bridge("xenbr0");
    sb.ip("addr add 10.0.0.1/24 dev xenbr0");
    sb.ip("addr add 2001:db8::1/64 dev xenbr0 nodad");
    let br_mac = parse_mac(&sb.mac("xenbr0"));
    Some(Lan { sb, br_mac })
}

/// A guest: netback's vifD.0 in dom0, its eth0 (with `mac`) in a namespace of its own.
fn guest(sb: &Sandbox, domid: u32, mac: [u8; 6], addrs: &[&str], ip_key: &str) -> Netns {
    let g = Netns::new(sb, &format!("g{domid}"));
    sb.ip(&format!(
        "link add vif{domid}.0 type veth peer name eth0 address {}",
        mac_str(&mac)
    ));
    sb.move_to("eth0", &g);
    g.ip("link set eth0 up");
    for a in addrs {
        g.ip(&format!("addr add {a} dev eth0 nodad"));
    }
    let mac = mac_str(&mac);
    let mut keys = vec![("bridge", "xenbr0"), ("mac", mac.as_str())];
    if !ip_key.is_empty() {
        keys.push(("ip", ip_key));
    }
    sb.backend(domid, 0, &keys);
    g
}

/// `nft ARGS` inside the sandbox.
fn nft(sb: &Sandbox, args: &str) -> (bool, String) {
    let o = sb.sh(&format!("nft {args}"));
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// The chains in xen-vif's netdev tables (one per vif, `xen-vif-<vif>`): name → (device, rule
/// count), from `nft list`. A chain that is not alone in its vif's table, or not named after
/// it, fails the test.
fn chains(sb: &Sandbox) -> std::collections::BTreeMap<String, (String, usize)> {
    let mut out = std::collections::BTreeMap::new();
    let (ok, text) = nft(sb, "list ruleset netdev");
    assert!(ok, "{text}");
    let mut table: Option<String> = None;
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line
            .strip_prefix("table netdev ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            table = name.strip_prefix("xen-vif-").map(str::to_string);
            continue;
        }
        let Some(vif) = &table else {
            continue;
        };
        if let Some(name) = line
            .strip_prefix("chain ")
            .and_then(|l| l.strip_suffix(" {"))
        {
            assert_eq!(name, vif, "chain {name} in table xen-vif-{vif}:\n{text}");
            current = Some(name.to_string());
            assert!(
                out.insert(name.to_string(), (String::new(), 0)).is_none(),
                "{text}"
            );
        } else if let Some(c) = &current {
            let entry = out.get_mut(c).unwrap();
            if let Some(rest) = line.strip_prefix("type filter hook ingress device \"") {
                entry.0 = rest.split('"').next().unwrap().to_string();
            } else if line == "}" {
                current = None;
                table = None;
            } else if !line.starts_with("comment ") && !line.is_empty() {
                entry.1 += 1;
            }
        }
    }
    out
}

const WAIT: Duration = Duration::from_millis(400);

#[test]
fn own_traffic_arrives_spoofed_traffic_does_not() {
    let Some(Lan { sb, br_mac }) = lan("spoof") else {
        return;
    };
    let ga = guest(
        &sb,
        5,
        MAC5,
        &["10.0.0.5/24", "2001:db8::5/64"],
        "10.0.0.5 2001:db8::5",
    );
    let gb = guest(
        &sb,
        6,
        MAC6,
        &["10.0.0.6/24", "2001:db8::6/64"],
        "10.0.0.6 2001:db8::6",
    );
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_ok(&sb.online("vif-bridge", 6, 0));
    let dom0_4 = listen(&sb.ns, "10.0.0.1:7000");
    let dom0_6 = listen(&sb.ns, "[2001:db8::1]:7000");
    let b_4 = listen(&gb.name, "10.0.0.6:7000");
    let b_6 = listen(&gb.name, "[2001:db8::6]:7000");

    let send4 = |src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, tag: &[u8]| {
        let p = udp4(v4(src), v4(dst), 5555, 7000, tag);
        send_frame(&ga.name, "eth0", &eth(dst_mac, src_mac, 0x0800, &p));
    };
    let send6 = |src: &str, dst: &str, dst_mac: [u8; 6], tag: &[u8]| {
        let p = udp6(v6(src), v6(dst), 5555, 7000, tag);
        send_frame(&ga.name, "eth0", &eth(dst_mac, MAC5, 0x86dd, &p));
    };

    // Its own addresses: to dom0 and to the other guest.
    send4(MAC5, br_mac, "10.0.0.5", "10.0.0.1", b"own4");
    assert!(arrived(&dom0_4, b"own4", WAIT * 5), "own IPv4 to dom0");
    send4(MAC5, MAC6, "10.0.0.5", "10.0.0.6", b"own4b");
    assert!(
        arrived(&b_4, b"own4b", WAIT * 5),
        "own IPv4 to the other guest"
    );
    send6("2001:db8::5", "2001:db8::1", br_mac, b"own6");
    assert!(arrived(&dom0_6, b"own6", WAIT * 5), "own IPv6 to dom0");
    send6("2001:db8::5", "2001:db8::6", MAC6, b"own6b");
    assert!(
        arrived(&b_6, b"own6b", WAIT * 5),
        "own IPv6 to the other guest"
    );

    // The neighbour's and unassigned addresses.
    send4(MAC5, br_mac, "10.0.0.6", "10.0.0.1", b"nb4");
    send4(MAC5, br_mac, "10.0.0.66", "10.0.0.1", b"un4");
    send4(MAC5, MAC6, "10.0.0.66", "10.0.0.6", b"un4b");
    send6("2001:db8::6", "2001:db8::1", br_mac, b"nb6");
    send6("2001:db8::66", "2001:db8::1", br_mac, b"un6");
    send6("2001:db8::66", "2001:db8::6", MAC6, b"un6b");
    // Its own address from a changed MAC.
    send4(MAC_OTHER, br_mac, "10.0.0.5", "10.0.0.1", b"mac4");
    assert!(
        !arrived(&dom0_4, b"nb4", WAIT),
        "neighbour's IPv4 reached dom0"
    );
    assert!(
        !arrived(&dom0_4, b"un4", WAIT),
        "unassigned IPv4 reached dom0"
    );
    assert!(
        !arrived(&b_4, b"un4b", WAIT),
        "unassigned IPv4 reached the other guest"
    );
    assert!(
        !arrived(&dom0_6, b"nb6", WAIT),
        "neighbour's IPv6 reached dom0"
    );
    assert!(
        !arrived(&dom0_6, b"un6", WAIT),
        "unassigned IPv6 reached dom0"
    );
    assert!(
        !arrived(&b_6, b"un6b", WAIT),
        "unassigned IPv6 reached the other guest"
    );
    assert!(
        !arrived(&dom0_4, b"mac4", WAIT),
        "a changed MAC reached dom0"
    );

    // The control: without the filter the same spoofed frame arrives.
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    sb.ip("link set vif5.0 master xenbr0");
    sb.ip("link set vif5.0 up");
    send4(MAC5, br_mac, "10.0.0.66", "10.0.0.1", b"un4-unfiltered");
    assert!(arrived(&dom0_4, b"un4-unfiltered", WAIT * 5), "control");
}

#[test]
fn arp_and_ndp_only_for_its_own_addresses() {
    let Some(Lan { sb, .. }) = lan("arpnd") else {
        return;
    };
    let ga = guest(
        &sb,
        5,
        MAC5,
        &["10.0.0.5/24", "2001:db8::5/64"],
        "10.0.0.5 2001:db8::5",
    );
    let _gb = guest(
        &sb,
        6,
        MAC6,
        &["10.0.0.6/24", "2001:db8::6/64"],
        "10.0.0.6 2001:db8::6",
    );
    // dom0 at its most trusting: gratuitous ARP updates (and creates) entries.
    sb.set_sysctl("/proc/sys/net/ipv4/conf/xenbr0/arp_accept", "1");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_ok(&sb.online("vif-bridge", 6, 0));
    // Resolution of its own addresses works (ARP and NS/NA through the filter), and of the
    // neighbour's.
    for dst in ["10.0.0.5", "2001:db8::5", "10.0.0.6", "2001:db8::6"] {
        assert!(sb.ping(dst), "dom0 reaches {dst}");
    }
    let lladdr = |ip: &str| {
        let out = sb.ip(&format!("neigh show {ip} dev xenbr0"));
        out.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(lladdr("10.0.0.5"), mac_str(&MAC5));
    assert_eq!(lladdr("2001:db8::5"), mac_str(&MAC5));
    // Past the neighbour table's lock time, so an update would be taken.
    std::thread::sleep(Duration::from_millis(1200));
    // What dom0 believes right after each claim (the neighbour itself may answer later).
    let claim_neighbour = || {
        send_frame(&ga.name, "eth0", &garp(MAC5, v4("10.0.0.6")));
        std::thread::sleep(Duration::from_millis(200));
        let arp = lladdr("10.0.0.6");
        let p = na(v6("2001:db8::5"), v6("2001:db8::6"), MAC5);
        send_frame(
            &ga.name,
            "eth0",
            &eth([0x33, 0x33, 0, 0, 0, 1], MAC5, 0x86dd, &p),
        );
        let ll = na(v6("fe80::216:3eff:fe00:5"), v6("2001:db8::6"), MAC5);
        send_frame(
            &ga.name,
            "eth0",
            &eth([0x33, 0x33, 0, 0, 0, 1], MAC5, 0x86dd, &ll),
        );
        std::thread::sleep(Duration::from_millis(200));
        (arp, lladdr("2001:db8::6"))
    };
    let (arp, nd) = claim_neighbour();
    assert_eq!(arp, mac_str(&MAC6), "gratuitous ARP for the neighbour");
    assert_eq!(nd, mac_str(&MAC6), "NA for the neighbour");

    // The control: without the filter the same frames take the neighbour's addresses.
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    sb.ip("link set vif5.0 master xenbr0");
    sb.ip("link set vif5.0 up");
    std::thread::sleep(Duration::from_millis(1200));
    // The neighbour's own answers (its entry refreshed under a loaded machine) restart the
    // table's lock time and can make one claim arrive too early: claim again until it takes,
    // for a few seconds. The filtered claims above never take, however long.
    let mut seen = claim_neighbour();
    for _ in 0..10 {
        if seen == (mac_str(&MAC5), mac_str(&MAC5)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        seen = claim_neighbour();
    }
    let (arp, nd) = seen;
    assert_eq!(arp, mac_str(&MAC5), "control: ARP");
    assert_eq!(nd, mac_str(&MAC5), "control: NA");
}

#[test]
fn a_dhcp_discover_passes() {
    let Some(Lan { sb, br_mac }) = lan("dhcp") else {
        return;
    };
    // A guest with no address yet; a DHCP client sends from 0.0.0.0:68 (dhclient and systemd
    // do it on a packet socket, as here).
    let g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let server = listen(&sb.ns, "0.0.0.0:67");
    let discover = udp4(v4("0.0.0.0"), v4("255.255.255.255"), 68, 67, b"discover");
    send_frame(&g.name, "eth0", &eth([0xff; 6], MAC5, 0x0800, &discover));
    assert!(arrived(&server, b"discover", WAIT * 5), "DHCP discover");
    // The same from a plain UDP socket bound to 0.0.0.0:68 on the guest's NIC, which has no
    // address yet: the kernel sends from 0.0.0.0.
    in_ns(&g.name, || {
        let s = UdpSocket::bind("0.0.0.0:68").unwrap();
        s.set_broadcast(true).unwrap();
        nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from("eth0"),
        )
        .unwrap();
        s.send_to(b"discover-udp", "255.255.255.255:67").unwrap();
    });
    assert!(
        arrived(&server, b"discover-udp", WAIT * 5),
        "DHCP discover, UDP socket"
    );
    // 0.0.0.0 is for the DHCP broadcast only.
    let other = udp4(v4("0.0.0.0"), v4("10.0.0.1"), 68, 67, b"unicast");
    send_frame(&g.name, "eth0", &eth(br_mac, MAC5, 0x0800, &other));
    assert!(!arrived(&server, b"unicast", WAIT), "0.0.0.0 unicast");
}

#[test]
fn several_addresses_and_prefixes() {
    let Some(Lan { sb, br_mac }) = lan("several") else {
        return;
    };
    let g = guest(
        &sb,
        5,
        MAC5,
        &["10.0.0.5/24"],
        "10.0.0.5 10.0.0.64/29 2001:db8::5 2001:db8:1::/64",
    );
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let d4 = listen(&sb.ns, "10.0.0.1:7000");
    let d6 = listen(&sb.ns, "[2001:db8::1]:7000");
    let send4 = |src: &str, tag: &[u8]| {
        let p = udp4(v4(src), v4("10.0.0.1"), 5555, 7000, tag);
        send_frame(&g.name, "eth0", &eth(br_mac, MAC5, 0x0800, &p));
    };
    let send6 = |src: &str, tag: &[u8]| {
        let p = udp6(v6(src), v6("2001:db8::1"), 5555, 7000, tag);
        send_frame(&g.name, "eth0", &eth(br_mac, MAC5, 0x86dd, &p));
    };
    send4("10.0.0.5", b"a");
    assert!(arrived(&d4, b"a", WAIT * 5));
    send4("10.0.0.70", b"b");
    assert!(arrived(&d4, b"b", WAIT * 5), "inside 10.0.0.64/29");
    send4("10.0.0.72", b"c");
    assert!(!arrived(&d4, b"c", WAIT), "outside 10.0.0.64/29");
    send6("2001:db8:1::77", b"d");
    assert!(arrived(&d6, b"d", WAIT * 5), "inside 2001:db8:1::/64");
    send6("2001:db8:2::77", b"e");
    assert!(!arrived(&d6, b"e", WAIT), "outside");
    // The chain as dry-run shows it: the same rules, in nft syntax.
    let o = sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &[]);
    let _ = o; // (the chain is in place: dry-run has no filter step to show)
    let (_, listing) = nft(&sb, "list table netdev xen-vif-vif5.0");
    assert!(listing.contains("10.0.0.64/29"), "{listing}");
}

#[test]
fn dry_run_prints_the_chain_in_nft_syntax() {
    let Some(Lan { sb, .. }) = lan("dryrun") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5 2001:db8::5");
    let o = sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &[]);
    assert_ok(&o);
    let out = stdout(&o);
    for want in [
        "nft -f - <<'EOF'\ntable netdev xen-vif-vif5.0 {\n\tchain vif5.0 {\n",
        "type filter hook ingress device \"vif5.0\" priority -500; policy accept;",
        "ether saddr != 00:16:3e:00:00:05 drop",
        "ether type ip ip saddr 10.0.0.5 accept",
        "ether type ip6 ip6 saddr 2001:db8::5 accept",
        "echo 0 > /proc/sys/net/ipv6/conf/vif5.0/accept_ra",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(chains(&sb).is_empty(), "dry-run changed nothing");
    // A table is there (somebody deleted its chain): replaced in the same transaction.
    assert!(nft(&sb, "add table netdev xen-vif-vif5.0").0);
    let out = stdout(&sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &[]));
    assert!(
        out.contains(
            "nft -f - <<'EOF'\nadd table netdev xen-vif-vif5.0\n\
             delete table netdev xen-vif-vif5.0\ntable netdev xen-vif-vif5.0 {\n"
        ),
        "{out}"
    );
}

#[test]
fn the_dry_run_script_is_what_the_kernel_gets() {
    let Some(Lan { sb, .. }) = lan("drynft") else {
        return;
    };
    // MAC only: `icmpv6 taddr`, in the address rules, is newer than some hosts' nft (1.0.6).
    let _g = guest(&sb, 5, MAC5, &[], "");
    // A leftover table with a stray chain in it: the script replaces the whole table.
    assert!(nft(&sb, "add table netdev xen-vif-vif5.0").0);
    assert!(nft(&sb, "add chain netdev xen-vif-vif5.0 stray").0);
    let o = sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &[]);
    assert_ok(&o);
    let out = stdout(&o);
    // nft runs the script (twice: it replaces, never adds), and xen-vif then finds its table
    // exactly as it plans it, alone.
    let script = out
        .split("nft -f - <<'EOF'\n")
        .nth(1)
        .and_then(|s| s.split("\nEOF").next())
        .unwrap_or_else(|| panic!("no nft script in\n{out}"));
    std::fs::write(sb.path("filter.nft"), script).unwrap();
    for _ in 0..2 {
        let (ok, text) = nft(&sb, &format!("-f {}", sb.path("filter.nft").display()));
        assert!(ok, "{text}\n{script}");
    }
    let o = sb.run("xen-vif", &["status", "--json"], &[]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["filter"], "on", "{v}");
    assert_eq!(
        chains(&sb).into_iter().collect::<Vec<_>>(),
        [("vif5.0".to_string(), ("vif5.0".to_string(), 1))]
    );
}

#[test]
fn offline_leaves_the_ruleset_exactly_as_before_and_online_twice_is_the_same() {
    let Some(Lan { sb, .. }) = lan("ruleset") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &["10.0.0.5/24"], "10.0.0.5 2001:db8::5");
    // Somebody else's rules, and another vif's table (nothing is shared: left alone).
    assert!(nft(&sb, "add table inet other").0);
    assert!(
        nft(
            &sb,
            "add chain inet other input '{ type filter hook input priority 0 ; }'"
        )
        .0
    );
    assert!(nft(&sb, "add rule inet other input tcp dport 22 accept").0);
    assert!(nft(&sb, "add table netdev xen-vif-vif9.0").0);
    let before = nft(&sb, "list ruleset").1;
    let ra_before = sb.sysctl("/proc/sys/net/ipv6/conf/vif5.0/accept_ra");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let first = nft(&sb, "list ruleset").1;
    assert!(first.contains("chain vif5.0"), "{first}");
    assert_eq!(sb.sysctl("/proc/sys/net/ipv6/conf/vif5.0/accept_ra"), "0");
    assert_eq!(
        sb.sysctl("/proc/sys/net/ipv6/conf/vif5.0/accept_redirects"),
        "0"
    );
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(first, nft(&sb, "list ruleset").1, "online twice");
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_eq!(before, nft(&sb, "list ruleset").1);
    assert_eq!(
        sb.sysctl("/proc/sys/net/ipv6/conf/vif5.0/accept_ra"),
        ra_before
    );
    assert_ok(&sb.offline("vif-bridge", 5, 0));
}

#[test]
fn a_mac_only_chain_without_ip() {
    let Some(Lan { sb, br_mac }) = lan("maconly") else {
        return;
    };
    let g = guest(&sb, 5, MAC5, &["10.0.0.5/24"], "");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(chains(&sb).get("vif5.0"), Some(&("vif5.0".to_string(), 1)));
    let d4 = listen(&sb.ns, "10.0.0.1:7000");
    let p = udp4(v4("10.0.0.77"), v4("10.0.0.1"), 5555, 7000, b"any");
    send_frame(&g.name, "eth0", &eth(br_mac, MAC5, 0x0800, &p));
    assert!(arrived(&d4, b"any", WAIT * 5), "no ip: no address filter");
    let p = udp4(v4("10.0.0.77"), v4("10.0.0.1"), 5555, 7000, b"mac");
    send_frame(&g.name, "eth0", &eth(br_mac, MAC_OTHER, 0x0800, &p));
    assert!(!arrived(&d4, b"mac", WAIT), "the MAC rule still applies");
}

/// Guest 5 of a routed mode: netback's vif5.0 in dom0, its eth0 with `MAC5` and `addr` (no
/// bridge) in a namespace of its own.
fn routed_guest(sb: &Sandbox, addr: &str) -> Netns {
    let g = Netns::new(sb, "g5");
    sb.ip(&format!(
        "link add vif5.0 type veth peer name eth0 address {}",
        mac_str(&MAC5)
    ));
    sb.move_to("eth0", &g);
    g.ip("link set eth0 up");
    g.ip(&format!("addr add {addr} dev eth0 nodad"));
    g
}

/// From the routed guest `g` (vif5.0, MAC5) to `dst`:7000 in dom0: a datagram from `own`
/// arrives, one from `other` (another guest's address) does not. The listener and the vif's
/// MAC, for more frames.
fn routed_own_passes_other_does_not(
    sb: &Sandbox,
    g: &Netns,
    own: &str,
    other: &str,
    dst: &str,
) -> (UdpSocket, [u8; 6]) {
    let vif_mac = parse_mac(&sb.mac("vif5.0"));
    let d4 = listen(&sb.ns, &format!("{dst}:7000"));
    let p = udp4(v4(own), v4(dst), 5555, 7000, b"own");
    send_frame(&g.name, "eth0", &eth(vif_mac, MAC5, 0x0800, &p));
    assert!(arrived(&d4, b"own", WAIT * 5), "own address {own}");
    let p = udp4(v4(other), v4(dst), 5555, 7000, b"spoof");
    send_frame(&g.name, "eth0", &eth(vif_mac, MAC5, 0x0800, &p));
    assert!(
        !arrived(&d4, b"spoof", WAIT),
        "another guest's address {other}"
    );
    (d4, vif_mac)
}

#[test]
fn route_mode_filters_and_pins_neighbours() {
    let Some(sb) = nft_sandbox("route") else {
        return;
    };
    sb.bridge("gw0");
    sb.ip("addr add 10.9.0.1/29 dev gw0");
    sb.set_sysctl("/proc/sys/net/ipv4/ip_forward", "1");
    let g = routed_guest(&sb, "10.9.0.2/29");
    sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-route"),
            ("ip", "10.9.0.2"),
            ("gatewaydev", "gw0"),
            ("mac", &mac_str(&MAC5)),
        ],
    );
    let mut env = sb.libxl_env("vif-route", 5, 0);
    env.retain(|(k, _)| k != "netdev");
    env.push(("netdev".into(), "gw0".into()));
    let before = nft(&sb, "list ruleset").1;
    let neigh_before = sb.ip("neigh show dev vif5.0");
    assert_ok(&sb.run("vif-route", &["online", "type_if=vif"], &env));
    assert_eq!(
        chains(&sb).get("vif5.0").map(|c| c.0.as_str()),
        Some("vif5.0")
    );
    let neigh = sb.ip("neigh show dev vif5.0");
    assert!(
        neigh.contains(&format!("10.9.0.2 lladdr {} PERMANENT", mac_str(&MAC5))),
        "{neigh}"
    );
    routed_own_passes_other_does_not(&sb, &g, "10.9.0.2", "10.9.0.3", "10.9.0.1");
    assert!(g.ping("10.9.0.1"), "the guest reaches its gateway");
    // Connections of the guest's address, and one of somebody else's.
    let ct = |args: &str| sb.sh(&format!("conntrack {args}"));
    for args in [
        "-I -p udp -s 10.9.0.2 -d 10.9.0.1 --sport 1000 --dport 53 -t 100",
        "-I -p tcp -s 198.51.100.7 -d 10.9.0.2 --sport 40000 --dport 80 --state ESTABLISHED -t 100",
        "-I -p udp -s 10.9.0.4 -d 10.9.0.1 --sport 1000 --dport 53 -t 100",
    ] {
        let o = ct(args);
        assert!(o.status.success(), "conntrack {args}: {}", stderr(&o));
    }
    assert_ok(&sb.run("vif-route", &["offline", "type_if=vif"], &env));
    let left = stdout(&ct("-L"));
    assert!(!left.contains("10.9.0.2"), "{left}");
    assert!(left.contains("src=10.9.0.4"), "{left}");
    // The vif's table went with it: nothing left.
    let after = nft(&sb, "list ruleset").1;
    assert!(before.is_empty(), "{before}");
    assert_eq!(after, before);
    assert_eq!(sb.ip("neigh show dev vif5.0").trim(), neigh_before.trim());
}

#[test]
fn nat_mode_filters_the_derived_address() {
    let Some(sb) = nft_sandbox("nat") else {
        return;
    };
    // No `ip`: the guest's address is stock vif-nat's 10.0.<domid>.<handle+1>, its router .128.
    let g = routed_guest(&sb, "10.0.5.1/16");
    sb.backend(
        5,
        0,
        &[
            ("script", "/etc/xen/scripts/vif-nat"),
            ("mac", &mac_str(&MAC5)),
        ],
    );
    let env = sb.libxl_env("vif-nat", 5, 0);
    let before = nft(&sb, "list ruleset").1;
    assert_ok(&sb.run("vif-nat", &["online", "type_if=vif"], &env));
    assert_eq!(sb.addrs("vif5.0"), ["10.0.5.128/32"]);
    assert_eq!(
        chains(&sb).get("vif5.0").map(|c| c.0.as_str()),
        Some("vif5.0")
    );
    // Reverse-path filtering would drop the foreign source too: only the filter is tested.
    for conf in ["all", "vif5.0"] {
        sb.set_sysctl(&format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"), "0");
    }
    let (d4, vif_mac) =
        routed_own_passes_other_does_not(&sb, &g, "10.0.5.1", "10.0.6.1", "10.0.5.128");
    let p = udp4(v4("10.0.5.1"), v4("10.0.5.128"), 5555, 7000, b"mac");
    send_frame(
        &g.name,
        "eth0",
        &eth(vif_mac, [0x00, 0x16, 0x3e, 9, 9, 9], 0x0800, &p),
    );
    assert!(!arrived(&d4, b"mac", WAIT), "another MAC");
    assert_ok(&sb.run("vif-nat", &["offline", "type_if=vif"], &env));
    assert_eq!(nft(&sb, "list ruleset").1, before);
}

#[test]
fn the_hvm_tap_gets_its_own_chain() {
    let Some(Lan { sb, .. }) = lan("tap") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    sb.netback_vif("vif5.0-emu", "t5.0");
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("INTERFACE".into(), "vif5.0-emu".into()));
    assert_ok(&sb.run("vif-bridge", &["add", "type_if=tap"], &env));
    let c = chains(&sb);
    assert_eq!(
        c.get("vif5.0-emu").map(|c| c.0.as_str()),
        Some("vif5.0-emu")
    );
    assert!(!c.contains_key("vif5.0"));
    assert_ok(&sb.run("vif-bridge", &["remove", "type_if=tap"], &env));
    assert!(chains(&sb).is_empty());
}

#[test]
fn a_renamed_vif_keeps_its_chain_name_and_hooks_the_new_name() {
    let Some(Lan { sb, .. }) = lan("rename") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    sb.xs
        .write("/local/domain/0/backend/vif/5/0/vifname", "web0");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(
        chains(&sb).get("vif5.0").map(|c| c.0.as_str()),
        Some("web0")
    );
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert!(chains(&sb).is_empty());
}

#[test]
fn switched_off_no_chain_and_check_config_says_so() {
    let Some(Lan { sb, .. }) = lan("off") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    std::fs::create_dir_all(sb.etc_dir().join("xen")).unwrap();
    std::fs::write(sb.etc_dir().join("xen/xen-vif.toml"), "antispoof = false\n").unwrap();
    let o = sb.run("xen-vif", &["check-config"], &[]);
    assert_ok(&o);
    assert!(stdout(&o).contains("antispoof = false"), "{}", stdout(&o));
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(chains(&sb).is_empty());
    let o = sb.run("xen-vif", &["status", "--json"], &[]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["filter"], "off");
}

#[test]
fn status_shows_the_filter_and_what_it_needs() {
    let Some(Lan { sb, .. }) = lan("status") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let status = || -> Value {
        let o = sb.run("xen-vif", &["status", "--json"], &[]);
        assert_ok(&o);
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let v = status();
    assert_eq!(v[0]["filter"], "on");
    assert!(v[0]["differences"].as_array().unwrap().is_empty(), "{v}");
    // Somebody deletes a rule.
    assert!(nft(&sb, "flush chain netdev xen-vif-vif5.0 vif5.0").0);
    let v = status();
    assert_eq!(v[0]["filter"], "stale");
    let diffs = v[0]["differences"].to_string();
    assert!(
        diffs.contains(
            "needs: nft add table netdev xen-vif-vif5.0 with chain vif5.0 on vif5.0 (18 rules)"
        ),
        "{diffs}"
    );
    let o = sb.run("xen-vif", &["status"], &[]);
    assert!(stdout(&o).contains("FILTER"), "{}", stdout(&o));
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(status()[0]["filter"], "on");
    // Somebody deletes the chain, or the whole table.
    assert!(nft(&sb, "delete chain netdev xen-vif-vif5.0 vif5.0").0);
    assert_eq!(status()[0]["filter"], "missing");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(nft(&sb, "delete table netdev xen-vif-vif5.0").0);
    assert_eq!(status()[0]["filter"], "missing");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(status()[0]["filter"], "on");
}

#[test]
fn two_hundred_vifs_32_at_a_time_lose_no_chain() {
    let Some(Lan { sb, .. }) = lan("many") else {
        return;
    };
    let sb = &sb;
    let domids: Vec<u32> = (1..=200).collect();
    let mut batch = String::new();
    for d in &domids {
        batch.push_str(&format!("link add vif{d}.0 type veth peer name g{d}\n"));
    }
    std::fs::write(sb.path("links.batch"), batch).unwrap();
    sb.ip(&format!("-batch {}", sb.path("links.batch").display()));
    for d in &domids {
        let mac = format!("00:16:3e:00:{:02x}:{:02x}", d >> 8, d & 0xff);
        let ip = format!("10.1.{}.{}", d / 200, d % 200 + 1);
        sb.backend(*d, 0, &[("bridge", "xenbr0"), ("mac", &mac), ("ip", &ip)]);
    }
    for chunk in domids.chunks(32) {
        let results: Vec<_> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|d| s.spawn(move || sb.online("vif-bridge", *d, 0)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (d, o) in chunk.iter().zip(&results) {
            assert!(o.status.success(), "vif{d}.0 online: {}", stderr(o));
        }
    }
    let c = chains(sb);
    assert_eq!(c.len(), 200);
    let rules = c["vif1.0"].1;
    for d in &domids {
        let name = format!("vif{d}.0");
        assert_eq!(c.get(&name), Some(&(name.clone(), rules)), "{name}");
    }
    for chunk in domids.chunks(32) {
        std::thread::scope(|s| {
            for d in chunk {
                s.spawn(move || assert_ok(&sb.offline("vif-bridge", *d, 0)));
            }
        });
    }
    assert!(chains(sb).is_empty());
}

#[test]
fn killed_mid_online_the_next_online_converges() {
    let Some(Lan { sb, .. }) = lan("sigkill") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5 2001:db8::5");
    let hooks = sb.etc_dir().join("xen/scripts/vif-post.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("10-sleep.hook");
    std::fs::write(&hook, "sleep 30\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = sb
        .script_command(
            &[],
            "vif-bridge",
            &["online", "type_if=vif"],
            &sb.libxl_env("vif-bridge", 5, 0),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the chain (the hook runs after the changes), then kill.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while chains(&sb).is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!chains(&sb).is_empty(), "the chain was never added");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    // Tamper with the chain, too: the rerun must replace it, not add a second set of rules.
    assert!(nft(&sb, "add rule netdev xen-vif-vif5.0 vif5.0 accept").0);
    std::fs::remove_file(&hook).unwrap();
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let o = sb.run("xen-vif", &["status", "--json"], &[]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["filter"], "on", "{v}");
    let c = chains(&sb);
    assert_eq!(c.len(), 1);
    // Reference: a fresh online of an identical guest.
    let _g6 = guest(&sb, 6, MAC6, &[], "10.0.0.5 2001:db8::5");
    assert_ok(&sb.online("vif-bridge", 6, 0));
    let c = chains(&sb);
    assert_eq!(c["vif5.0"].1, c["vif6.0"].1);
}

/// `program` with socket(AF_NETLINK, _, NETLINK_NETFILTER) failing EPROTONOSUPPORT, as on a
/// kernel built without nfnetlink (a seccomp filter installed just before exec).
fn without_nfnetlink(cmd: &mut std::process::Command) {
    use nix::libc;
    use std::os::unix::process::CommandExt;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    // seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 i (low half on x86_64).
    let filter = vec![
        stmt(ld, 4),
        jeq(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ld, 0),
        jeq(libc::SYS_socket as u32, 0, 5),
        stmt(ld, 16),
        jeq(libc::AF_NETLINK as u32, 0, 3),
        stmt(ld, 32),
        jeq(12, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPROTONOSUPPORT as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    // SAFETY: prctl(2) on the child's own state between fork and exec; `filter` outlives the
    // call (moved into the closure).
    unsafe {
        cmd.pre_exec(move || {
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr() as *mut libc::sock_filter,
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn a_kernel_without_nf_tables_fails_online_with_one_line_naming_the_switch() {
    let Some(Lan { sb, .. }) = lan("nonft") else {
        return;
    };
    let _g = guest(&sb, 5, MAC5, &[], "10.0.0.5");
    let before = sb.snapshot();
    let mut cmd = sb.script_command(
        &[],
        "vif-bridge",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-bridge", 5, 0),
    );
    without_nfnetlink(&mut cmd);
    let o = cmd.output().unwrap();
    assert_fails(&o);
    let error = sb
        .xs
        .read("/local/domain/0/backend/vif/5/0/hotplug-error")
        .unwrap();
    assert!(
        error.starts_with("vif-bridge online vif5.0: ")
            && error.contains("kernel has no nf_tables netdev ingress filtering")
            && error.contains("set antispoof = false in /etc/xen/xen-vif.toml"),
        "{error}"
    );
    assert!(!error.contains('\n'));
    // Nothing half done: the run's changes were taken back.
    assert_eq!(
        without(&before, "vif5.0"),
        without(&sb.snapshot(), "vif5.0")
    );
    assert_eq!(sb.master("vif5.0"), None);
    // Offline of such a host succeeds (nothing to remove).
    let mut cmd = sb.script_command(
        &[],
        "vif-bridge",
        &["offline", "type_if=vif"],
        &sb.libxl_env("vif-bridge", 5, 0),
    );
    without_nfnetlink(&mut cmd);
    assert_ok(&cmd.output().unwrap());
    // And switched off, online works there.
    std::fs::create_dir_all(sb.etc_dir().join("xen")).unwrap();
    std::fs::write(sb.etc_dir().join("xen/xen-vif.toml"), "antispoof = false\n").unwrap();
    let mut cmd = sb.script_command(
        &[],
        "vif-bridge",
        &["online", "type_if=vif"],
        &sb.libxl_env("vif-bridge", 5, 0),
    );
    without_nfnetlink(&mut cmd);
    assert_ok(&cmd.output().unwrap());
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
}

/// The filter's added cost per online+offline in a process that keeps its sockets (the
/// resident daemon's case, without the one-shot run's close-time grace period): one vif cycled
/// `BENCH_CYCLES` times by the library in this process, with no filter, a MAC-only chain, and
/// the chain for one IPv4 and one IPv6 address, in alternating rounds; each step kind timed.
/// Another netdev ingress hook stays in place, as on a host with other guests (the kernel
/// switches its ingress code on and off when the first hook comes and the last one goes).
///   sudo cargo test --release --test antispoof -- --ignored --nocapture bench_filter
#[test]
#[ignore]
fn bench_filter_cost_in_one_process() {
    use std::collections::BTreeMap;
    use std::time::Instant;
    use xen_vif::invocation::Command;
    use xen_vif::{deadline, netlink::Netlink};
    let Some(sb) = nft_sandbox("fcost") else {
        return;
    };
    sb.bridge("xenbr0");
    sb.netback_vif("vif1.0", "g1");
    let (ok, out) = nft(
        &sb,
        "'add table netdev other; add chain netdev other c { type filter hook ingress device xenbr0 priority 0; }'",
    );
    assert!(ok, "{out}");
    let cycles: u32 = std::env::var("BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let hp = |command, antispoof, ip: &str| bridge_hotplug(1, command, antispoof, ip, MAC5);
    let cases = [
        ("no filter (`antispoof = false`)", false, ""),
        ("MAC only (no `ip`): 1 rule", true, ""),
        (
            "`ip=10.0.0.5 2001:db8::5`: 22 rules",
            true,
            "10.0.0.5 2001:db8::5",
        ),
    ];
    // Per case: each round's cycle time, and each step kind's total over all rounds (µs).
    let mut cycle: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut parts: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new(); cases.len()];
    in_ns(&sb.ns, || {
        let _budget = deadline::Deadline::after(Duration::from_secs(3600)).enter();
        let mut nl = Netlink::open().unwrap();
        for _round in 0..3 {
            for (i, (_, antispoof, ip)) in cases.iter().enumerate() {
                let t = Instant::now();
                for _ in 0..cycles {
                    for c in [Command::Online, Command::Offline] {
                        let h = hp(c, *antispoof, ip);
                        let t0 = Instant::now();
                        let steps = xen_vif::modes::plan(&mut nl, &NoStore, &h).unwrap();
                        *parts[i]
                            .entry(format!("{c:?}: observe and plan"))
                            .or_default() += t0.elapsed().as_secs_f64();
                        for st in &steps {
                            let t1 = Instant::now();
                            let _undo =
                                xen_vif::plan::apply(&mut nl, &NoStore, std::slice::from_ref(st))
                                    .unwrap();
                            let label = st.label();
                            let kind = label.split_whitespace().take(3).collect::<Vec<_>>();
                            *parts[i]
                                .entry(format!("{c:?}: {}", kind.join(" ")))
                                .or_default() += t1.elapsed().as_secs_f64();
                        }
                    }
                }
                cycle[i].push(t.elapsed().as_secs_f64() * 1e6 / cycles as f64);
            }
        }
    });
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "\n| one vif, {cycles} cycles x 3 rounds | online+offline, µs (median round) | rounds | added by the filter |\n|---|---|---|---|"
    );
    for (i, (label, _, _)) in cases.iter().enumerate() {
        let rounds: Vec<String> = cycle[i].iter().map(|c| format!("{c:.0}")).collect();
        println!(
            "| {label} | {:.0} | {} | {:.0} |",
            median(&cycle[i]),
            rounds.join(" "),
            median(&cycle[i]) - median(&cycle[0])
        );
    }
    for (i, (label, _, _)) in cases.iter().enumerate() {
        println!("\n{label}, µs per cycle by step:");
        for (k, v) in &parts[i] {
            println!("  {:>7.1}  {k}", v * 1e6 / (3 * cycles) as f64);
        }
    }
}
