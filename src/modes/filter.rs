//! Anti-spoofing, shared by every mode: what a guest may send, as one nf_tables base chain on
//! the ingress hook of its vif (or tap), alone in a table of its own, plus the plug hygiene that goes with it (no router
//! advertisements or redirects accepted on the vif, pinned neighbour entries in route mode,
//! the guest's conntrack entries forgotten on offline).
//!
//! The ingress hook sees every frame the guest sends before the bridge, routing, NAT or Open
//! vSwitch's kernel datapath does, so one chain serves every mode. `ruleset` is pure (golden
//! tests below); `observe_vif` reads the kernel; `plan_online`/`plan_offline` turn the two
//! into steps, purely.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::addr::GuestAddr;
use crate::ifname::IfName;
use crate::invocation::{Hotplug, Mode};
use crate::netlink::{Link, Neighbour, Netlink};
use crate::nftables::{
    ChainState, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, IngressChain, Mac,
    Match, Nfnetlink, Prefix, Rule, Verdict,
};
use crate::plan::Step;
use crate::sysctl;

/// Each vif's table (family netdev) is this and netback's name for the device: `xen-vif-vif5.0`.
/// One table per vif, not one for all: the kernel validates the whole table a transaction
/// touches, so in a shared table every vif's online would walk every other vif's rules; and
/// with nothing shared, a vif's online and offline never race another vif's. The name fits any
/// kernel's limit (32 bytes before Linux 4.16, 256 since: 8 + at most 15).
pub const TABLE_PREFIX: &str = "xen-vif-";
/// The table of the vif netback calls `kernel_name`.
pub fn table(kernel_name: &str) -> String {
    format!("{TABLE_PREFIX}{kernel_name}")
}

/// The hook priority: the filter's place among other netdev ingress chains on the same device.
pub const PRIORITY: i32 = -500;
/// The IPv6 sysctls a guest must not steer on its vif.
pub const IPV6_HYGIENE: [&str; 2] = ["accept_ra", "accept_redirects"];

const ICMP6_RS: u8 = 133;
const ICMP6_RA: u8 = 134;
const ICMP6_NS: u8 = 135;
const ICMP6_NA: u8 = 136;
const ICMP6_REDIRECT: u8 = 137;
const MLD1_REPORT: u8 = 131;
const MLD2_REPORT: u8 = 143;

/// All link-local addresses (see README: random interface identifiers forbid pinning the
/// EUI-64 one).
fn link_local() -> Prefix {
    Prefix {
        ip: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        len: 64,
    }
}

