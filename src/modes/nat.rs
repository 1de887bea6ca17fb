//! NAT mode (vif-nat): each guest sits on a private point-to-point link and dom0 routes (and,
//! with network-nat, masquerades) for it. The guest's address is its `ip`, or
//! `10.<domid/256>.<domid%256>.<devid+1>` as the stock script derives it; the host's end (the
//! guest's router) is the same address with 127 added to the last octet, on the vif as /32,
//! with a host route to the guest from it and proxy ARP on the vif. The stock script also writes
//! an ISC dhcpd entry; here a dnsmasq host entry when `nat_dhcp_hosts` is configured.
//!
//! Unlike stock, offline takes the router address, route and proxy_arp away again, and online
//! twice changes nothing. `observe` reads the kernel (and the DHCP files); `plan_online` and
//! `plan_offline` are pure.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Result, bail};

use super::route::{address_step, has_route, host_route};
use super::{Vif, filter, observe_vif};
use crate::addr::{GuestAddr, nat_router_address};
use crate::config;
use crate::dhcp_hosts::{self, Entry, Files};
use crate::ifname::IfName;
use crate::invocation::{DeviceId, Hotplug, TypeIf};
use crate::netlink::{Link, Netlink, RT_TABLE_MAIN, Route};
use crate::plan::Step;
use crate::sysctl;

/// The DHCP host name: `dom<domid>`, and `-<devid+1>` for the second vif on, as stock.
pub fn host_name(id: DeviceId) -> String {
    match id.devid {
        0 => format!("dom{}", id.domid),
        n => format!("dom{}-{}", id.domid, u64::from(n) + 1),
    }
}

fn guest_ipv4(hp: &Hotplug) -> Result<Ipv4Addr> {
    match hp.ip.as_slice() {
        [
            GuestAddr {
                ip: IpAddr::V4(ip),
                prefix_len: 32,
            },
        ] => Ok(*ip),
        _ => bail!("internal error: vif-nat without its one guest address"),
    }
}

/// What the kernel (and the DHCP files) have for this vif.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The device, its addresses and the filter's state.
    pub vif: Vif,
    /// IPv4 routes of the main table over the device.
    pub routes: Vec<Route>,
    /// `proxy_arp` of the device, and what a new interface gets.
    pub proxy_arp: String,
    pub proxy_arp_default: String,
    /// The DHCP files, when configured, and whether they hold this guest's entry as wanted
    /// (online) or anything under its name (offline).
    pub dhcp: Option<Files>,
    pub dhcp_present: bool,
}

fn dhcp_files() -> Option<Files> {
    let cfg = config::current().as_ref().unwrap_or(config::stock());
    cfg.nat_dhcp_hosts.as_ref().map(|hosts| Files {
        hosts: hosts.clone(),
        options: cfg.nat_dhcp_options.clone(),
        pid_file: cfg.nat_dhcp_pid_file.clone(),
    })
}

/// The guest's DHCP entry (online needs the backend's `mac` for it).
pub fn dhcp_entry(hp: &Hotplug) -> Result<Entry> {
    let Some(mac) = hp.mac else {
        bail!("the backend has no mac, which the DHCP entry (nat_dhcp_hosts) needs");
    };
    let ip = guest_ipv4(hp)?;
    Ok(Entry {
        mac,
        ip,
        name: host_name(hp.id),
        router: nat_router_address(ip),
    })
}

