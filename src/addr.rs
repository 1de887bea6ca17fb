//! IP addresses and prefixes as xen-vif's inputs spell them (the backend's `ip` list,
//! network-route's `gateway=`, vif-nat's one address and its router): one parser, one prefix
//! math (ipnet's), one link-local test.
//! Knows nothing of Xen or the kernel.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, anyhow, bail};
use ipnet::IpNet;

/// fe80::/10: link-local IPv6 addresses come and go with a link; nobody configures them.
pub fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// The first address of `ip`'s prefix of length `len`.
pub fn network(ip: IpAddr, len: u8) -> IpAddr {
    IpNet::new(ip, len).map_or(ip, |n| n.network())
}

/// The IPv4 broadcast address ifupdown gives a prefix (none for /31 and /32, nor for IPv6).
pub fn broadcast(ip: IpAddr, len: u8) -> Option<std::net::Ipv4Addr> {
    match IpNet::new(ip, len) {
        Ok(IpNet::V4(n)) if len <= 30 => Some(n.broadcast()),
        _ => None,
    }
}

/// `ADDR[/LEN]` with a strict length (digits only, within the family); no length: `default`
/// decides (`None` refuses). Errors name `what` (e.g. `ip entry "10.0.0.1/x"`).
pub fn parse_prefixed(s: &str, what: &str, default_host: bool) -> Result<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| anyhow!("{what}: {addr:?} is not an IPv4 or IPv6 address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        None if default_host => max,
        None => bail!("{what}: give the prefix length"),
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max && !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| anyhow!("{what}: bad prefix length {l:?}"))?,
    };
    Ok((ip, prefix_len))
}

/// Parse the backend's `mac` (`00:16:3e:..`): a unicast Ethernet address.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || anyhow::anyhow!("mac {s:?} is not a unicast Ethernet address");
    let parts: Vec<&str> = s.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 2 {
            return Err(bad());
        }
        mac[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 || mac == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

/// Not an address anyone can use as a host's or a guest's own.
pub fn is_unusable(ip: &IpAddr) -> bool {
    ip.is_unspecified() || ip.is_multicast() || ip.is_loopback()
}

/// One entry of the backend's `ip` list: an address or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestAddr {
    pub ip: IpAddr,
    pub prefix_len: u8,
}

impl GuestAddr {
    fn net(&self) -> IpNet {
        // Built from a parsed, in-range length: cannot fail.
        IpNet::new(self.ip, self.prefix_len).unwrap_or_else(|_| IpNet::from(self.ip))
    }

    pub fn overlaps(&self, other: &GuestAddr) -> bool {
        let (a, b) = (self.net(), other.net());
        a.contains(&b) || b.contains(&a)
    }

    pub fn is_host(&self) -> bool {
        self.prefix_len == if self.ip.is_ipv4() { 32 } else { 128 }
    }
}

/// More than this is not a guest's address list but a mistake (or an attack on the host's FIB).
pub const MAX_GUEST_ADDRS: usize = 256;

/// Parse the space-separated `ip` list; every entry is checked before anything changes.
pub fn parse_guest_addrs(list: &str) -> Result<Vec<GuestAddr>> {
    let mut out: Vec<GuestAddr> = Vec::new();
    for entry in list.split_whitespace() {
        if out.len() == MAX_GUEST_ADDRS {
            bail!("ip lists more than {MAX_GUEST_ADDRS} entries");
        }
        let (ip, prefix_len) = parse_prefixed(entry, &format!("ip entry {entry:?}"), true)?;
        if prefix_len == 0 {
            bail!("ip entry {entry:?} would route everything to the guest");
        }
        if is_unusable(&ip) {
            bail!("ip entry {entry:?} is not a unicast address");
        }
        if network(ip, prefix_len) != ip {
            bail!(
                "ip entry {entry:?} has host bits set (the prefix is {}/{prefix_len})",
                network(ip, prefix_len)
            );
        }
        let g = GuestAddr { ip, prefix_len };
        if out.contains(&g) {
            bail!("ip entry {entry:?} is given twice");
        }
        // Overlapping entries would give one guest two routes for the same addresses, and make
        // offline of one remove the other's: refuse them.
        if let Some(o) = out.iter().find(|o| o.overlaps(&g)) {
            bail!("ip entry {entry:?} overlaps {}/{}", o.ip, o.prefix_len);
        }
        out.push(g);
    }
    Ok(out)
}

/// What the stock script adds to the guest's last octet for the router's.
pub const ROUTER_OFFSET: u8 = 127;

/// NAT mode's (stock vif-nat's) addressing, from plain numbers: the guest's one IPv4 address:
/// `ip` (an address, optionally with a prefix length, which the
/// stock script ignores too), or the stock default from the device's ids.
pub fn nat_guest_address(ip: Option<&str>, domid: u32, devid: u32) -> Result<GuestAddr> {
    let ip = match ip.map(str::trim).filter(|s| !s.is_empty()) {
        Some(given) => parse_nat_ip(given)?,
        None => nat_default_address(domid, devid)?,
    };
    Ok(GuestAddr {
        ip: IpAddr::V4(ip),
        prefix_len: 32,
    })
}

