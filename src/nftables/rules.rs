//! A small typed rule language for a netdev ingress chain: each match knows its `nft` spelling
//! and its nf_tables expressions, so what `--dry-run` prints is what the kernel gets.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::socket::Msg;

// nf_tables expression attributes (linux/netfilter/nf_tables.h).
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_CMP_EQ: u32 = 0;
const NFT_CMP_NEQ: u32 = 1;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_IIFTYPE: u32 = 8;
const IFNAMSIZ: usize = 16;
const NFT_META_L4PROTO: u32 = 16;
const ARPHRD_ETHER: u16 = 1;

/// Where a payload load starts (`enum nft_payload_bases`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// An address or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub ip: IpAddr,
    pub len: u8,
}

impl Prefix {
    pub fn host(ip: IpAddr) -> Prefix {
        Prefix {
            ip,
            len: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// The prefix as ipnet's network (a length beyond the family's is taken as a host).
    fn net(&self) -> IpNet {
        IpNet::new(self.ip, self.len).unwrap_or_else(|_| IpNet::from(self.ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.net().contains(&ip)
    }

    fn bytes(&self) -> Vec<u8> {
        octets(self.ip)
    }

    fn mask(&self) -> Vec<u8> {
        octets(self.net().netmask())
    }

    fn is_host(&self) -> bool {
        let net = self.net();
        net.prefix_len() == net.max_prefix_len()
    }
}

fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.ip)
        } else {
            write!(f, "{}/{}", self.ip, self.len)
        }
    }
}

pub type Mac = [u8; 6];

fn mac_str(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One condition of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Match {
    /// Ethernet source address (`ne`: must differ).
    EtherSrc {
        mac: Mac,
        ne: bool,
    },
    EtherType(u16),
    /// An ARP header for Ethernet and IPv4 (htype 1, ptype ip, hlen 6, plen 4): the only kind
    /// whose sender fields are where [`Match::ArpSenderMac`] and [`Match::ArpSenderIp`] look.
    ArpEthernetIpv4,
    ArpSenderMac(Mac),
    ArpSenderIp(Prefix),
    Ip4Src(Prefix),
    Ip4Dst(Ipv4Addr),
    Ip6Src(Prefix),
    Ip6Dst(Ipv6Addr),
    /// The transport protocol, after any IPv6 extension headers.
    L4Proto(u8),
    SrcPort(u16),
    DstPort(u16),
    Icmp6Type(u8),
    /// The target address of a neighbour solicitation or advertisement.
    NdTarget(Prefix),
    /// The name of the device a packet leaves by (hooks after routing only).
    OifName(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    /// Source NAT to the address of the device the packet leaves by (a nat chain only); the
    /// chain's policy then accepts it.
    Masquerade,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A base chain on one device's ingress hook, with its rules, in netdev table `table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressChain {
    pub table: String,
    pub name: String,
    pub device: String,
    pub priority: i32,
    pub rules: Vec<Rule>,
}

fn icmp6_name(t: u8) -> String {
    match t {
        133 => "nd-router-solicit".into(),
        134 => "nd-router-advert".into(),
        135 => "nd-neighbor-solicit".into(),
        136 => "nd-neighbor-advert".into(),
        137 => "nd-redirect".into(),
        131 => "mld-listener-report".into(),
        143 => "mld2-listener-report".into(),
        t => t.to_string(),
    }
}

fn ether_type_name(t: u16) -> String {
    match t {
        ETH_P_IP => "ip".into(),
        ETH_P_ARP => "arp".into(),
        ETH_P_IPV6 => "ip6".into(),
        t => format!("0x{t:04x}"),
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::EtherSrc { mac, ne } => {
                write!(
                    f,
                    "ether saddr {}{}",
                    if *ne { "!= " } else { "" },
                    mac_str(mac)
                )
            }
            Match::EtherType(t) => write!(f, "ether type {}", ether_type_name(*t)),
            Match::ArpEthernetIpv4 => f.write_str("arp htype 1 arp ptype ip arp hlen 6 arp plen 4"),
            Match::ArpSenderMac(m) => write!(f, "arp saddr ether {}", mac_str(m)),
            Match::ArpSenderIp(p) => write!(f, "arp saddr ip {p}"),
            Match::Ip4Src(p) => write!(f, "ip saddr {p}"),
            Match::Ip4Dst(a) => write!(f, "ip daddr {a}"),
            Match::Ip6Src(p) => write!(f, "ip6 saddr {p}"),
            Match::Ip6Dst(a) => write!(f, "ip6 daddr {a}"),
            Match::L4Proto(IPPROTO_UDP) => f.write_str("meta l4proto udp"),
            Match::L4Proto(IPPROTO_ICMPV6) => f.write_str("meta l4proto ipv6-icmp"),
            Match::L4Proto(p) => write!(f, "meta l4proto {p}"),
            Match::SrcPort(p) => write!(f, "th sport {p}"),
            Match::DstPort(p) => write!(f, "th dport {p}"),
            Match::Icmp6Type(t) => write!(f, "icmpv6 type {}", icmp6_name(*t)),
            Match::NdTarget(p) => write!(f, "icmpv6 taddr {p}"),
            Match::OifName(n) => write!(f, "oifname \"{n}\""),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for m in &self.matches {
            write!(f, "{m} ")?;
        }
        f.write_str(match self.verdict {
            Verdict::Accept => "accept",
            Verdict::Drop => "drop",
            Verdict::Masquerade => "masquerade",
        })
    }
}

impl IngressChain {
    /// As `nft list chain` shows it (and as `nft -f` reads it).
    pub fn nft_text(&self, comment: Option<&str>) -> String {
        let mut s = format!("table netdev {} {{\n\tchain {} {{\n", self.table, self.name);
        if let Some(c) = comment {
            s.push_str(&format!("\t\tcomment \"{c}\"\n"));
        }
        s.push_str(&format!(
            "\t\ttype filter hook ingress device \"{}\" priority {}; policy accept;\n",
            self.device, self.priority
        ));
        for r in &self.rules {
            s.push_str(&format!("\t\t{r}\n"));
        }
        s.push_str("\t}\n}");
        s
    }
}

impl fmt::Display for IngressChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.nft_text(None))
    }
}