fn prefix(g: &GuestAddr) -> Prefix {
    Prefix {
        ip: g.ip,
        len: g.prefix_len,
    }
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

/// What the guest behind `device` may send. `chain` is netback's name for the device (it
/// survives a `vifname` rename), `device` its current name. No `mac` and no `ip`: no filter.
pub fn ruleset(
    chain: &str,
    device: &str,
    mac: Option<Mac>,
    ip: &[GuestAddr],
) -> Option<IngressChain> {
    if mac.is_none() && ip.is_empty() {
        return None;
    }
    let mut rules = Vec::new();
    if let Some(mac) = mac {
        rules.push(rule(vec![Match::EtherSrc { mac, ne: true }], Verdict::Drop));
    }
    if !ip.is_empty() {
        let v4: Vec<Prefix> = ip.iter().filter(|g| g.ip.is_ipv4()).map(prefix).collect();
        let mut v6: Vec<Prefix> = ip.iter().filter(|g| g.ip.is_ipv6()).map(prefix).collect();
        v6.push(link_local());

        // ARP: Ethernet/IPv4 only, its own MAC as sender, one of its addresses (or 0.0.0.0:
        // an RFC 5227 probe) as sender IP.
        let arp = |last: Match| {
            let mut m = vec![Match::EtherType(ETH_P_ARP), Match::ArpEthernetIpv4];
            m.extend(mac.map(Match::ArpSenderMac));
            m.push(last);
            rule(m, Verdict::Accept)
        };
        rules.push(arp(Match::ArpSenderIp(Prefix::host(
            Ipv4Addr::UNSPECIFIED.into(),
        ))));
        rules.extend(v4.iter().map(|p| arp(Match::ArpSenderIp(*p))));
        rules.push(rule(vec![Match::EtherType(ETH_P_ARP)], Verdict::Drop));

        // IPv4: its addresses, and a DHCP client's first words.
        for p in &v4 {
            rules.push(rule(
                vec![Match::EtherType(ETH_P_IP), Match::Ip4Src(*p)],
                Verdict::Accept,
            ));
        }
        rules.push(rule(
            vec![
                Match::EtherType(ETH_P_IP),
                Match::Ip4Src(Prefix::host(Ipv4Addr::UNSPECIFIED.into())),
                Match::Ip4Dst(Ipv4Addr::BROADCAST),
                Match::L4Proto(IPPROTO_UDP),
                Match::SrcPort(68),
                Match::DstPort(67),
            ],
            Verdict::Accept,
        ));
        rules.push(rule(vec![Match::EtherType(ETH_P_IP)], Verdict::Drop));

        // IPv6.
        let icmp6 = |t: u8| {
            vec![
                Match::EtherType(ETH_P_IPV6),
                Match::L4Proto(IPPROTO_ICMPV6),
                Match::Icmp6Type(t),
            ]
        };
        // A guest is no router.
        for t in [ICMP6_RA, ICMP6_REDIRECT] {
            rules.push(rule(icmp6(t), Verdict::Drop));
        }
        // Before it has an address: duplicate address detection for its own addresses,
        // router solicitation, MLD reports.
        let unspecified = Prefix::host(Ipv6Addr::UNSPECIFIED.into());
        for p in &v6 {
            let mut m = icmp6(ICMP6_NS);
            m.insert(1, Match::Ip6Src(unspecified));
            m.push(Match::NdTarget(*p));
            rules.push(rule(m, Verdict::Accept));
        }
        for t in [ICMP6_RS, MLD1_REPORT, MLD2_REPORT] {
            let mut m = icmp6(t);
            m.insert(1, Match::Ip6Src(unspecified));
            rules.push(rule(m, Verdict::Accept));
        }
        // A neighbour advertisement speaks for its target: only its own addresses, sent from
        // that address or from its link-local address.
        for p in &v6 {
            let mut sources = vec![*p];
            if *p != link_local() {
                sources.push(link_local());
            }
            for s in sources {
                let mut m = icmp6(ICMP6_NA);
                m.insert(1, Match::Ip6Src(s));
                m.push(Match::NdTarget(*p));
                rules.push(rule(m, Verdict::Accept));
            }
        }
        rules.push(rule(icmp6(ICMP6_NA), Verdict::Drop));
        // Everything else (DHCPv6 from its link-local address included) from its addresses.
        for p in &v6 {
            rules.push(rule(
                vec![Match::EtherType(ETH_P_IPV6), Match::Ip6Src(*p)],
                Verdict::Accept,
            ));
        }
        rules.push(rule(vec![Match::EtherType(ETH_P_IPV6)], Verdict::Drop));
        // Any other ethertype (VLAN tags, LLDP, STP, 802.3 length frames, ...) would carry
        // addresses this chain does not check, or talk to the host's bridge itself.
        rules.push(rule(Vec::new(), Verdict::Drop));
    }
    Some(IngressChain {
        table: table(chain),
        name: chain.into(),
        device: device.into(),
        priority: PRIORITY,
        rules,
    })
}

/// The comment the chain carries: a fingerprint of its rules, so `status` can tell a chain
/// that is exactly the plan from one that is not without decoding expressions.
pub fn fingerprint(chain: &IngressChain) -> String {
    crate::nftables::fingerprint("xen-vif", &chain.to_string())
}

/// What the kernel has for this vif's filter and its plug hygiene.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The vif's table is there (with or without its chain).
    pub table: bool,
    pub chain: Option<ChainState>,
    /// [`IPV6_HYGIENE`] of the device, under its current name (the conf directory moves with a
    /// rename); a key not here could not be read (no IPv6 on this host).
    pub sysctls: BTreeMap<&'static str, String>,
    /// What a new interface gets for each of them (offline puts that back).
    pub defaults: BTreeMap<&'static str, String>,
    /// The device's neighbour entries (route and NAT mode only: the pinned guest addresses).
    pub neighbours: Vec<Neighbour>,
}

