//! network-nat: the host side of NAT mode (xend's network-nat, gone from Xen 4.5).
//! `start netdev=<uplink> [range=10.0.0.0/8,...]` masquerades what the guests (vif-nat gives
//! them 10.0.0.0/8 addresses by default) send out of the uplink, and turns on IPv4 forwarding.
//! The masquerading is one nf_tables chain, `postrouting-<uplink>` in the family ip table
//! `xen-vif-nat` that xen-vif owns, made and removed over netlink (no `iptables` or `nft`
//! process). The stock script ran `iptables -t nat -A POSTROUTING -o <netdev> -j MASQUERADE`
//! (every source) and left forwarding on at stop; here `stop` puts back exactly what `start`
//! changed, also from a new process after a crash.

use anyhow::{Result, bail};

use super::observed::{IP_FORWARD, Observed, updown};
use super::route::{forwarding_step, restore_sysctls};
use super::state::{Record, State};
use super::{Instance, Params, Script, Start};
use crate::ifname::IfName;
use crate::netlink::Netlink;
use crate::nftables::{self, ChainState, Match, NatChain, Prefix, Rule, Verdict};
use crate::plan::Step;

/// The one family ip table xen-vif owns for NAT; removed with its last chain.
pub const TABLE: &str = "xen-vif-nat";
/// `srcnat`: where `nft` puts source NAT.
const PRIORITY: i32 = 100;
const DEFAULT_RANGE: &str = "10.0.0.0/8";

pub struct NatInstance {
    pub netdev: IfName,
    pub ranges: Vec<Prefix>,
}

/// One `range=` entry: an IPv4 prefix without host bits.
pub fn parse_range(s: &str) -> Result<Prefix> {
    let what = format!("range={s}");
    if !s.contains('/') {
        bail!("{what}: give a prefix, e.g. 10.0.0.0/8");
    }
    let (ip, len) = crate::addr::parse_prefixed(s, &what, false)?;
    if !ip.is_ipv4() {
        bail!("{what}: {ip} is not an IPv4 address");
    }
    if len == 0 {
        bail!("{what}: bad prefix length \"0\"");
    }
    let net = crate::addr::network(ip, len);
    if net != ip {
        bail!("{what}: host bits set (the prefix is {net}/{len})");
    }
    Ok(Prefix { ip, len })
}

/// `netdev=` (or xend's `eth<vifnum>`), else the device of the default route.
pub fn instance(nl: &mut Netlink, p: &Params) -> Result<NatInstance> {
    if p.yes("dhcp")? {
        bail!(
            "dhcp=yes (a subnet in ISC dhcpd's configuration) is not supported: vif-nat keeps \
             each guest's dnsmasq entry instead (nat_dhcp_hosts in /etc/xen/xen-vif.toml)"
        );
    }
    let mut ranges: Vec<Prefix> = Vec::new();
    let given = p.all("range");
    for r in if given.is_empty() {
        vec![DEFAULT_RANGE]
    } else {
        given
    } {
        let r = parse_range(r)?;
        if ranges.contains(&r) {
            bail!("range {r} is given twice");
        }
        ranges.push(r);
    }
    let netdev = match p.netdev()? {
        Some(n) => n,
        None => match nl.default_route_link()? {
            Some(l) => IfName::new(&l.name).map_err(anyhow::Error::msg)?,
            None => bail!("no netdev= given and no default route: name the uplink"),
        },
    };
    Ok(NatInstance { netdev, ranges })
}

/// The chain's name for the uplink `netdev` (in [`TABLE`]).
pub fn chain_name(netdev: &IfName) -> String {
    format!("postrouting-{netdev}")
}

impl NatInstance {
    /// The chain start makes (pure).
    pub fn chain(&self) -> NatChain {
        NatChain {
            table: TABLE.into(),
            name: chain_name(&self.netdev),
            priority: PRIORITY,
            rules: self
                .ranges
                .iter()
                .map(|r| Rule {
                    matches: vec![Match::Ip4Src(*r), Match::OifName(self.netdev.to_string())],
                    verdict: Verdict::Masquerade,
                })
                .collect(),
        }
    }
}