/// A source-NAT base chain on family ip's postrouting hook, with its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatChain {
    pub table: String,
    pub name: String,
    pub priority: i32,
    pub rules: Vec<Rule>,
}

impl NatChain {
    /// As `nft list chain` shows it (and as `nft -f` reads it).
    pub fn nft_text(&self, comment: Option<&str>) -> String {
        let mut s = format!("table ip {} {{\n\tchain {} {{\n", self.table, self.name);
        if let Some(c) = comment {
            s.push_str(&format!("\t\tcomment \"{c}\"\n"));
        }
        s.push_str(&format!(
            "\t\ttype nat hook postrouting priority {}; policy accept;\n",
            self.priority
        ));
        for r in &self.rules {
            s.push_str(&format!("\t\t{r}\n"));
        }
        s.push_str("\t}\n}");
        s
    }
}

impl fmt::Display for NatChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.nft_text(None))
    }
}

/// Expressions in order, as one rule's NFTA_RULE_EXPRESSIONS.
struct Exprs<'a>(&'a mut Msg);

impl Exprs<'_> {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Msg)) {
        let elem = self.0.begin(NFTA_LIST_ELEM);
        self.0.str(NFTA_EXPR_NAME, name);
        let d = self.0.begin(NFTA_EXPR_DATA);
        data(self.0);
        self.0.end(d);
        self.0.end(elem);
    }

    fn payload(&mut self, base: Base, offset: u32, len: u32) {
        self.expr("payload", |m| {
            m.u32(1, NFT_REG_1); // NFTA_PAYLOAD_DREG
            m.u32(2, base as u32); // NFTA_PAYLOAD_BASE
            m.u32(3, offset); // NFTA_PAYLOAD_OFFSET
            m.u32(4, len); // NFTA_PAYLOAD_LEN
        });
    }

    fn meta(&mut self, key: u32) {
        self.expr("meta", |m| {
            m.u32(1, NFT_REG_1); // NFTA_META_DREG
            m.u32(2, key); // NFTA_META_KEY
        });
    }

    fn cmp(&mut self, ne: bool, value: &[u8]) {
        self.expr("cmp", |m| {
            m.u32(1, NFT_REG_1); // NFTA_CMP_SREG
            m.u32(2, if ne { NFT_CMP_NEQ } else { NFT_CMP_EQ }); // NFTA_CMP_OP
            let d = m.begin(3); // NFTA_CMP_DATA
            m.bytes(NFTA_DATA_VALUE, value);
            m.end(d);
        });
    }

    /// reg1 &= mask (a prefix match).
    fn mask(&mut self, mask: &[u8]) {
        self.expr("bitwise", |m| {
            m.u32(1, NFT_REG_1); // NFTA_BITWISE_SREG
            m.u32(2, NFT_REG_1); // NFTA_BITWISE_DREG
            m.u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
            let d = m.begin(4); // NFTA_BITWISE_MASK
            m.bytes(NFTA_DATA_VALUE, mask);
            m.end(d);
            let d = m.begin(5); // NFTA_BITWISE_XOR
            m.bytes(NFTA_DATA_VALUE, &vec![0; mask.len()]);
            m.end(d);
        });
    }

    fn prefix(&mut self, base: Base, offset: u32, p: &Prefix) {
        let bytes = p.bytes();
        self.payload(base, offset, bytes.len() as u32);
        if !p.is_host() {
            self.mask(&p.mask());
        }
        self.cmp(false, &bytes);
    }

    fn verdict(&mut self, v: Verdict) {
        if v == Verdict::Masquerade {
            self.expr("masq", |_| {});
            return;
        }
        self.expr("immediate", |m| {
            m.u32(1, NFT_REG_VERDICT); // NFTA_IMMEDIATE_DREG
            let d = m.begin(2); // NFTA_IMMEDIATE_DATA
            let v2 = m.begin(NFTA_DATA_VERDICT);
            m.u32(NFTA_VERDICT_CODE, if v == Verdict::Accept { 1 } else { 0 });
            m.end(v2);
            m.end(d);
        });
    }

    fn matches(&mut self, mt: &Match) {
        match mt {
            Match::EtherSrc { mac, ne } => {
                self.payload(Base::Link, 6, 6);
                self.cmp(*ne, mac);
            }
            Match::EtherType(t) => {
                self.payload(Base::Link, 12, 2);
                self.cmp(false, &t.to_be_bytes());
            }
            Match::ArpEthernetIpv4 => {
                self.payload(Base::Network, 0, 4);
                self.cmp(false, &[0, 1, 0x08, 0x00]);
                self.payload(Base::Network, 4, 1);
                self.cmp(false, &[6]);
                self.payload(Base::Network, 5, 1);
                self.cmp(false, &[4]);
            }
            Match::ArpSenderMac(mac) => {
                self.payload(Base::Network, 8, 6);
                self.cmp(false, mac);
            }
            Match::ArpSenderIp(p) => self.prefix(Base::Network, 14, p),
            Match::Ip4Src(p) => self.prefix(Base::Network, 12, p),
            Match::Ip4Dst(a) => self.prefix(Base::Network, 16, &Prefix::host(IpAddr::V4(*a))),
            Match::Ip6Src(p) => self.prefix(Base::Network, 8, p),
            Match::Ip6Dst(a) => self.prefix(Base::Network, 24, &Prefix::host(IpAddr::V6(*a))),
            Match::L4Proto(p) => {
                self.meta(NFT_META_L4PROTO);
                self.cmp(false, &[*p]);
            }
            Match::SrcPort(p) => {
                self.payload(Base::Transport, 0, 2);
                self.cmp(false, &p.to_be_bytes());
            }
            Match::DstPort(p) => {
                self.payload(Base::Transport, 2, 2);
                self.cmp(false, &p.to_be_bytes());
            }
            Match::Icmp6Type(t) => {
                self.payload(Base::Transport, 0, 1);
                self.cmp(false, &[*t]);
            }
            Match::NdTarget(p) => self.prefix(Base::Transport, 8, p),
            Match::OifName(n) => {
                self.meta(NFT_META_OIFNAME);
                let mut name = n.as_bytes().to_vec();
                name.resize(IFNAMSIZ, 0);
                self.cmp(false, &name);
            }
        }
    }
}