pub fn observe(nl: &mut Netlink, hp: &Hotplug) -> Result<Observed> {
    let vif = observe_vif(nl, hp)?;
    if hp.command.is_up() && hp.type_if == TypeIf::Vif {
        // Before the DHCP entry's own complaints.
        vif.require(hp)?;
    }
    let mut o = Observed {
        proxy_arp_default: super::route::proxy_arp_default(),
        dhcp: dhcp_files(),
        ..Default::default()
    };
    if hp.type_if == TypeIf::Tap {
        // The stock script leaves the emulated NIC's tap alone (bar the rename).
        o.vif = vif;
        return Ok(o);
    }
    if let Some(files) = &o.dhcp {
        o.dhcp_present = if hp.command.is_up() {
            dhcp_hosts::has(files, &dhcp_entry(hp)?)?
        } else {
            dhcp_hosts::has_name(files, &host_name(hp.id))?
        };
    }
    if let Some(l) = vif.device(hp) {
        o.routes = nl.routes(false, Some(l.index))?;
        // The conf directory moves with a rename: read it under the current name.
        o.proxy_arp = IfName::new(&l.name)
            .ok()
            .and_then(|n| sysctl::read(&sysctl::ipv4_conf(&n, "proxy_arp")).ok())
            .unwrap_or_else(|| "0".into());
    }
    o.vif = vif;
    Ok(o)
}

/// The route to the guest, from the router address: no metric, as stock.
fn guest_route(hp: &Hotplug, index: u32) -> Result<Route> {
    let ip = guest_ipv4(hp)?;
    Ok(host_route(
        &hp.ip[0],
        index,
        IpAddr::V4(nat_router_address(ip)),
        None,
    ))
}

/// online: the link up, the router address on it, the route to the guest, proxy ARP, and the
/// DHCP entry — in the stock script's order (a route's device must be up, its source local).
pub fn plan_online(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    if hp.type_if == TypeIf::Tap {
        let Some(link) = o.vif.device(hp) else {
            return Ok(Vec::new());
        };
        let (mut steps, downs) = o.vif.down_and_rename(hp, link, false)?;
        if downs {
            steps.push(up(link, hp, true));
        }
        return Ok(steps);
    }
    let link = o.vif.require(hp)?;
    let (mut steps, rename_downs) = o.vif.down_and_rename(hp, link, false)?;
    steps.extend(filter::plan_online(&o.vif.filter, hp, link));
    // `ip link set dev VIF up arp on`, as stock: proxy ARP answers on the vif.
    if link.noarp {
        steps.push(Step::SetArp {
            index: link.index,
            name: hp.wanted_name.to_string(),
            on: true,
        });
    }
    if !link.up || rename_downs {
        steps.push(up(link, hp, true));
    }
    let name = hp.wanted_name.to_string();
    let router = nat_router_address(guest_ipv4(hp)?);
    steps.extend(address_step(
        &o.vif.addresses,
        link.index,
        &name,
        IpAddr::V4(router),
        32,
    ));
    let route = guest_route(hp, link.index)?;
    if !has_route(&o.routes, &route) {
        steps.push(Step::AddRoute {
            dev: name.clone(),
            route,
        });
    }
    steps.extend(Step::sysctl_change(
        sysctl::ipv4_conf(&hp.wanted_name, "proxy_arp"),
        "1",
        &o.proxy_arp,
    ));
    if let (Some(files), false) = (&o.dhcp, o.dhcp_present) {
        steps.push(Step::DhcpHost {
            files: files.clone(),
            entry: dhcp_entry(hp)?,
        });
    }
    Ok(steps)
}

fn up(link: &Link, hp: &Hotplug, up: bool) -> Step {
    Step::SetUp {
        index: link.index,
        name: hp.wanted_name.to_string(),
        up,
    }
}