pub fn comment(chain: &NatChain) -> String {
    nftables::fingerprint("xen-vif", &chain.to_string())
}

/// The step that makes the chain `want`, if the kernel's (`have`) is not exactly it (pure).
pub fn chain_step(want: &NatChain, have: Option<&ChainState>) -> Option<Step> {
    let comment = comment(want);
    let same = have.is_some_and(|h| {
        h.comment.as_deref() == Some(comment.as_str()) && h.rules == Some(want.rules.len())
    });
    (!same).then(|| Step::Masquerade {
        chain: Box::new(want.clone()),
        comment,
        exists: have.is_some(),
    })
}

impl Instance for NatInstance {
    fn script(&self) -> Script {
        Script::Nat
    }

    fn key(&self) -> String {
        self.netdev.to_string()
    }

    fn params(&self) -> Vec<(String, String)> {
        let ranges: Vec<String> = self.ranges.iter().map(|r| r.to_string()).collect();
        vec![
            ("netdev".into(), self.netdev.to_string()),
            ("range".into(), ranges.join(",")),
        ]
    }

    /// This instance's chain, and those recorded by its start (the same, unless the state
    /// file was written for another uplink name).
    fn ip_chains(&self, state: Option<&State>) -> Vec<(String, String)> {
        let mut out = vec![(TABLE.to_string(), chain_name(&self.netdev))];
        for r in state.map_or(&[][..], |s| &s.records) {
            if let Record::Masquerade { uplink } = r {
                out.push((TABLE.to_string(), chain_name(uplink)));
            }
        }
        out
    }

    fn plan_start(&self, o: &Observed) -> Result<Start> {
        if o.link(self.netdev.as_str()).is_none() {
            bail!("uplink {} does not exist", self.netdev);
        }
        let mut steps = Vec::new();
        let mut records = Vec::new();
        // Masquerading before forwarding: no guest packet leaves with its private address, and
        // on a kernel without nf_tables NAT nothing else has changed yet.
        let want = self.chain();
        if let Some(step) = chain_step(&want, o.ip_chain(&want.table, &want.name)) {
            records.push(Record::Masquerade {
                uplink: self.netdev.clone(),
            });
            steps.push(step);
        }
        forwarding_step(o, &mut steps, &mut records, IP_FORWARD);
        Ok(Start::Steps { steps, records })
    }