/// Read this vif's table and chain. A kernel without nf_tables has none (an online that needs
/// one then fails when applying it, with the line that names the switch).
pub fn observe(chain: &str, count_rules: bool) -> Result<Observed> {
    let mut nf = match Nfnetlink::open() {
        Ok(nf) => nf,
        Err(e) if crate::nftables::is_unsupported(&e) => return Ok(Observed::default()),
        Err(e) => return Err(anyhow::Error::new(e).context("open nfnetlink")),
    };
    let table = table(chain);
    // The chain first: when it is there, so is the table (one request in the usual case).
    let observed = nf.netdev_chain(&table, chain, count_rules).and_then(|c| {
        Ok(Observed {
            table: c.is_some() || nf.has_netdev_table(&table)?,
            chain: c,
            ..Default::default()
        })
    });
    match observed {
        Ok(o) => Ok(o),
        Err(e) if crate::nftables::is_unsupported(&e) => Ok(Observed::default()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("read nft table netdev {table}"))),
    }
}

/// Read the table and chain, and for the device `link` (this backend's, if there is one) the
/// sysctls and neighbour entries `plan_online`/`plan_offline` weigh.
pub fn observe_vif(nl: &mut Netlink, hp: &Hotplug, link: Option<&Link>) -> Result<Observed> {
    // Offline deletes whatever table is there: it need not read the rules back.
    let mut o = observe(hp.kernel_name.as_str(), hp.command.is_up())?;
    let Some(link) = link else {
        return Ok(o);
    };
    if let Ok(now) = IfName::new(&link.name) {
        for key in IPV6_HYGIENE {
            if let Ok(v) = sysctl::read(&sysctl::ipv6_conf(&now, key)) {
                o.sysctls.insert(key, v);
            }
            if !hp.command.is_up() {
                if let Ok(v) = sysctl::read(&sysctl::conf_path("ipv6", "default", key)) {
                    o.defaults.insert(key, v);
                }
            }
        }
    }
    if routed(hp) && (!hp.command.is_up() || (hp.antispoof && hp.mac.is_some())) {
        o.neighbours = nl.neighbours(link.index)?;
    }
    Ok(o)
}

/// The steps that make the vif's table hold exactly `want`, or no table when `want` is None
/// (pure).
pub fn plan(observed: &Observed, chain: &str, want: Option<&IngressChain>) -> Vec<Step> {
    match (want, &observed.chain) {
        (Some(w), have) => {
            let comment = fingerprint(w);
            let same = have.as_ref().is_some_and(|h| {
                h.devices == [w.device.clone()]
                    && h.comment.as_deref() == Some(comment.as_str())
                    && h.rules == Some(w.rules.len())
            });
            if same {
                Vec::new()
            } else {
                vec![Step::Filter {
                    chain: Box::new(w.clone()),
                    comment,
                    replace: observed.table,
                }]
            }
        }
        (None, _) if observed.table => vec![Step::Unfilter {
            table: table(chain),
        }],
        (None, _) => Vec::new(),
    }
}

