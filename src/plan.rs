//! Changes as data: modes compute a list of steps from what the kernel has, then the executor
//! applies them, undoing this run's steps if one fails (`apply`), or applies every step and
//! collects the errors (`teardown`). `--dry-run` prints the same list.

use std::fmt;
use std::net::IpAddr;

use anyhow::{Context, Result, anyhow};
use nix::errno::Errno;

use crate::dhcp_hosts;
use crate::log;
use crate::netlink::{Address, LinkChange, Netlink, NetlinkError, NewLink, PortVlan, Route};
use crate::nftables::{self, IngressChain, NatChain, Nfnetlink, Prefix};
use crate::ovsdb::{Ovsdb, Port as OvsPort, PortConfig};
use crate::sysctl;
use crate::xenstore::Store;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `ip link set NAME up|down`
    SetUp {
        index: u32,
        name: String,
        up: bool,
    },
    /// `ip link set NAME arp on|off`
    SetArp {
        index: u32,
        name: String,
        on: bool,
    },
    /// Rename, and set the alias in the same message (for a vif: the one that records whose
    /// device it is, so no kill between the two can leave a renamed device we cannot
    /// recognise). `None` clears the alias; `old_alias` is what the undo puts back.
    Rename {
        index: u32,
        from: String,
        to: String,
        alias: Option<String>,
        old_alias: Option<String>,
    },
    AddAltName {
        index: u32,
        name: String,
        alt: String,
    },
    DelAltName {
        index: u32,
        name: String,
        alt: String,
    },
    /// `best_effort`: the stock script ignores a failure here (`|| true`).
    SetMac {
        index: u32,
        name: String,
        mac: Vec<u8>,
        old: Vec<u8>,
        best_effort: bool,
    },
    SetMtu {
        index: u32,
        name: String,
        mtu: u32,
        old: u32,
    },
    /// `master: 0` leaves the bridge.
    SetMaster {
        index: u32,
        name: String,
        master: u32,
        master_name: String,
        old: u32,
    },
    AddAddress {
        name: String,
        addr: Address,
    },
    DelAddress {
        name: String,
        addr: Address,
    },
    AddRoute {
        dev: String,
        route: Route,
    },
    DelRoute {
        dev: String,
        route: Route,
    },
    AddPortVlans {
        index: u32,
        name: String,
        vlans: Vec<PortVlan>,
    },
    DelPortVlans {
        index: u32,
        name: String,
        vlans: Vec<PortVlan>,
    },
    AddProxyNeighbour {
        index: u32,
        dev: String,
        ip: IpAddr,
    },
    DelProxyNeighbour {
        index: u32,
        dev: String,
        ip: IpAddr,
    },
    Sysctl {
        path: String,
        value: String,
        old: String,
    },
    /// `index`: the new link's ifindex, chosen by the plan so later steps can name it (0: the
    /// kernel picks).
    CreateLink {
        name: String,
        link: NewLink,
        index: u32,
    },
    /// Deleting a link cannot be undone by recreating it; only links this run created are deleted.
    DeleteLink {
        index: u32,
        name: String,
    },
    XsWrite {
        path: String,
        value: String,
    },
    /// Make the device's filter table hold exactly `chain` (on its ingress hook), in one
    /// nf_tables transaction (`replace`: a table of that name is there, and is deleted with
    /// what it holds in the same transaction).
    Filter {
        chain: Box<IngressChain>,
        comment: String,
        replace: bool,
    },
    /// Delete a filter table with its chain and rules, in one message.
    Unfilter {
        table: String,
    },
    /// `ip neigh replace IP lladdr MAC dev DEV nud permanent`
    AddNeighbour {
        index: u32,
        dev: String,
        ip: IpAddr,
        mac: Vec<u8>,
    },
    DelNeighbour {
        index: u32,
        dev: String,
        ip: IpAddr,
        mac: Vec<u8>,
    },
    /// Delete the conntrack entries from or to these addresses (cannot be undone).
    ForgetConnections {
        prefixes: Vec<Prefix>,
    },
    /// Make the source-NAT chain exactly `chain` in one nf_tables transaction (`exists`: a chain
    /// of that name is there and is deleted in the same transaction).
    Masquerade {
        chain: Box<NatChain>,
        comment: String,
        exists: bool,
    },
    /// Delete a source-NAT chain with its rules, and its table once no chain is left in it.
    Unmasquerade {
        table: String,
        chain: String,
    },
    /// Add (or replace) a DHCP server's entry for a guest, and tell the server.
    DhcpHost {
        files: dhcp_hosts::Files,
        entry: dhcp_hosts::Entry,
    },
    /// Remove the entry named `name` (cannot be undone: the old entry is not known).
    DelDhcpHost {
        files: dhcp_hosts::Files,
        name: String,
    },
    /// Make `name` a port of Open vSwitch bridge `bridge` with exactly `config`, replacing any
    /// port of that name, in one OVSDB transaction; `old` is the port it replaces (undo puts
    /// back its bridge, VLAN columns and external-ids; other columns are not kept).
    OvsAddPort {
        bridge: String,
        name: String,
        config: PortConfig,
        old: Option<OvsPort>,
    },
    /// Remove Open vSwitch port `name` if it exists; `old` is what undo puts back.
    OvsDelPort {
        name: String,
        old: Option<OvsPort>,
    },
}

