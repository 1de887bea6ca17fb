//! Anti-spoofing, shared by every mode: what a guest may send, as one nf_tables base chain on
//! the ingress hook of its vif (or tap), alone in a table of its own, plus the plug hygiene that goes with it (no router
//! advertisements or redirects accepted on the vif, pinned neighbour entries in route mode,
//! the guest's conntrack entries forgotten on offline).
//!
//! The ingress hook sees every frame the guest sends before the bridge, routing, NAT or Open
//! vSwitch's kernel datapath does, so one chain serves every mode. `ruleset` is pure (golden
//! tests below); `observe` reads the kernel; `online`/`offline` turn the two into steps.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::addr::GuestAddr;
use crate::ifname::IfName;
use crate::invocation::{Hotplug, Mode};
use crate::netlink::{Link, Netlink};
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

/// What the kernel has for this vif's filter.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The vif's table is there (with or without its chain).
    pub table: bool,
    pub chain: Option<ChainState>,
}

/// Read this vif's table and chain. A kernel without nf_tables has none (an online that needs
/// one then fails when applying it, with the line that names the switch).
pub fn observe(chain: &str) -> Result<Observed> {
    let mut nf = match Nfnetlink::open() {
        Ok(nf) => nf,
        Err(e) if crate::nftables::is_unsupported(&e) => return Ok(Observed::default()),
        Err(e) => return Err(anyhow::Error::new(e).context("open nfnetlink")),
    };
    let table = table(chain);
    // The chain first: when it is there, so is the table (one request in the usual case).
    let observed = nf.netdev_chain(&table, chain).and_then(|c| {
        Ok(Observed {
            table: c.is_some() || nf.has_netdev_table(&table)?,
            chain: c,
        })
    });
    match observed {
        Ok(o) => Ok(o),
        Err(e) if crate::nftables::is_unsupported(&e) => Ok(Observed::default()),
        Err(e) => Err(anyhow::Error::new(e).context(format!("read nft table netdev {table}"))),
    }
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
                    && h.rules == w.rules.len()
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
/// now; its name may still change by earlier steps of the same plan).
pub fn online(nl: &mut Netlink, hp: &Hotplug, link: &Link) -> Result<Vec<Step>> {
    let chain = hp.kernel_name.as_str();
    let observed = observe(chain)?;
    if !hp.antispoof {
        return Ok(plan(&observed, chain, None));
    }
    let want = ruleset(chain, hp.wanted_name.as_str(), hp.mac, &hp.ip);
    let mut steps = plan(&observed, chain, want.as_ref());
    // No router advertisements or redirects heeded on the vif (a guest must not be dom0's
    // router). The conf directory moves with a rename: read it under the current name.
    let now = IfName::new(&link.name).map_err(anyhow::Error::msg)?;
    for key in IPV6_HYGIENE {
        let Ok(old) = sysctl::read(&sysctl::ipv6_conf(&now, key)) else {
            continue; // no IPv6 on this host
        };
        if old != "0" {
            steps.push(Step::Sysctl {
                path: sysctl::ipv6_conf(&hp.wanted_name, key),
                value: "0".into(),
                old,
            });
        }
    }
    // Route and NAT mode: the host resolves each guest address to the backend's MAC only, so
    // a neighbour's ARP or NA cannot redirect another guest's traffic.
    if routed(hp) {
        if let Some(mac) = hp.mac {
            let have = nl.neighbours(link.index)?;
            for g in hp.ip.iter().filter(|g| is_host(g)) {
                let pinned = have
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
    Ok(steps)
}

/// The modes where dom0 routes to the guest's addresses (and so pins their neighbours).
fn routed(hp: &Hotplug) -> bool {
    matches!(hp.mode, Mode::Route | Mode::Nat)
}

fn is_host(g: &GuestAddr) -> bool {
    g.prefix_len == if g.ip.is_ipv4() { 32 } else { 128 }
}

/// The steps offline adds: the vif's table goes with its chain (also when the device is already
/// gone), so the ruleset is as before the vif's online; pinned
/// neighbours and the IPv6 sysctls are put back, and the guest's connections forgotten.
pub fn offline(nl: &mut Netlink, hp: &Hotplug, link: Option<&Link>) -> Result<Vec<Step>> {
    let chain = hp.kernel_name.as_str();
    let mut steps = Vec::new();
    if let Some(link) = link {
        if routed(hp) {
            for n in nl.neighbours(link.index)? {
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
                let default = sysctl::read(&sysctl::conf_path("ipv6", "default", key));
                if let (Ok(old), Ok(default)) =
                    (sysctl::read(&sysctl::ipv6_conf(&now, key)), default)
                {
                    if old != default {
                        steps.push(Step::Sysctl {
                            path: sysctl::ipv6_conf(&now, key),
                            value: default,
                            old,
                        });
                    }
                }
            }
        }
    }
    steps.extend(plan(&observe(chain)?, chain, None));
    if !hp.ip.is_empty() {
        steps.push(Step::ForgetConnections {
            prefixes: hp.ip.iter().map(prefix).collect(),
        });
    }
    Ok(steps)
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
                rules: want.rules.len(),
            }),
        };
        assert!(plan(&same, "vif5.0", Some(&want)).is_empty());
        // Another device, a rule less, another fingerprint: replaced in one step.
        for change in [
            |c: &mut ChainState| c.devices = vec!["web0".into()],
            |c: &mut ChainState| c.rules -= 1,
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
            chain: None,
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
}