/// offline: everything online added, newest first; a device that is gone leaves only the DHCP
/// entry and the filter to remove.
pub fn plan_offline(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    if hp.type_if == TypeIf::Tap {
        return Ok(steps);
    }
    if let (Some(files), true) = (&o.dhcp, o.dhcp_present) {
        steps.push(Step::DelDhcpHost {
            files: files.clone(),
            name: host_name(hp.id),
        });
    }
    let Some(link) = o.vif.device(hp) else {
        steps.extend(filter::plan_offline(&o.vif.filter, hp, None));
        return Ok(steps);
    };
    // No address (online refused it): no route or router address can have been added.
    let ip = guest_ipv4(hp).ok();
    let router = ip.map(|ip| IpAddr::V4(nat_router_address(ip)));
    for r in o.routes.iter().filter(|r| {
        ip.is_some_and(|ip| r.dst == IpAddr::V4(ip))
            && r.prefix_len == 32
            && r.oif == Some(link.index)
            && r.table == RT_TABLE_MAIN
            && r.metric.unwrap_or(0) == 0
    }) {
        steps.push(Step::DelRoute {
            dev: link.name.clone(),
            route: r.clone(),
        });
    }
    for a in o
        .vif
        .addresses
        .iter()
        .filter(|a| Some(a.ip) == router && a.prefix_len == 32)
    {
        steps.push(Step::DelAddress {
            name: link.name.clone(),
            addr: a.clone(),
        });
    }
    if let Ok(n) = IfName::new(&link.name) {
        steps.extend(Step::sysctl_change(
            sysctl::ipv4_conf(&n, "proxy_arp"),
            &o.proxy_arp_default,
            &o.proxy_arp,
        ));
    }
    if link.up {
        steps.push(Step::SetUp {
            index: link.index,
            name: link.name.clone(),
            up: false,
        });
    }
    steps.extend(filter::plan_offline(&o.vif.filter, hp, Some(link)));
    Ok(steps)
}

pub fn online(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_online(&observe(nl, hp)?, hp)
}