impl Rule {
    /// The rule's NFTA_RULE_EXPRESSIONS into `m`. Link-layer loads are preceded by the
    /// interface-type check `nft` itself adds, so `nft list` spells them `ether ...`.
    pub(super) fn encode(&self, m: &mut Msg, attr: u16) {
        let list = m.begin(attr);
        let mut e = Exprs(m);
        if self
            .matches
            .iter()
            .any(|x| matches!(x, Match::EtherSrc { .. } | Match::EtherType(_)))
        {
            e.meta(NFT_META_IIFTYPE);
            e.cmp(false, &ARPHRD_ETHER.to_ne_bytes());
        }
        for x in &self.matches {
            e.matches(x);
        }
        e.verdict(self.verdict);
        m.end(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        let p = Prefix {
            ip: "10.1.2.0".parse().unwrap(),
            len: 23,
        };
        assert_eq!(p.mask(), vec![255, 255, 254, 0]);
        assert_eq!(p.to_string(), "10.1.2.0/23");
        let h = Prefix::host("2001:db8::5".parse().unwrap());
        assert!(h.is_host());
        assert_eq!(h.to_string(), "2001:db8::5");
    }

    /// The expressions of an encoded rule, spelled as `nft --debug=netlink` does.
    fn decode(m: &mut Msg) -> Vec<String> {
        use super::super::socket::attrs;
        let bytes = m.bytes_for_test();
        let u32be = |v: &[u8]| u32::from_be_bytes(v[..4].try_into().unwrap());
        let hex = |v: &[u8]| v.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let data = |v: &[u8]| hex(attrs(v)[0].1);
        let mut out = Vec::new();
        // After the 16-byte header and 4-byte nfgenmsg: one NFTA_RULE_EXPRESSIONS.
        let (_, list) = attrs(&bytes[20..])[0];
        for (_, elem) in attrs(list) {
            let a = attrs(elem);
            let name = super::super::socket::attr_str(a[0].1);
            let d = attrs(a[1].1);
            let get = |ty: u16| d.iter().find(|(t, _)| *t == ty).map(|(_, v)| *v).unwrap();
            out.push(match name.as_str() {
                "payload" => format!(
                    "payload load {}b @ {} + {}",
                    u32be(get(4)),
                    ["link", "network", "transport"][u32be(get(2)) as usize],
                    u32be(get(3))
                ),
                "meta" => format!("meta load {}", u32be(get(2))),
                "cmp" => format!(
                    "cmp {} {}",
                    if u32be(get(2)) == 0 { "eq" } else { "neq" },
                    data(get(3))
                ),
                "bitwise" => format!("bitwise & {} ^ {}", data(get(4)), data(get(5))),
                "immediate" => format!("verdict {}", u32be(attrs(attrs(get(2))[0].1)[0].1)),
                other => other.to_string(),
            });
        }
        out
    }

    #[test]
    fn golden_expressions() {
        let r = Rule {
            matches: vec![
                Match::EtherType(ETH_P_IPV6),
                Match::Ip6Src(Prefix {
                    ip: "fe80::".parse().unwrap(),
                    len: 64,
                }),
                Match::L4Proto(IPPROTO_ICMPV6),
                Match::Icmp6Type(136),
                Match::NdTarget(Prefix::host("2001:db8::5".parse().unwrap())),
            ],
            verdict: Verdict::Accept,
        };
        let mut m = Msg::new(0, 0, 5, 0);
        r.encode(&mut m, 4);
        assert_eq!(
            decode(&mut m),
            [
                "meta load 8",
                "cmp eq 0100",
                "payload load 2b @ link + 12",
                "cmp eq 86dd",
                "payload load 16b @ network + 8",
                "bitwise & ffffffffffffffff0000000000000000 ^ 00000000000000000000000000000000",
                "cmp eq fe800000000000000000000000000000",
                "meta load 16",
                "cmp eq 3a",
                "payload load 1b @ transport + 0",
                "cmp eq 88",
                "payload load 16b @ transport + 8",
                "cmp eq 20010db8000000000000000000000005",
                "verdict 1",
            ]
        );
        let drop = Rule {
            matches: vec![Match::EtherSrc {
                mac: [0, 0x16, 0x3e, 0, 0, 5],
                ne: true,
            }],
            verdict: Verdict::Drop,
        };
        let mut m = Msg::new(0, 0, 5, 0);
        drop.encode(&mut m, 4);
        assert_eq!(
            decode(&mut m)[2..],
            [
                "payload load 6b @ link + 6",
                "cmp neq 00163e000005",
                "verdict 0"
            ]
        );
    }

    #[test]
    fn rules_read_like_nft() {
        let r = Rule {
            matches: vec![
                Match::EtherType(ETH_P_IP),
                Match::Ip4Src(Prefix::host("0.0.0.0".parse().unwrap())),
                Match::L4Proto(IPPROTO_UDP),
                Match::SrcPort(68),
            ],
            verdict: Verdict::Accept,
        };
        assert_eq!(
            r.to_string(),
            "ether type ip ip saddr 0.0.0.0 meta l4proto udp th sport 68 accept"
        );
        let r = Rule {
            matches: vec![
                Match::Ip4Src(Prefix {
                    ip: "10.0.0.0".parse().unwrap(),
                    len: 8,
                }),
                Match::OifName("eth0".into()),
            ],
            verdict: Verdict::Masquerade,
        };
        assert_eq!(
            r.to_string(),
            "ip saddr 10.0.0.0/8 oifname \"eth0\" masquerade"
        );
    }
}