/// A word for a shell: single-quoted unless plainly safe.
fn sh_word(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_.,:/=@%+-".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `-- add-port ...` as ovs-vsctl takes it: the port's columns, then its interface's.
fn ovs_add_port_str(bridge: &str, name: &str, c: &PortConfig) -> String {
    let mut s = format!("-- add-port {} {}", sh_word(bridge), sh_word(name));
    for w in c.vlan_words() {
        s.push(' ');
        s.push_str(&sh_word(&w));
    }
    if !c.external_ids.is_empty() {
        s.push_str(&format!(" -- set interface {}", sh_word(name)));
        let q = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        for (k, v) in &c.external_ids {
            s.push(' ');
            s.push_str(&sh_word(&format!("external-ids:{}={}", q(k), q(v))));
        }
    }
    s
}

/// A kernel without what masquerading needs.
pub const NO_NFT_NAT: &str =
    "kernel has no nf_tables masquerading (CONFIG_NF_TABLES, CONFIG_NF_NAT, CONFIG_NFT_MASQ)";

/// A kernel without what the filter needs: the one line to show, naming the switch.
pub const NO_NFTABLES: &str = "kernel has no nf_tables netdev ingress filtering (CONFIG_NF_TABLES, CONFIG_NF_TABLES_NETDEV); set antispoof = false in /etc/xen/xen-vif.toml to run guests without the anti-spoofing filter";

fn mac_str(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn vlans_str(v: &[PortVlan]) -> String {
    v.iter()
        .map(|p| {
            format!(
                "{}{}{}",
                p.vid,
                if p.pvid { " pvid" } else { "" },
                if p.untagged { " untagged" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn index_str(index: u32) -> String {
    if index == 0 {
        String::new()
    } else {
        format!(" index {index}")
    }
}

/// A link kind the running kernel does not have (EOPNOTSUPP on creation): the one line to show.
#[derive(Debug)]
pub struct Unsupported(pub &'static str);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Unsupported {}

fn unsupported(link: &NewLink) -> Unsupported {
    Unsupported(match link {
        NewLink::Dummy => "kernel has no dummy link support (CONFIG_DUMMY)",
        NewLink::Vlan { .. } => "kernel has no 802.1q support (CONFIG_VLAN_8021Q)",
        NewLink::Bridge {
            vlan_filtering: true,
        } => "kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        NewLink::Bridge { .. } => "kernel has no bridge support (CONFIG_BRIDGE)",
    })
}

/// A route as `ip route` spells it (without the verb).
pub fn route_str(r: &Route, dev: &str) -> String {
    let mut s = format!("{}/{} dev {dev}", r.dst, r.prefix_len);
    if let Some(g) = r.gateway {
        s = format!("{}/{} via {g} dev {dev}", r.dst, r.prefix_len);
    }
    if let Some(src) = r.src {
        s.push_str(&format!(" src {src}"));
    }
    if let Some(m) = r.metric {
        s.push_str(&format!(" metric {m}"));
    }
    if r.table != crate::netlink::RT_TABLE_MAIN {
        s.push_str(&format!(" table {}", r.table));
    }
    s
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::SetUp { name, up, .. } => {
                write!(f, "ip link set {name} {}", if *up { "up" } else { "down" })
            }
            Step::SetArp { name, on, .. } => {
                write!(
                    f,
                    "ip link set {name} arp {}",
                    if *on { "on" } else { "off" }
                )
            }
            Step::Rename {
                from,
                to,
                alias: Some(a),
                ..
            } => write!(f, "ip link set {from} name {to} alias \"{a}\""),
            Step::Rename { from, to, .. } => write!(f, "ip link set {from} name {to}"),
            Step::AddAltName { name, alt, .. } => {
                write!(f, "ip link property add dev {name} altname {alt}")
            }
            Step::DelAltName { name, alt, .. } => {
                write!(f, "ip link property del dev {name} altname {alt}")
            }
            Step::SetMac { name, mac, .. } => {
                write!(f, "ip link set {name} address {}", mac_str(mac))
            }
            Step::SetMtu { name, mtu, .. } => write!(f, "ip link set {name} mtu {mtu}"),
            Step::SetMaster {
                name, master: 0, ..
            } => write!(f, "ip link set {name} nomaster"),
            Step::SetMaster {
                name, master_name, ..
            } => write!(f, "ip link set {name} master {master_name}"),
            Step::AddAddress { name, addr } => {
                write!(
                    f,
                    "ip address add {}/{} dev {name}",
                    addr.ip, addr.prefix_len
                )
            }
            Step::DelAddress { name, addr } => {
                write!(
                    f,
                    "ip address del {}/{} dev {name}",
                    addr.ip, addr.prefix_len
                )
            }
            Step::AddRoute { dev, route } => write!(f, "ip route add {}", route_str(route, dev)),
            Step::DelRoute { dev, route } => write!(f, "ip route del {}", route_str(route, dev)),
            Step::AddPortVlans { name, vlans, .. } => {
                write!(f, "bridge vlan add dev {name} vid {}", vlans_str(vlans))
            }
            Step::DelPortVlans { name, vlans, .. } => {
                write!(f, "bridge vlan del dev {name} vid {}", vlans_str(vlans))
            }
            Step::AddProxyNeighbour { dev, ip, .. } => {
                write!(f, "ip neigh add proxy {ip} dev {dev}")
            }
            Step::DelProxyNeighbour { dev, ip, .. } => {
                write!(f, "ip neigh del proxy {ip} dev {dev}")
            }
            Step::Sysctl { path, value, .. } => write!(f, "echo {value} > {path}"),
            Step::CreateLink { name, link, index } => match link {
                NewLink::Bridge { vlan_filtering } => write!(
                    f,
                    "ip link add {name}{} type bridge stp_state 0 forward_delay 0{}",
                    index_str(*index),
                    if *vlan_filtering {
                        " vlan_filtering 1"
                    } else {
                        ""
                    }
                ),
                NewLink::Dummy => write!(f, "ip link add {name}{} type dummy", index_str(*index)),
                NewLink::Vlan { id, .. } => write!(
                    f,
                    "ip link add {name}{} type vlan id {id}",
                    index_str(*index)
                ),
            },
            Step::DeleteLink { name, .. } => write!(f, "ip link del {name}"),
            Step::XsWrite { path, value } => write!(f, "xenstore-write {path} {value}"),
            Step::Filter {
                chain,
                comment,
                replace,
            } => {
                // What `nft -f` would need to do the same in one transaction.
                writeln!(f, "nft -f - <<'EOF'")?;
                if *replace {
                    // `delete` after `add` cannot fail; nft before 1.0.8 has no `destroy`.
                    writeln!(f, "add table netdev {}", chain.table)?;
                    writeln!(f, "delete table netdev {}", chain.table)?;
                }
                writeln!(f, "{}", chain.nft_text(Some(comment)))?;
                write!(f, "EOF")
            }
            Step::Unfilter { table } => write!(f, "nft delete table netdev {table}"),
            Step::AddNeighbour { dev, ip, mac, .. } => write!(
                f,
                "ip neigh replace {ip} lladdr {} dev {dev} nud permanent",
                mac_str(mac)
            ),
            Step::DelNeighbour { dev, ip, .. } => write!(f, "ip neigh del {ip} dev {dev}"),
            Step::Masquerade { chain, comment, .. } => {
                writeln!(f, "nft -f - <<'EOF'")?;
                writeln!(f, "add table ip {}", chain.table)?;
                writeln!(f, "destroy chain ip {} {}", chain.table, chain.name)?;
                writeln!(f, "{}", chain.nft_text(Some(comment)))?;
                write!(f, "EOF")
            }
            Step::Unmasquerade { table, chain } => write!(f, "nft delete chain ip {table} {chain}"),
            Step::DhcpHost { files, entry } => {
                write!(
                    f,
                    "echo '{}' >> {}",
                    entry.hosts_line(),
                    files.hosts.display()
                )?;
                if let Some(o) = &files.options {
                    write!(f, "; echo '{}' >> {}", entry.options_line(), o.display())?;
                }
                Ok(())
            }
            Step::DelDhcpHost { files, name } => {
                let tag = format!("xen-vif-{name}");
                write!(f, "sed -i '/set:{tag},/d' {}", files.hosts.display())?;
                if let Some(o) = &files.options {
                    write!(f, "; sed -i '/^tag:{tag},/d' {}", o.display())?;
                }
                Ok(())
            }
            Step::ForgetConnections { prefixes } => {
                let words: Vec<String> = prefixes
                    .iter()
                    .flat_map(|p| {
                        [
                            format!("conntrack -D --orig-src {p}"),
                            format!("conntrack -D --orig-dst {p}"),
                        ]
                    })
                    .collect();
                write!(f, "{}", words.join("; "))
            }
            Step::OvsAddPort {
                bridge,
                name,
                config,
                ..
            } => write!(
                f,
                "ovs-vsctl -- --if-exists del-port {} {}",
                sh_word(name),
                ovs_add_port_str(bridge, name, config)
            ),
            Step::OvsDelPort { name, .. } => {
                write!(f, "ovs-vsctl --if-exists del-port {}", sh_word(name))
            }
        }
    }
}

/// "Already the way teardown wants it": the kernel object is gone, or the sysctl file went
/// with its device (a vanished vif takes /proc/sys/net/*/conf/<vif>/ along).
fn is_gone(e: &anyhow::Error) -> bool {
    crate::netlink::is_errno(e, GONE)
        || e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        })
}

impl Step {
    /// The one "read a sysctl, change it if it differs": the write of `value` to `path` unless
    /// `old`, what the host has there now, is that already.
    pub fn sysctl_change(path: impl Into<String>, value: &str, old: &str) -> Option<Step> {
        (old != value).then(|| Step::Sysctl {
            path: path.into(),
            value: value.into(),
            old: old.into(),
        })
    }

    /// The step in one line, for logs and error messages (`Display` is what `--dry-run`
    /// prints; for a filter chain that is the whole chain).
    pub fn label(&self) -> String {
        match self {
            Step::Filter { chain, .. } => format!(
                "nft add table netdev {} with chain {} on {} ({} rules)",
                chain.table,
                chain.name,
                chain.device,
                chain.rules.len()
            ),
            Step::Masquerade { chain, .. } => format!(
                "nft add chain ip {} {} (postrouting, {} masquerade rules)",
                chain.table,
                chain.name,
                chain.rules.len()
            ),
            s => s.to_string(),
        }
    }
}

/// Errors that mean "already the way teardown wants it".
const GONE: &[Errno] = &[
    Errno::ENODEV,
    Errno::ENOENT,
    Errno::ESRCH,
    Errno::EADDRNOTAVAIL,
    Errno::ENXIO,
];

impl Step {
    /// Apply one step; returns the step that undoes it.
    fn apply(&self, nl: &mut Netlink, store: &dyn Store) -> Result<Option<Step>> {
        let k = |e: NetlinkError| anyhow::Error::new(e);
        Ok(match self {
            Step::SetUp { index, name, up } => {
                nl.set_link(
                    *index,
                    &LinkChange {
                        up: Some(*up),
                        ..Default::default()
                    },
                )
                .map_err(k)?;
                Some(Step::SetUp {
                    index: *index,
                    name: name.clone(),
                    up: !up,
                })
            }
            Step::SetArp { index, name, on } => {
                nl.set_link(
                    *index,
                    &LinkChange {
                        arp: Some(*on),
                        ..Default::default()
                    },
                )
                .map_err(k)?;
                Some(Step::SetArp {
                    index: *index,
                    name: name.clone(),
                    on: !on,
                })
            }
            Step::Rename {
                index,
                from,
                to,
                alias,
                old_alias,
            } => {
                nl.set_link(
                    *index,
                    &LinkChange {
                        name: Some(to.clone()),
                        alias: Some(alias.clone().unwrap_or_default()),
                        ..Default::default()
                    },
                )
                .map_err(k)?;
                Some(Step::Rename {
                    index: *index,
                    from: to.clone(),
                    to: from.clone(),
                    alias: old_alias.clone(),
                    old_alias: alias.clone(),
                })
            }
            Step::AddAltName { index, name, alt } => {
                nl.add_alt_name(*index, alt).map_err(k)?;
                Some(Step::DelAltName {
                    index: *index,
                    name: name.clone(),
                    alt: alt.clone(),
                })
            }
            Step::DelAltName { index, name, alt } => {
                nl.del_alt_name(*index, alt).map_err(k)?;
                Some(Step::AddAltName {
                    index: *index,
                    name: name.clone(),
                    alt: alt.clone(),
                })
            }
            Step::SetMac {
                index,
                name,
                mac,
                old,
                best_effort,
            } => {
                let r = nl.set_link(
                    *index,
                    &LinkChange {
                        mac: Some(mac.clone()),
                        ..Default::default()
                    },
                );
                match r {
                    Ok(()) => Some(Step::SetMac {
                        index: *index,
                        name: name.clone(),
                        mac: old.clone(),
                        old: mac.clone(),
                        best_effort: true,
                    }),
                    Err(e) if *best_effort => {
                        log::warn(&format!("{name}: cannot set MAC address ({e}); going on"));
                        None
                    }
                    Err(e) => return Err(k(e)),
                }
            }
            Step::SetMtu {
                index,
                name,
                mtu,
                old,
            } => {
                nl.set_link(
                    *index,
                    &LinkChange {
                        mtu: Some(*mtu),
                        ..Default::default()
                    },
                )
                .map_err(k)?;
                Some(Step::SetMtu {
                    index: *index,
                    name: name.clone(),
                    mtu: *old,
                    old: *mtu,
                })
            }
            Step::SetMaster {
                index,
                name,
                master,
                old,
                ..
            } => {
                nl.set_link(
                    *index,
                    &LinkChange {
                        master: Some(*master),
                        ..Default::default()
                    },
                )
                .map_err(k)?;
                Some(Step::SetMaster {
                    index: *index,
                    name: name.clone(),
                    master: *old,
                    master_name: String::new(),
                    old: *master,
                })
            }
            Step::AddAddress { name, addr } => {
                nl.add_address(addr).map_err(k)?;
                Some(Step::DelAddress {
                    name: name.clone(),
                    addr: addr.clone(),
                })
            }
            Step::DelAddress { name, addr } => {
                nl.del_address(addr).map_err(k)?;
                Some(Step::AddAddress {
                    name: name.clone(),
                    addr: addr.clone(),
                })
            }
            Step::AddRoute { dev, route } => {
                nl.add_route(route).map_err(k)?;
                Some(Step::DelRoute {
                    dev: dev.clone(),
                    route: route.clone(),
                })
            }
            Step::DelRoute { dev, route } => {
                nl.del_route(route).map_err(k)?;
                Some(Step::AddRoute {
                    dev: dev.clone(),
                    route: route.clone(),
                })
            }
            Step::AddPortVlans { index, name, vlans } => {
                nl.add_port_vlans(*index, vlans).map_err(k)?;
                Some(Step::DelPortVlans {
                    index: *index,
                    name: name.clone(),
                    vlans: vlans.clone(),
                })
            }
            Step::DelPortVlans { index, name, vlans } => {
                nl.del_port_vlans(*index, vlans).map_err(k)?;
                Some(Step::AddPortVlans {
                    index: *index,
                    name: name.clone(),
                    vlans: vlans.clone(),
                })
            }
            Step::AddProxyNeighbour { index, dev, ip } => {
                nl.add_proxy_neighbour(*index, *ip).map_err(k)?;
                Some(Step::DelProxyNeighbour {
                    index: *index,
                    dev: dev.clone(),
                    ip: *ip,
                })
            }
            Step::DelProxyNeighbour { index, dev, ip } => {
                nl.del_proxy_neighbour(*index, *ip).map_err(k)?;
                Some(Step::AddProxyNeighbour {
                    index: *index,
                    dev: dev.clone(),
                    ip: *ip,
                })
            }
            Step::Sysctl { path, value, old } => {
                sysctl::write(path, value)?;
                Some(Step::Sysctl {
                    path: path.clone(),
                    value: old.clone(),
                    old: value.clone(),
                })
            }
            Step::CreateLink { name, link, index } => {
                match nl.add_link_at(name, link, *index) {
                    Ok(()) => {}
                    Err(e) if e.errno == Errno::EOPNOTSUPP => {
                        return Err(anyhow::Error::new(e).context(unsupported(link)));
                    }
                    Err(e) => return Err(k(e)),
                }
                let created = nl
                    .link_by_name(name)
                    .map_err(k)?
                    .ok_or_else(|| anyhow!("{name} vanished right after it was created"))?;
                Some(Step::DeleteLink {
                    index: created.index,
                    name: name.clone(),
                })
            }
            Step::DeleteLink { index, .. } => {
                nl.del_link(*index).map_err(k)?;
                None
            }
            Step::XsWrite { path, value } => {
                store
                    .write(path, value)
                    .with_context(|| format!("write xenstore {path}"))?;
                None
            }
            Step::Filter {
                chain,
                comment,
                replace,
            } => {
                let r = Nfnetlink::open()
                    .and_then(|mut nf| nf.replace_ingress_table(chain, comment, *replace));
                match r {
                    Ok(()) => {}
                    Err(e) if nftables::is_unsupported(&e) => {
                        return Err(anyhow::Error::new(e).context(NO_NFTABLES));
                    }
                    Err(e) => return Err(k(e)),
                }
                Some(Step::Unfilter {
                    table: chain.table.clone(),
                })
            }
            Step::Unfilter { table } => {
                Nfnetlink::open()
                    .and_then(|mut nf| nf.delete_netdev_table(table))
                    .map_err(k)?;
                None
            }
            Step::AddNeighbour {
                index,
                dev,
                ip,
                mac,
            } => {
                nl.set_permanent_neighbour(*index, *ip, mac).map_err(k)?;
                Some(Step::DelNeighbour {
                    index: *index,
                    dev: dev.clone(),
                    ip: *ip,
                    mac: mac.clone(),
                })
            }
            Step::DelNeighbour {
                index,
                dev,
                ip,
                mac,
            } => {
                nl.del_neighbour(*index, *ip).map_err(k)?;
                Some(Step::AddNeighbour {
                    index: *index,
                    dev: dev.clone(),
                    ip: *ip,
                    mac: mac.clone(),
                })
            }
            Step::Masquerade {
                chain,
                comment,
                exists,
            } => {
                let r = Nfnetlink::open()
                    .and_then(|mut nf| nf.replace_nat_chain(chain, comment, *exists));
                match r {
                    Ok(()) => {}
                    Err(e) if nftables::is_unsupported(&e) || e.errno == Errno::ENOENT => {
                        // ENOENT: the kernel knows no `nat` chain type or `masq` expression.
                        return Err(anyhow::Error::new(e).context(NO_NFT_NAT));
                    }
                    Err(e) => return Err(k(e)),
                }
                Some(Step::Unmasquerade {
                    table: chain.table.clone(),
                    chain: chain.name.clone(),
                })
            }
            Step::Unmasquerade { table, chain } => {
                Nfnetlink::open()
                    .and_then(|mut nf| nf.delete_nat_chain(table, chain))
                    .map_err(k)?;
                None
            }
            Step::DhcpHost { files, entry } => {
                dhcp_hosts::put(files, entry)?;
                Some(Step::DelDhcpHost {
                    files: files.clone(),
                    name: entry.name.clone(),
                })
            }
            Step::DelDhcpHost { files, name } => {
                dhcp_hosts::remove(files, name)?;
                None
            }
            Step::ForgetConnections { prefixes } => {
                let r = Nfnetlink::open().and_then(|mut nf| nf.delete_conntrack(prefixes));
                match r {
                    Ok(n) => log::debug(&format!("{n} conntrack entries deleted")),
                    // No nfnetlink: no connection tracking either.
                    Err(e) if nftables::is_unsupported(&e) => {}
                    // Hygiene, not the teardown itself: the entries time out on their own, and
                    // a guest going away must not be held up by them (e.g. a kernel with
                    // conntrack but no nf_conntrack_netlink). Said, not hidden.
                    Err(e) => log::warn(&format!("{self}: {e}; the entries will time out")),
                }
                None
            }
            Step::OvsAddPort { .. } | Step::OvsDelPort { .. } => {
                let mut db = Ovsdb::connect()?;
                let (next_cfg, inverse) = self.commit_ovs(&mut db)?;
                match (next_cfg.map(|cfg| db.wait_applied(cfg)), self) {
                    (None | Some(Ok(())), _) => {}
                    // A port that is out of the database is gone for every later reader; the
                    // switch catches up when it answers again.
                    (Some(Err(e)), Step::OvsDelPort { .. }) => log::warn(&format!("{self}: {e:#}")),
                    // Stored but never applied: take it out of the database again (without
                    // waiting on the switch that did not answer), so nothing is left half
                    // done; the run's cleanup time pays for it.
                    (Some(Err(e)), _) => {
                        crate::deadline::enter_cleanup();
                        if let Some(undo) = &inverse {
                            if let Err(ue) = undo.commit_ovs(&mut db) {
                                return Err(e.context(format!("and taking it back failed: {ue:#}")));
                            }
                        }
                        return Err(e);
                    }
                }
                inverse
            }
        })
    }
}

impl Step {
    /// Commit an Open vSwitch step to the database; returns the configuration number that
    /// ovs-vswitchd is to reach (None: nothing changed) and the step that undoes it.
    fn commit_ovs(&self, db: &mut Ovsdb) -> Result<(Option<i64>, Option<Step>)> {
        let comment = format!("xen-vif: {self}");
        match self {
            Step::OvsAddPort {
                bridge,
                name,
                config,
                old,
            } => {
                let cfg = db.replace_port(bridge, name, config, &comment)?;
                let now = OvsPort {
                    name: name.clone(),
                    bridge: Some(bridge.clone()),
                    config: config.clone(),
                };
                let inverse = match old {
                    Some(OvsPort {
                        bridge: Some(b),
                        config: c,
                        ..
                    }) => Step::OvsAddPort {
                        bridge: b.clone(),
                        name: name.clone(),
                        config: c.clone(),
                        old: Some(now),
                    },
                    _ => Step::OvsDelPort {
                        name: name.clone(),
                        old: Some(now),
                    },
                };
                Ok((Some(cfg), Some(inverse)))
            }
            Step::OvsDelPort { name, old } => {
                let cfg = db.del_port(name, &comment)?;
                let inverse = old.as_ref().and_then(|p| {
                    p.bridge.as_ref().map(|b| Step::OvsAddPort {
                        bridge: b.clone(),
                        name: name.clone(),
                        config: p.config.clone(),
                        old: None,
                    })
                });
                Ok((cfg, inverse))
            }
            _ => Err(anyhow!("{self} is no Open vSwitch step")),
        }
    }
}

/// The plan as `--dry-run` shows it: one command per line.
pub fn render(steps: &[Step]) -> String {
    steps.iter().map(|s| format!("{s}\n")).collect()
}

/// Print the plan instead of applying it (nothing has changed: a failed write ends the run).
pub fn print(steps: &[Step]) {
    crate::output::print_or_exit(render(steps).as_bytes());
}

/// What a successful `apply` changed, kept so a later failure of the same run (a hook, the
/// final xenstore write) can still take it back.
#[must_use]
pub struct Applied(Vec<Step>);

impl Applied {
    /// Undo this run's changes, newest first; returns `e` with any undo failure added, so
    /// nothing is hidden.
    /// What is already gone (a link that vanished, and its addresses and routes with it) counts
    /// as undone. The cause comes first in the message: it is what the administrator must fix.
    pub fn undo(self, nl: &mut Netlink, store: &dyn Store, e: anyhow::Error) -> anyhow::Error {
        // The failure may be the budget running out: the undo gets its own short extension.
        crate::deadline::enter_cleanup();
        let mut failed_undo = Vec::new();
        for u in self.0.iter().rev() {
            match u.apply(nl, store) {
                Ok(_) => log::info(&format!("undo: {u}")),
                Err(ue) if is_gone(&ue) => {
                    log::debug(&format!("undo: {}: already gone", u.label()))
                }
                Err(ue) => failed_undo.push(format!("{}: {ue:#}", u.label())),
            }
        }
        with_undo_failures(e, &failed_undo)
    }
}

/// The failure `e`, then what could not be undone: the cause first, as it is what to fix.
fn with_undo_failures(e: anyhow::Error, failed_undo: &[String]) -> anyhow::Error {
    if failed_undo.is_empty() {
        return e;
    }
    let msg = format!(
        "{e:#}; and undoing this run's changes failed too: {}",
        failed_undo.join("; ")
    );
    // Keep a missing kernel feature recognisable to callers that say it plainly.
    match e.downcast_ref::<Unsupported>() {
        Some(u) => anyhow::Error::new(Unsupported(u.0)).context(msg),
        None => anyhow!(msg),
    }
}

/// Apply every step in order; if one fails, undo the steps applied so far, newest first, and
/// return the failure.
pub fn apply(nl: &mut Netlink, store: &dyn Store, steps: &[Step]) -> Result<Applied> {
    let mut done = Applied(Vec::new());
    for step in steps {
        match step.apply(nl, store) {
            Ok(inverse) => {
                log_applied(step);
                done.0.extend(inverse);
            }
            Err(e) => return Err(done.undo(nl, store, e.context(step.label()))),
        }
    }
    Ok(done)
}

/// Apply the steps in order and stop at the first failure, undoing nothing: for a caller whose
/// undo authority is elsewhere (the network scripts' state file, which `stop` restores from).
/// The error names the failed step.
pub fn apply_until_failure(nl: &mut Netlink, store: &dyn Store, steps: &[Step]) -> Result<()> {
    for step in steps {
        step.apply(nl, store).with_context(|| step.to_string())?;
        log_applied(step);
    }
    Ok(())
}

/// One line per applied step (its label); the whole `nft` text of a filter or masquerading
/// chain, which the label only sums up, as debug detail. Once each: `--verbose` shows both
/// levels on stderr.
fn log_applied(step: &Step) {
    let label = step.label();
    log::info(&label);
    let full = step.to_string();
    if full != label {
        log::debug(&full);
    }
}

/// Apply every step, treating "already gone" as done, and report every failure together.
pub fn teardown(nl: &mut Netlink, store: &dyn Store, steps: &[Step]) -> Result<()> {
    let mut errors = Vec::new();
    for step in steps {
        match step.apply(nl, store) {
            Ok(_) => log::info(&step.label()),
            Err(e) if is_gone(&e) => log::debug(&format!("{}: already gone", step.label())),
            Err(e) => errors.push(format!("{}: {e:#}", step.label())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow!(errors.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_comes_before_what_could_not_be_undone() {
        let e = anyhow!("Operation not supported (EOPNOTSUPP)")
            .context("ip link set vif5.0 master xenbr0");
        let e = with_undo_failures(
            e,
            &["ip link set vif5.0 name vif5.0: Device or resource busy (EBUSY)".into()],
        );
        assert_eq!(
            format!("{e:#}"),
            "ip link set vif5.0 master xenbr0: Operation not supported (EOPNOTSUPP); and undoing \
             this run's changes failed too: ip link set vif5.0 name vif5.0: Device or resource \
             busy (EBUSY)"
        );
        let e = with_undo_failures(anyhow!("cause"), &[]);
        assert_eq!(format!("{e:#}"), "cause");
        let e = anyhow::Error::new(Unsupported(
            "kernel has no dummy link support (CONFIG_DUMMY)",
        ))
        .context("ip link add dummy0 type dummy");
        let e = with_undo_failures(e, &["x: y".into()]);
        assert!(e.downcast_ref::<Unsupported>().is_some());
        assert!(format!("{e:#}").starts_with("ip link add dummy0 type dummy: kernel has no dummy"));
    }
}