    fn plan_stop(&self, o: &Observed, state: &State) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        // Forwarding off first: no guest packet leaves unmasqueraded on the way down.
        restore_sysctls(o, state, &mut steps);
        for r in &state.records {
            let Record::Masquerade { uplink } = r else {
                continue;
            };
            let chain = chain_name(uplink);
            if o.ip_chain(TABLE, &chain).is_some() {
                steps.push(Step::Unmasquerade {
                    table: TABLE.into(),
                    chain,
                });
            }
        }
        Ok(steps)
    }

    fn status(&self, o: &Observed, _: Option<&State>) -> Result<String> {
        let mut out = String::new();
        match o.link(self.netdev.as_str()) {
            Some(l) => {
                let addrs: Vec<String> = o
                    .addresses_of(l.index)
                    .filter(|a| a.ip.is_ipv4())
                    .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                    .collect();
                out.push_str(&format!(
                    "uplink {}: {}, IPv4 addresses: {}\n",
                    l.name,
                    updown(l),
                    if addrs.is_empty() {
                        "none".into()
                    } else {
                        addrs.join(" ")
                    }
                ));
            }
            None => out.push_str(&format!("uplink {}: missing\n", self.netdev)),
        }
        out.push_str(&format!(
            "net.ipv4.ip_forward = {}\n",
            o.sysctl(IP_FORWARD).unwrap_or("-")
        ));
        let want = self.chain();
        let have = o.ip_chain(&want.table, &want.name);
        out.push_str(&format!(
            "masquerading: chain ip {} {}: {}\n",
            want.table,
            want.name,
            match (have, chain_step(&want, have)) {
                (None, _) => "absent",
                (Some(_), None) => "as planned",
                (Some(_), Some(_)) => "present, but not as planned",
            }
        ));
        for r in &want.rules {
            out.push_str(&format!("  {r}\n"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::observed::fixture::*;
    use super::*;

    fn inst(ranges: &[&str]) -> NatInstance {
        NatInstance {
            netdev: IfName::new("eth0").unwrap(),
            ranges: ranges.iter().map(|r| parse_range(r).unwrap()).collect(),
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0",
            "10.0.0.0/0",
            "10.0.0.0/33",
            "2001:db8::/32",
            "x/8",
        ] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_chain_as_nft_prints_it() {
        let c = inst(&["10.0.0.0/8", "192.168.7.0/24"]).chain();
        assert_eq!(
            c.to_string(),
            "table ip xen-vif-nat {\n\tchain postrouting-eth0 {\n\
             \t\ttype nat hook postrouting priority 100; policy accept;\n\
             \t\tip saddr 10.0.0.0/8 oifname \"eth0\" masquerade\n\
             \t\tip saddr 192.168.7.0/24 oifname \"eth0\" masquerade\n\t}\n}"
        );
    }

    #[test]
    fn a_chain_exactly_as_planned_is_left_alone() {
        let want = inst(&["10.0.0.0/8"]).chain();
        let have = ChainState {
            devices: Vec::new(),
            comment: Some(comment(&want)),
            rules: Some(1),
        };
        assert_eq!(chain_step(&want, Some(&have)), None);
        let other = ChainState {
            comment: Some("xen-vif 0".into()),
            ..have
        };
        assert!(matches!(
            chain_step(&want, Some(&other)),
            Some(Step::Masquerade { exists: true, .. })
        ));
        assert!(matches!(
            chain_step(&want, None),
            Some(Step::Masquerade { exists: false, .. })
        ));
    }

    fn ipv4_host() -> Observed {
        with_sysctls(
            host(vec![link(1, "lo", true), link(2, "eth0", true)]),
            &[
                (IP_FORWARD, "0"),
                ("/proc/sys/net/ipv4/conf/all/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/default/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/eth0/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/lo/forwarding", "0"),
                ("/proc/sys/net/ipv4/conf/all/accept_redirects", "1"),
            ],
        )
    }

    /// The host after a completed start of `i`: the chain as planned, everything forwarding.
    fn started(i: &NatInstance) -> Observed {
        let mut o = with_sysctls(
            ipv4_host(),
            &[
                (IP_FORWARD, "1"),
                ("/proc/sys/net/ipv4/conf/all/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/default/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/eth0/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/lo/forwarding", "1"),
                ("/proc/sys/net/ipv4/conf/all/accept_redirects", "0"),
            ],
        );
        let want = i.chain();
        o.ip_chains.insert(
            (want.table.clone(), want.name.clone()),
            ChainState {
                devices: Vec::new(),
                comment: Some(comment(&want)),
                rules: Some(want.rules.len()),
            },
        );
        o
    }

    #[test]
    fn start_masquerades_then_forwards_and_records_both() {
        let i = inst(&["10.0.0.0/8"]);
        let (steps, records) = planned(i.plan_start(&ipv4_host()).unwrap());
        let labels: Vec<String> = steps.iter().map(Step::label).collect();
        assert_eq!(
            labels,
            vec![
                "nft add chain ip xen-vif-nat postrouting-eth0 (postrouting, 1 masquerade rules)",
                "echo 1 > /proc/sys/net/ipv4/ip_forward",
            ]
        );
        assert_eq!(
            records[..2],
            [
                Record::Masquerade {
                    uplink: IfName::new("eth0").unwrap()
                },
                Record::Sysctl {
                    path: IP_FORWARD.into(),
                    old: "0".into(),
                    new: "1".into()
                },
            ]
        );
        assert!(
            records[2..]
                .iter()
                .all(|r| matches!(r, Record::Cascade { .. })),
            "{records:?}"
        );
        // A start over a chain of that name that is not exactly the plan replaces it.
        let mut stale = ipv4_host();
        stale.ip_chains.insert(
            (TABLE.into(), "postrouting-eth0".into()),
            ChainState {
                devices: Vec::new(),
                comment: None,
                rules: Some(3),
            },
        );
        let (steps, _) = planned(i.plan_start(&stale).unwrap());
        assert!(matches!(steps[0], Step::Masquerade { exists: true, .. }));
    }

    #[test]
    fn start_needs_the_uplink() {
        let i = NatInstance {
            netdev: IfName::new("eth9").unwrap(),
            ranges: vec![parse_range("10.0.0.0/8").unwrap()],
        };
        let e = i.plan_start(&ipv4_host()).err().unwrap();
        assert_eq!(e.to_string(), "uplink eth9 does not exist");
    }

    #[test]
    fn started_is_nothing_to_do_and_stop_forwards_off_first() {
        let i = inst(&["10.0.0.0/8", "192.168.7.0/24"]);
        let (_, records) = planned(i.plan_start(&ipv4_host()).unwrap());
        let state = State::new(records);
        let o = started(&i);
        assert!(i.is_started(&o, &state).unwrap());
        assert_eq!(
            shown(&i.plan_stop(&o, &state).unwrap()),
            vec![
                "echo 0 > /proc/sys/net/ipv4/ip_forward",
                "echo 0 > /proc/sys/net/ipv4/conf/all/forwarding",
                "echo 0 > /proc/sys/net/ipv4/conf/default/forwarding",
                "echo 0 > /proc/sys/net/ipv4/conf/eth0/forwarding",
                "echo 0 > /proc/sys/net/ipv4/conf/lo/forwarding",
                "echo 1 > /proc/sys/net/ipv4/conf/all/accept_redirects",
                "nft delete chain ip xen-vif-nat postrouting-eth0",
            ]
        );
        // Someone else's forwarding (already on before start): nothing recorded, so stop
        // leaves it on and only the chain goes.
        let forwarding = with_sysctls(ipv4_host(), &[(IP_FORWARD, "1")]);
        let (steps, records) = planned(i.plan_start(&forwarding).unwrap());
        assert_eq!(steps.len(), 1);
        assert_eq!(
            shown(&i.plan_stop(&o, &State::new(records)).unwrap()),
            vec!["nft delete chain ip xen-vif-nat postrouting-eth0"]
        );
        // The chain already gone: nothing of it to undo.
        assert!(i.plan_stop(&ipv4_host(), &state).unwrap().is_empty());
    }

    #[test]
    fn the_chains_read_are_this_uplinks_and_the_recorded_ones() {
        let i = inst(&["10.0.0.0/8"]);
        let state = State::new(vec![Record::Masquerade {
            uplink: IfName::new("eth1").unwrap(),
        }]);
        assert_eq!(
            i.ip_chains(Some(&state)),
            vec![
                (TABLE.to_string(), "postrouting-eth0".to_string()),
                (TABLE.to_string(), "postrouting-eth1".to_string()),
            ]
        );
        assert_eq!(i.ip_chains(None).len(), 1);
    }

    #[test]
    fn restore_after_any_prefix_of_start() {
        restores_after_any_prefix(&inst(&["10.0.0.0/8"]), &ipv4_host());
        restores_after_any_prefix(
            &inst(&["10.0.0.0/8", "192.168.7.0/24"]),
            &with_sysctls(ipv4_host(), &[(IP_FORWARD, "1")]),
        );
    }

    #[test]
    fn status_shows_the_picture() {
        let i = inst(&["10.0.0.0/8"]);
        let mut o = started(&i);
        o.addresses.push(addr(2, "192.0.2.5", 24));
        assert_eq!(
            i.status(&o, None).unwrap(),
            "uplink eth0: up, IPv4 addresses: 192.0.2.5/24\n\
             net.ipv4.ip_forward = 1\n\
             masquerading: chain ip xen-vif-nat postrouting-eth0: as planned\n\
             \x20 ip saddr 10.0.0.0/8 oifname \"eth0\" masquerade\n"
        );
        assert!(
            i.status(&ipv4_host(), None)
                .unwrap()
                .contains("postrouting-eth0: absent")
        );
    }
}