/// The steps online adds for the filter, once the device has its final name (`link` as it is
/// now; its name may still change by earlier steps of the same plan). Pure.
pub fn plan_online(o: &Observed, hp: &Hotplug, link: &Link) -> Vec<Step> {
    let chain = hp.kernel_name.as_str();
    if !hp.antispoof {
        return plan(o, chain, None);
    }
    let want = ruleset(chain, hp.wanted_name.as_str(), hp.mac, &hp.ip);
    let mut steps = plan(o, chain, want.as_ref());
    // No router advertisements or redirects heeded on the vif (a guest must not be dom0's
    // router). Observed under the current name, written under the final one.
    for key in IPV6_HYGIENE {
        // No such key: no IPv6 on this host.
        if let Some(old) = o.sysctls.get(key) {
            steps.extend(Step::sysctl_change(
                sysctl::ipv6_conf(&hp.wanted_name, key),
                "0",
                old,
            ));
        }
    }
    // Route and NAT mode: the host resolves each guest address to the backend's MAC only, so
    // a neighbour's ARP or NA cannot redirect another guest's traffic.
    if routed(hp) {
        if let Some(mac) = hp.mac {
            for g in hp.ip.iter().filter(|g| is_host(g)) {
                let pinned = o
                    .neighbours
                    .iter()
                    .any(|n| n.ip == g.ip && n.permanent && n.mac.as_deref() == Some(&mac[..]));
                if !pinned {
                    steps.push(Step::AddNeighbour {
                        index: link.index,
                        dev: hp.wanted_name.to_string(),
                        ip: g.ip,
                        mac: mac.to_vec(),
                    });
                }
            }
        }
    }
    steps
}

/// The modes where dom0 routes to the guest's addresses (and so pins their neighbours).
fn routed(hp: &Hotplug) -> bool {
    matches!(hp.mode, Mode::Route | Mode::Nat)
}

fn is_host(g: &GuestAddr) -> bool {
    g.prefix_len == if g.ip.is_ipv4() { 32 } else { 128 }
}