fn parse_nat_ip(given: &str) -> Result<Ipv4Addr> {
    if given.split_whitespace().count() > 1 {
        bail!("ip {given:?}: vif-nat takes one IPv4 address");
    }
    let (addr, len) = match given.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (given, None),
    };
    if let Some(l) = len {
        if l.is_empty()
            || !l.bytes().all(|b| b.is_ascii_digit())
            || l.parse::<u8>().map_or(true, |n| !(1..=32).contains(&n))
        {
            bail!("ip {given:?}: bad prefix length {l:?}");
        }
    }
    let ip: Ipv4Addr = addr.parse().map_err(|_| {
        anyhow::anyhow!("ip {given:?} is not an IPv4 address (vif-nat is IPv4 only)")
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() || ip.is_broadcast() {
        bail!("ip {given:?} is not a unicast address");
    }
    if ip.octets()[3] > u8::MAX - ROUTER_OFFSET {
        bail!(
            "ip {given:?}: the router address is the guest's with {ROUTER_OFFSET} added to the \
             last octet, so that octet must be at most {}",
            u8::MAX - ROUTER_OFFSET
        );
    }
    Ok(ip)
}

/// `10.<domid/256>.<domid%256>.<devid+1>`, as the stock vif-nat derives it.
pub fn nat_default_address(domid: u32, devid: u32) -> Result<Ipv4Addr> {
    let host = devid + 1;
    if domid > 0xffff || host > u32::from(u8::MAX - ROUTER_OFFSET) {
        bail!(
            "vif{}.{} has no default vif-nat address (10.<domid/256>.<domid%256>.<devid+1> needs \
             devid < {}): give ip=",
            domid,
            devid,
            u8::MAX - ROUTER_OFFSET
        );
    }
    Ok(Ipv4Addr::new(
        10,
        (domid / 256) as u8,
        (domid % 256) as u8,
        host as u8,
    ))
}

/// The guest's router: its address with [`ROUTER_OFFSET`] added to the last octet.
pub fn nat_router_address(guest: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = guest.octets();
    Ipv4Addr::new(a, b, c, d.saturating_add(ROUTER_OFFSET))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_addresses() {
        let g =
            parse_guest_addrs("80.68.86.194  80.68.86.196/31 2001:db8::5 2001:db8:1::/64").unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[1].prefix_len, 31);
        assert!(g[0].is_host() && g[2].is_host() && !g[3].is_host());
        assert!(parse_guest_addrs("").unwrap().is_empty());
    }

    #[test]
    fn bad_guest_addresses() {
        for bad in [
            "junk",
            "10.0.0.1/33",
            "10.0.0.1/x",
            "10.0.0.1/",
            "10.0.0.0/0",
            "10.0.0.5/24",
            "fe80::1%eth0",
            "224.0.0.1",
            "0.0.0.0",
            "127.0.0.1",
            "10.0.0.1 10.0.0.1",
            "10.0.0.1/+8",
            "10.0.0.0/24 10.0.0.5",
            "2001:db8::5 2001:db8::/64",
        ] {
            assert!(parse_guest_addrs(bad).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..300)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1))
            .collect();
        assert!(parse_guest_addrs(&many.join(" ")).is_err());
    }

    #[test]
    fn prefix_math() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(network(ip("10.9.0.5"), 29), ip("10.9.0.0"));
        assert_eq!(network(ip("2001:db8::5"), 64), ip("2001:db8::"));
        assert_eq!(
            broadcast(ip("10.9.0.1"), 29),
            Some("10.9.0.7".parse().unwrap())
        );
        assert_eq!(broadcast(ip("10.9.0.1"), 31), None);
        assert_eq!(broadcast(ip("2001:db8::1"), 64), None);
        assert!(is_ipv6_link_local(&ip("fe80::1")));
        assert!(is_ipv6_link_local(&ip("febf::1")));
        assert!(!is_ipv6_link_local(&ip("fec0::1")));
        assert!(!is_ipv6_link_local(&ip("10.0.0.1")));
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("00:16:3e:00:00:05").unwrap(),
            [0x00, 0x16, 0x3e, 0, 0, 5]
        );
        assert_eq!(
            parse_mac("0:16:3E:0:0:5").unwrap(),
            [0x00, 0x16, 0x3e, 0, 0, 5]
        );
        for bad in [
            "",
            "00:16:3e:00:00",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "00:16:3e:00:00:0g",
            "00:16:3e:00:00:005",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nat_addresses_as_stock_derives_them() {
        assert_eq!(nat_default_address(5, 0).unwrap().to_string(), "10.0.5.1");
        assert_eq!(
            nat_default_address(300, 1).unwrap().to_string(),
            "10.1.44.2"
        );
        assert!(nat_default_address(5, 127).is_ok());
        assert!(nat_default_address(5, 128).is_err());
        assert_eq!(
            nat_router_address("10.0.5.1".parse().unwrap()).to_string(),
            "10.0.5.128"
        );
        let g = nat_guest_address(Some("192.168.7.20/24"), 5, 0).unwrap();
        assert_eq!(g.ip.to_string(), "192.168.7.20");
        assert_eq!(g.prefix_len, 32);
    }

    #[test]
    fn bad_nat_addresses() {
        for bad in [
            "10.0.0.1 10.0.0.2",
            "2001:db8::1",
            "10.0.0.200",
            "junk",
            "10.0.0.1/33",
            "10.0.0.1/",
            "0.0.0.0",
            "224.0.0.1",
            "127.0.0.1",
        ] {
            assert!(nat_guest_address(Some(bad), 5, 0).is_err(), "{bad}");
        }
    }
}