pub fn offline(nl: &mut Netlink, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_offline(&observe(nl, hp)?, hp)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::invocation::{Command, Mode};
    use crate::netlink::Address;

    /// The vif as observed: `link` under netback's name, with `addresses`.
    fn device(link: Link, addresses: Vec<Address>) -> Vif {
        Vif {
            at_kernel_name: Some(link),
            addresses,
            ..Default::default()
        }
    }

    fn id(domid: u32, devid: u32) -> DeviceId {
        DeviceId { domid, devid }
    }

    fn hp(command: Command, devid: u32, ip: Option<&str>) -> Hotplug {
        let kernel = IfName::new(&format!("vif5.{devid}")).unwrap();
        Hotplug {
            script: "vif-nat",
            mode: Mode::Nat,
            command,
            type_if: TypeIf::Vif,
            id: id(5, devid),
            backend: format!("backend/vif/5/{devid}"),
            kernel_name: kernel.clone(),
            wanted_name: kernel,
            bridge: None,
            gatewaydev: None,
            ip: vec![nat_guest_address_of(ip, id(5, devid)).unwrap()],
            mtu: None,
            vlan: None,
            mac: Some([0x00, 0x16, 0x3e, 0, 0, 5]),
            antispoof: false,
            ovs_vlans: Default::default(),
        }
    }

    fn vif(up: bool) -> Link {
        Link {
            index: 7,
            name: "vif5.0".into(),
            up,
            mtu: 1500,
            ..Default::default()
        }
    }

    fn nat_guest_address_of(ip: Option<&str>, id: DeviceId) -> Result<GuestAddr> {
        crate::addr::nat_guest_address(ip, id.domid, id.devid)
    }

    fn text(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn host_names_as_stock() {
        assert_eq!(host_name(id(5, 0)), "dom5");
        assert_eq!(host_name(id(5, 1)), "dom5-2");
    }

    #[test]
    fn online_on_a_fresh_vif() {
        let o = Observed {
            vif: device(vif(false), Vec::new()),
            proxy_arp: "0".into(),
            proxy_arp_default: "0".into(),
            ..Default::default()
        };
        assert_eq!(
            text(&plan_online(&o, &hp(Command::Online, 0, None)).unwrap()),
            [
                "ip link set vif5.0 up",
                "ip address add 10.0.5.128/32 dev vif5.0",
                "ip route add 10.0.5.1/32 dev vif5.0 src 10.0.5.128",
                "echo 1 > /proc/sys/net/ipv4/conf/vif5.0/proxy_arp",
            ]
        );
    }

    #[test]
    fn arp_goes_on() {
        let mut link = vif(false);
        link.noarp = true;
        let o = Observed {
            vif: device(link, Vec::new()),
            proxy_arp: "1".into(),
            ..Default::default()
        };
        let steps = text(&plan_online(&o, &hp(Command::Online, 0, None)).unwrap());
        assert_eq!(
            steps[..2],
            ["ip link set vif5.0 arp on", "ip link set vif5.0 up"]
        );
    }

    #[test]
    fn online_with_ip_and_dhcp() {
        let files = Files {
            hosts: PathBuf::from("/run/xen-vif-dhcp/hosts"),
            options: Some(PathBuf::from("/run/xen-vif-dhcp/options")),
            pid_file: None,
        };
        let mut link = vif(false);
        link.name = "vif5.1".into();
        let o = Observed {
            vif: device(link, Vec::new()),
            proxy_arp: "0".into(),
            dhcp: Some(files),
            ..Default::default()
        };
        let mut h = hp(Command::Online, 1, Some("192.168.7.20"));
        h.kernel_name = IfName::new("vif5.1").unwrap();
        h.wanted_name = h.kernel_name.clone();
        assert_eq!(
            text(&plan_online(&o, &h).unwrap()),
            [
                "ip link set vif5.1 up",
                "ip address add 192.168.7.147/32 dev vif5.1",
                "ip route add 192.168.7.20/32 dev vif5.1 src 192.168.7.147",
                "echo 1 > /proc/sys/net/ipv4/conf/vif5.1/proxy_arp",
                "echo '00:16:3e:00:00:05,set:xen-vif-dom5-2,192.168.7.20,dom5-2' >> /run/xen-vif-dhcp/hosts; \
                 echo 'tag:xen-vif-dom5-2,option:router,192.168.7.147' >> /run/xen-vif-dhcp/options",
            ]
        );
    }

    #[test]
    fn online_twice_changes_nothing() {
        let h = hp(Command::Online, 0, None);
        let link = vif(true);
        let mut route = guest_route(&h, link.index).unwrap();
        // The kernel reports the metric of a route added without one as 0.
        route.metric = Some(0);
        let o = Observed {
            vif: device(
                link,
                vec![Address::new(7, "10.0.5.128".parse().unwrap(), 32)],
            ),
            routes: vec![route],
            proxy_arp: "1".into(),
            dhcp: Some(Files {
                hosts: "/h".into(),
                options: None,
                pid_file: None,
            }),
            dhcp_present: true,
            ..Default::default()
        };
        assert!(plan_online(&o, &h).unwrap().is_empty());
    }

    #[test]
    fn offline_takes_it_all_away() {
        let h = hp(Command::Offline, 0, None);
        let link = vif(true);
        let route = guest_route(&h, link.index).unwrap();
        let o = Observed {
            vif: device(
                link,
                vec![Address::new(7, "10.0.5.128".parse().unwrap(), 32)],
            ),
            routes: vec![route],
            proxy_arp: "1".into(),
            proxy_arp_default: "0".into(),
            dhcp: Some(Files {
                hosts: "/h".into(),
                options: None,
                pid_file: None,
            }),
            dhcp_present: true,
        };
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "sed -i '/set:xen-vif-dom5,/d' /h",
                "ip route del 10.0.5.1/32 dev vif5.0 src 10.0.5.128",
                "ip address del 10.0.5.128/32 dev vif5.0",
                "echo 0 > /proc/sys/net/ipv4/conf/vif5.0/proxy_arp",
                "ip link set vif5.0 down",
                "conntrack -D --orig-src 10.0.5.1; conntrack -D --orig-dst 10.0.5.1",
            ]
        );
        // Gone, and the DHCP entry too: only the guest's connections are left to forget.
        let gone = Observed {
            dhcp_present: false,
            ..Default::default()
        };
        assert_eq!(
            text(&plan_offline(&gone, &h).unwrap()),
            ["conntrack -D --orig-src 10.0.5.1; conntrack -D --orig-dst 10.0.5.1"]
        );
    }

    #[test]
    fn the_tap_is_left_alone() {
        let mut h = hp(Command::Add, 0, None);
        h.type_if = TypeIf::Tap;
        let o = Observed {
            vif: device(vif(false), Vec::new()),
            ..Default::default()
        };
        assert!(plan_online(&o, &h).unwrap().is_empty());
        h.command = Command::Remove;
        assert!(plan_offline(&o, &h).unwrap().is_empty());
    }
}
