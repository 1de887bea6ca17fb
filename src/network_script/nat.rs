//! network-nat: the host side of NAT mode (xend's network-nat, gone from Xen 4.5).
//! `start netdev=<uplink> [range=10.0.0.0/8,...]` masquerades what the guests (vif-nat gives
//! them 10.0.0.0/8 addresses by default) send out of the uplink, and turns on IPv4 forwarding.
//! The masquerading is one nf_tables chain, `postrouting-<uplink>` in the family ip table
//! `xen-vif-nat` that xen-vif owns, made and removed over netlink (no `iptables` or `nft`
//! process). The stock script ran `iptables -t nat -A POSTROUTING -o <netdev> -j MASQUERADE`
//! (every source) and left forwarding on at stop; here `stop` puts back exactly what `start`
//! changed, also from a new process after a crash.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, anyhow, bail};

use super::route::{IP_FORWARD, record_cascade, restore_sysctls, sysctl_step};
use super::state::{Record, State};
use super::{Instance, Params, Script, Start, updown};
use crate::ifname::IfName;
use crate::netlink::Netlink;
use crate::nftables::{self, ChainState, Match, NatChain, Nfnetlink, Prefix, Rule, Verdict};
use crate::plan::Step;
use crate::sysctl;

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
    let (addr, len) = s
        .split_once('/')
        .ok_or_else(|| anyhow!("range={s}: give a prefix, e.g. 10.0.0.0/8"))?;
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| anyhow!("range={s}: {addr:?} is not an IPv4 address"))?;
    let len = len
        .parse::<u8>()
        .ok()
        .filter(|n| (1..=32).contains(n) && len.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| anyhow!("range={s}: bad prefix length {len:?}"))?;
    let mask = u32::MAX << (32 - u32::from(len));
    if u32::from(ip) & !mask != 0 {
        bail!(
            "range={s}: host bits set (the prefix is {}/{len})",
            Ipv4Addr::from(u32::from(ip) & mask)
        );
    }
    Ok(Prefix {
        ip: IpAddr::V4(ip),
        len,
    })
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

impl NatInstance {
    /// The chain start makes (pure).
    pub fn chain(&self) -> NatChain {
        NatChain {
            table: TABLE.into(),
            name: format!("postrouting-{}", self.netdev),
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

/// The chain as the kernel has it; a kernel without nf_tables has none.
fn observe_chain(table: &str, name: &str) -> Result<Option<ChainState>> {
    let r = Nfnetlink::open().and_then(|mut nf| nf.ip_chain(table, name));
    match r {
        Ok(c) => Ok(c),
        Err(e) if nftables::is_unsupported(&e) => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("read nft chain ip {table} {name}"))),
    }
}

/// The step that makes the chain `want`, if the kernel's (`have`) is not exactly it (pure).
pub fn chain_step(want: &NatChain, have: Option<&ChainState>) -> Option<Step> {
    let comment = comment(want);
    let same = have.is_some_and(|h| {
        h.comment.as_deref() == Some(comment.as_str()) && h.rules == want.rules.len()
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

    fn plan_start(&self, nl: &mut Netlink) -> Result<Start> {
        if nl.link_by_name(self.netdev.as_str())?.is_none() {
            bail!("uplink {} does not exist", self.netdev);
        }
        let mut steps = Vec::new();
        let mut records = Vec::new();
        // Masquerading before forwarding: no guest packet leaves with its private address, and
        // on a kernel without nf_tables NAT nothing else has changed yet.
        let want = self.chain();
        if let Some(step) = chain_step(&want, observe_chain(&want.table, &want.name)?.as_ref()) {
            records.push(
                Record::new("masquerade")
                    .set("table", &want.table)
                    .set("chain", &want.name),
            );
            steps.push(step);
        }
        let before = steps.len();
        sysctl_step(&mut steps, &mut records, IP_FORWARD.into(), "1");
        if steps.len() > before {
            record_cascade(&mut records, IP_FORWARD);
        }
        Ok(Start::Steps { steps, records })
    }

    fn is_started(&self, nl: &mut Netlink, _: &State) -> Result<bool> {
        Ok(match self.plan_start(nl)? {
            Start::Steps { steps, .. } => steps.is_empty(),
            Start::Nothing(_) => true,
        })
    }

    fn plan_stop(&self, _: &mut Netlink, state: &State) -> Result<Vec<Step>> {
        let mut steps = Vec::new();
        // Forwarding off first: no guest packet leaves unmasqueraded on the way down.
        restore_sysctls(state, &mut steps)?;
        for r in state.of_kind("masquerade") {
            let (table, chain) = (r.get("table")?, r.get("chain")?);
            // A record naming another table was not written by start: refuse the whole file.
            if table != TABLE {
                bail!("state file: masquerade record names table {table:?}");
            }
            if observe_chain(table, chain)?.is_some() {
                steps.push(Step::Unmasquerade {
                    table: table.into(),
                    chain: chain.into(),
                });
            }
        }
        Ok(steps)
    }

    fn status(&self, nl: &mut Netlink, _: Option<&State>) -> Result<String> {
        let mut out = String::new();
        match nl.link_by_name(self.netdev.as_str())? {
            Some(l) => {
                let addrs: Vec<String> = nl
                    .addresses(Some(l.index))?
                    .iter()
                    .filter(|a| a.ip.is_ipv4())
                    .map(|a| format!("{}/{}", a.ip, a.prefix_len))
                    .collect();
                out.push_str(&format!(
                    "uplink {}: {}, IPv4 addresses: {}\n",
                    l.name,
                    updown(&l),
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
            sysctl::read(IP_FORWARD).unwrap_or_else(|_| "-".into())
        ));
        let want = self.chain();
        let have = observe_chain(&want.table, &want.name)?;
        out.push_str(&format!(
            "masquerading: chain ip {} {}: {}\n",
            want.table,
            want.name,
            match (&have, chain_step(&want, have.as_ref())) {
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
            rules: 1,
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
}