/// The steps offline adds: the vif's table goes with its chain (also when the device is already
/// gone), so the ruleset is as before the vif's online; pinned neighbours and the IPv6 sysctls
/// are put back, and the guest's connections forgotten. Pure.
pub fn plan_offline(o: &Observed, hp: &Hotplug, link: Option<&Link>) -> Vec<Step> {
    let chain = hp.kernel_name.as_str();
    let mut steps = Vec::new();
    if let Some(link) = link {
        if routed(hp) {
            for n in &o.neighbours {
                if n.permanent && hp.ip.iter().any(|g| is_host(g) && g.ip == n.ip) {
                    steps.push(Step::DelNeighbour {
                        index: link.index,
                        dev: link.name.clone(),
                        ip: n.ip,
                        mac: n.mac.clone().unwrap_or_default(),
                    });
                }
            }
        }
        if let Ok(now) = IfName::new(&link.name) {
            for key in IPV6_HYGIENE {
                if let (Some(old), Some(default)) = (o.sysctls.get(key), o.defaults.get(key)) {
                    steps.extend(Step::sysctl_change(
                        sysctl::ipv6_conf(&now, key),
                        default,
                        old,
                    ));
                }
            }
        }
    }
    steps.extend(plan(o, chain, None));
    if !hp.ip.is_empty() {
        steps.push(Step::ForgetConnections {
            prefixes: hp.ip.iter().map(prefix).collect(),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::parse_guest_addrs;

    const MAC: Mac = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x05];

    fn text(mac: Option<Mac>, ip: &str) -> Option<String> {
        let ip = parse_guest_addrs(ip).unwrap();
        ruleset("vif5.0", "web0", mac, &ip).map(|c| c.to_string())
    }

    #[test]
    fn nothing_known_nothing_filtered() {
        assert_eq!(text(None, ""), None);
    }

    #[test]
    fn mac_only_without_ip() {
        assert_eq!(
            text(Some(MAC), "").unwrap(),
            "table netdev xen-vif-vif5.0 {
\tchain vif5.0 {
\t\ttype filter hook ingress device \"web0\" priority -500; policy accept;
\t\tether saddr != 00:16:3e:00:00:05 drop
\t}
}"
        );
    }

    #[test]
    fn golden_ipv4_and_ipv6() {
        let want = "table netdev xen-vif-vif5.0 {
\tchain vif5.0 {
\t\ttype filter hook ingress device \"web0\" priority -500; policy accept;
\t\tether saddr != 00:16:3e:00:00:05 drop
\t\tether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 00:16:3e:00:00:05 arp saddr ip 0.0.0.0 accept
\t\tether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 00:16:3e:00:00:05 arp saddr ip 10.0.0.5 accept
\t\tether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether 00:16:3e:00:00:05 arp saddr ip 10.0.1.0/24 accept
\t\tether type arp drop
\t\tether type ip ip saddr 10.0.0.5 accept
\t\tether type ip ip saddr 10.0.1.0/24 accept
\t\tether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 meta l4proto udp th sport 68 th dport 67 accept
\t\tether type ip drop
\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-router-advert drop
\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-redirect drop
\t\tether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type nd-neighbor-solicit icmpv6 taddr 2001:db8::5 accept
\t\tether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type nd-neighbor-solicit icmpv6 taddr fe80::/64 accept
\t\tether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type nd-router-solicit accept
\t\tether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type mld-listener-report accept
\t\tether type ip6 ip6 saddr :: meta l4proto ipv6-icmp icmpv6 type mld2-listener-report accept
\t\tether type ip6 ip6 saddr 2001:db8::5 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert icmpv6 taddr 2001:db8::5 accept
\t\tether type ip6 ip6 saddr fe80::/64 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert icmpv6 taddr 2001:db8::5 accept
\t\tether type ip6 ip6 saddr fe80::/64 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert icmpv6 taddr fe80::/64 accept
\t\tether type ip6 meta l4proto ipv6-icmp icmpv6 type nd-neighbor-advert drop
\t\tether type ip6 ip6 saddr 2001:db8::5 accept
\t\tether type ip6 ip6 saddr fe80::/64 accept
\t\tether type ip6 drop
\t\tdrop
\t}
}";
        assert_eq!(
            text(Some(MAC), "10.0.0.5 10.0.1.0/24 2001:db8::5").unwrap(),
            want
        );
    }

    #[test]
    fn ipv4_only_guests_keep_link_local_ipv6() {
        let t = text(Some(MAC), "10.0.0.5").unwrap();
        assert!(t.contains("ether type ip6 ip6 saddr fe80::/64 accept\n"));
        assert!(!t.contains("2001:"));
    }

    #[test]
    fn plan_is_empty_when_the_kernel_has_the_chain() {
        let ip = parse_guest_addrs("10.0.0.5").unwrap();
        let want = ruleset("vif5.0", "vif5.0", Some(MAC), &ip).unwrap();
        let same = Observed {
            table: true,
            chain: Some(ChainState {
                devices: vec!["vif5.0".into()],
                comment: Some(fingerprint(&want)),
                rules: Some(want.rules.len()),
            }),
            ..Default::default()
        };
        assert!(plan(&same, "vif5.0", Some(&want)).is_empty());
        // Another device, a rule less, another fingerprint: replaced in one step.
        for change in [
            |c: &mut ChainState| c.devices = vec!["web0".into()],
            |c: &mut ChainState| c.rules = c.rules.map(|n| n - 1),
            |c: &mut ChainState| c.comment = Some("xen-vif 0".into()),
        ] {
            let mut o = same.clone();
            change(o.chain.as_mut().unwrap());
            match plan(&o, "vif5.0", Some(&want)).as_slice() {
                [
                    Step::Filter {
                        chain,
                        replace: true,
                        ..
                    },
                ] => assert_eq!(chain.table, "xen-vif-vif5.0"),
                other => panic!("{other:?}"),
            }
        }
        // Nothing there: nothing to delete (a deletion costs the run an RCU grace period).
        assert!(matches!(
            plan(&Observed::default(), "vif5.0", Some(&want)).as_slice(),
            [Step::Filter { replace: false, .. }]
        ));
        // Only the table (somebody deleted the chain): replaced.
        let table_only = Observed {
            table: true,
            ..Default::default()
        };
        assert!(matches!(
            plan(&table_only, "vif5.0", Some(&want)).as_slice(),
            [Step::Filter { replace: true, .. }]
        ));
        // No filter wanted: the table goes, also when only the table is left.
        let unfilter = vec![Step::Unfilter {
            table: "xen-vif-vif5.0".into(),
        }];
        assert_eq!(plan(&same, "vif5.0", None), unfilter);
        assert_eq!(plan(&table_only, "vif5.0", None), unfilter);
        assert!(plan(&Observed::default(), "vif5.0", None).is_empty());
    }

    #[test]
    fn each_vif_has_its_own_table() {
        assert_eq!(table("vif5.0"), "xen-vif-vif5.0");
        assert_eq!(table("vif5.0-emu"), "xen-vif-vif5.0-emu");
        // Within every kernel's NFT_TABLE_MAXNAMELEN (32 before Linux 4.16), NUL included.
        assert!(table("vif32767.65535").len() < 32);
    }

    fn routed_guest(command: crate::invocation::Command) -> Hotplug {
        let mut h = crate::modes::fixture::hp(Mode::Route, command);
        h.antispoof = true;
        h.mac = Some(MAC);
        h.ip = parse_guest_addrs("10.0.0.5 10.0.1.0/24 2001:db8::5").unwrap();
        h
    }

    fn neighbour(ip: &str, mac: Option<Mac>, permanent: bool) -> Neighbour {
        Neighbour {
            ip: ip.parse().unwrap(),
            mac: mac.map(|m| m.to_vec()),
            permanent,
        }
    }

    #[test]
    fn golden_online_hygiene_and_pinned_neighbours() {
        use crate::modes::fixture::{name, netback, text};
        let mut h = routed_guest(crate::invocation::Command::Online);
        h.wanted_name = name("web0");
        let o = Observed {
            sysctls: BTreeMap::from([("accept_ra", "1".into()), ("accept_redirects", "0".into())]),
            // ::5 is pinned already; 10.0.0.5 only learnt (not permanent). The /24 is no host.
            neighbours: vec![
                neighbour("2001:db8::5", Some(MAC), true),
                neighbour("10.0.0.5", Some(MAC), false),
            ],
            ..Default::default()
        };
        assert_eq!(
            text(&plan_online(&o, &h, &netback(false))),
            [
                "nft add table netdev xen-vif-vif5.0 with chain vif5.0 on web0 (24 rules)",
                "echo 0 > /proc/sys/net/ipv6/conf/web0/accept_ra",
                "ip neigh replace 10.0.0.5 lladdr 00:16:3e:00:00:05 dev web0 nud permanent",
            ]
        );
        // Without the filter: its table goes, and nothing else is touched.
        h.antispoof = false;
        let o = Observed { table: true, ..o };
        assert_eq!(
            text(&plan_online(&o, &h, &netback(false))),
            ["nft delete table netdev xen-vif-vif5.0"]
        );
    }

    #[test]
    fn golden_offline_puts_the_hygiene_back() {
        use crate::modes::fixture::{netback, text};
        let h = routed_guest(crate::invocation::Command::Offline);
        let o = Observed {
            table: true,
            sysctls: BTreeMap::from([("accept_ra", "0".into()), ("accept_redirects", "0".into())]),
            defaults: BTreeMap::from([("accept_ra", "1".into()), ("accept_redirects", "0".into())]),
            neighbours: vec![
                neighbour("10.0.0.5", Some(MAC), true),
                neighbour("10.0.0.9", Some(MAC), true),
                neighbour("2001:db8::5", None, false),
            ],
            ..Default::default()
        };
        assert_eq!(
            text(&plan_offline(&o, &h, Some(&netback(false)))),
            [
                "ip neigh del 10.0.0.5 dev vif5.0",
                "echo 1 > /proc/sys/net/ipv6/conf/vif5.0/accept_ra",
                "nft delete table netdev xen-vif-vif5.0",
                "conntrack -D --orig-src 10.0.0.5; conntrack -D --orig-dst 10.0.0.5; \
                 conntrack -D --orig-src 10.0.1.0/24; conntrack -D --orig-dst 10.0.1.0/24; \
                 conntrack -D --orig-src 2001:db8::5; conntrack -D --orig-dst 2001:db8::5",
            ]
        );
        // In bridge mode dom0 pins nothing, so it removes nothing.
        let mut bridged = h.clone();
        bridged.mode = Mode::Bridge;
        assert!(
            !text(&plan_offline(&o, &bridged, Some(&netback(false))))
                .iter()
                .any(|s| s.starts_with("ip neigh"))
        );
    }
}
