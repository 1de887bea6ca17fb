//! Open vSwitch mode (vif-openvswitch): the vif becomes a port of an OVS bridge, with the VLAN
//! tag and trunks of `bridge=BR[.TAG][:TRUNK...]` (or of libxl's `vlan` key) and the guest's
//! identity in its interface's external-ids, as the stock script sets them.
//!
//! observe (the vif as every mode reads it, [`Vif`], and the OVSDB and xenstore, [`Database`],
//! into [`Observed`]) → plan (pure: [`plan_online`], with [`plan_port`] for the OVSDB part, and
//! [`plan_offline`]); the kernel part (name, MAC, addresses, MTU) is bridge mode's
//! [`prepare_port`].

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use super::bridge::prepare_port;
use super::{Vif, observe_vif};
use crate::invocation::Hotplug;
use crate::log;
use crate::netlink::Netlink;
use crate::ovsdb::{Ovsdb, Port, PortConfig};
use crate::plan::Step;
use crate::xenstore::Store;

/// What Open vSwitch and the toolstack have for this vif.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Database {
    /// Every OVS bridge (online only).
    pub bridges: Vec<String>,
    /// The OVS port of the device's name, if there is one.
    pub port: Option<Port>,
    /// The interface's external-ids as the stock script sets them (`xen-vm-name`,
    /// `xen-vm-uuid`, `attached-mac`), from toolstack-owned keys; missing keys are left out
    /// (online only).
    pub identity: BTreeMap<String, String>,
}

/// What Open vSwitch mode reads: the vif, the database, and (online) the bridge's MTU.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub vif: Vif,
    pub db: Database,
    /// The bridge's MTU, as bridge mode takes it: the kernel device of its internal port.
    pub bridge_mtu: Option<u32>,
}

/// The port's VLAN columns: from the `bridge` suffix as the stock script sets them (no
/// `vlan_mode`: OVS decides), or from libxl's `vlan` key: the PVID is the tag; with other
/// VLANs the port trunks them and carries the PVID untagged (`native-untagged`), otherwise it
/// is an `access` port. OVS can leave only the native VLAN untagged.
pub fn port_vlans(hp: &Hotplug) -> Result<(Option<u16>, Vec<u16>, Option<String>)> {
    let Some(vlans) = &hp.vlan else {
        let mut trunks = hp.ovs_vlans.trunks.clone();
        trunks.sort_unstable();
        return Ok((hp.ovs_vlans.tag, trunks, None));
    };
    let pvid = vlans.iter().find(|v| v.pvid).map(|v| v.vid);
    let mut trunks = Vec::new();
    for v in vlans.iter().filter(|v| !v.pvid) {
        if v.untagged {
            bail!(
                "vlan: Open vSwitch can leave only the PVID untagged, not VLAN {}",
                v.vid
            );
        }
        trunks.push(v.vid);
    }
    trunks.sort_unstable();
    let mode = match (pvid, trunks.is_empty()) {
        (Some(_), true) => "access",
        (Some(_), false) => "native-untagged",
        (None, _) => "trunk",
    };
    Ok((pvid, trunks, Some(mode.to_string())))
}

/// The OVSDB change online needs: none when the port is already as wanted. Pure.
pub fn plan_port(obs: &Database, hp: &Hotplug, name: &str) -> Result<Option<Step>> {
    let Some(bridge) = &hp.bridge else {
        bail!("no bridge given (xenstore bridge or bridge=BRIDGE[.TAG][:TRUNK...])");
    };
    let bridge = bridge.as_str();
    if !obs.bridges.iter().any(|b| b == bridge) {
        bail!(
            "Open vSwitch has no bridge {bridge} (it has: {})",
            if obs.bridges.is_empty() {
                "none".to_string()
            } else {
                obs.bridges.join(", ")
            }
        );
    }
    let (tag, trunks, vlan_mode) = port_vlans(hp)?;
    let config = PortConfig {
        tag,
        trunks,
        vlan_mode,
        external_ids: obs.identity.clone(),
    };
    let same = obs
        .port
        .as_ref()
        .is_some_and(|p| p.bridge.as_deref() == Some(bridge) && p.config == config);
    Ok((!same).then(|| Step::OvsAddPort {
        bridge: bridge.to_string(),
        name: name.to_string(),
        config,
        old: obs.port.clone(),
    }))
}

/// The stock script's external-ids, read only from keys the toolstack owns: a value the guest
/// owns (it could write anything there) is refused.
pub fn guest_identity(store: &dyn Store, hp: &Hotplug) -> Result<BTreeMap<String, String>> {
    let guest = hp.id.domid;
    let toolstack = store
        .owner(&hp.backend)
        .with_context(|| format!("read the permissions of {}", hp.backend))?;
    let trusted = |path: &str| -> Result<Option<String>> {
        let Some(value) = store
            .read(path)
            .with_context(|| format!("read xenstore {path}"))?
        else {
            return Ok(None);
        };
        let owner = store
            .owner(path)
            .with_context(|| format!("read the permissions of {path}"))?;
        match owner {
            Some(o) if o != guest && (o == 0 || Some(o) == toolstack) => Ok(Some(value)),
            Some(o) => bail!("{path} is owned by domain {o}, not the toolstack: refusing it"),
            None => Ok(None),
        }
    };
    let mut ids = BTreeMap::new();
    let vm = trusted(&format!("/local/domain/{guest}/vm"))?.filter(|v| !v.is_empty());
    if let Some(vm) = vm {
        if !vm.starts_with('/') || vm.split('/').any(|c| c == "..") {
            bail!("/local/domain/{guest}/vm is {vm:?}, not a xenstore path");
        }
        for (key, id) in [("name", "xen-vm-name"), ("uuid", "xen-vm-uuid")] {
            if let Some(v) = trusted(&format!("{vm}/{key}"))? {
                ids.insert(id.to_string(), v);
            }
        }
    }
    if let Some(mac) = trusted(&format!("{}/mac", hp.backend))? {
        ids.insert("attached-mac".to_string(), mac);
    }
    Ok(ids)
}

/// What Open vSwitch and xenstore have for the port `name`.
pub fn observe_database(store: &dyn Store, hp: &Hotplug, name: &str) -> Result<Database> {
    let mut db = Ovsdb::connect()?;
    Ok(Database {
        bridges: db.bridges()?,
        port: db.port(name)?,
        identity: guest_identity(store, hp)?,
    })
}

/// Online: the vif (it must be there), the database and the bridge's MTU. Offline: the vif and
/// the port of its name; an unreachable database is logged, as the stock script ignores it.
pub fn observe(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Observed> {
    let vif = observe_vif(nl, hp)?;
    if !hp.command.is_up() {
        let name = offline_name(&vif, hp);
        let port = match Ovsdb::connect().and_then(|mut db| db.port(&name)) {
            Ok(port) => port,
            Err(e) => {
                log::warn(&format!(
                    "{name}: {e:#}; leaving any Open vSwitch port to the administrator"
                ));
                None
            }
        };
        return Ok(Observed {
            vif,
            db: Database {
                port,
                ..Default::default()
            },
            bridge_mtu: None,
        });
    }
    vif.require(hp)?;
    let db = observe_database(store, hp, hp.wanted_name.as_str())?;
    let bridge_mtu = match &hp.bridge {
        Some(b) => nl.link_by_name(b.as_str())?.map(|l| l.mtu),
        None => None,
    };
    Ok(Observed {
        vif,
        db,
        bridge_mtu,
    })
}

/// The port's name at offline: the device's, or `vifname` when the device is gone.
fn offline_name(vif: &Vif, hp: &Hotplug) -> String {
    vif.device(hp)
        .map_or_else(|| hp.wanted_name.to_string(), |l| l.name.clone())
}

pub fn online(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_online(&observe(nl, store, hp)?, hp)
}

pub fn offline(nl: &mut Netlink, store: &dyn Store, hp: &Hotplug) -> Result<Vec<Step>> {
    plan_offline(&observe(nl, store, hp)?, hp)
}

/// online: the OVSDB change decided first (a bad bridge or VLAN refuses before anything), the
/// port prepared as bridge mode does, then up, then the port joins. Pure.
pub fn plan_online(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = o.vif.require(hp)?;
    let name = hp.wanted_name.to_string();
    let ovs = plan_port(&o.db, hp, &name)?;
    let mtu = hp.mtu.or(o.bridge_mtu).unwrap_or(link.mtu);
    let (mut steps, needs_down) = prepare_port(&o.vif, hp, link, mtu)?;
    // Up before the port joins (stock: after): undone newest first, the port then leaves
    // before the link goes down. ovs-vswitchd, when it lets a port go, writes back the link's
    // flags as it last saw them, and could bring up again a link taken down just before.
    if !link.up || needs_down {
        steps.push(Step::SetUp {
            index: link.index,
            name: name.clone(),
            up: true,
        });
    }
    steps.extend(ovs);
    steps.extend(super::frontend_mtu_step(hp, mtu));
    Ok(steps)
}

/// offline: remove the port, then take the link down: in this order, as the change waits for
/// ovs-vswitchd to let the port go (see `plan_online`). Pure.
pub fn plan_offline(o: &Observed, hp: &Hotplug) -> Result<Vec<Step>> {
    let link = o.vif.device(hp);
    let name = offline_name(&o.vif, hp);
    let mut steps = Vec::new();
    // Down first: from then on the guest sends nothing, so its filter can go before the port
    // does, and the kernel's grace period for the filter's deletion (paid when the process
    // closes its netfilter socket) runs while ovs-vswitchd lets the port go.
    if let Some(l) = link.filter(|l| l.up) {
        steps.push(Step::SetUp {
            index: l.index,
            name: name.clone(),
            up: false,
        });
    }
    // The anti-spoofing chain and its hygiene go as in every mode.
    steps.extend(super::filter::plan_offline(&o.vif.filter, hp, link));
    if let Some(port) = &o.db.port {
        steps.push(Step::OvsDelPort {
            name,
            old: Some(port.clone()),
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ifname::IfName;
    use crate::invocation::{Command, DeviceId, Mode, TypeIf};
    use crate::netlink::PortVlan;
    use crate::ovsspec::BridgeVlans;

    fn hp(bridge: &str, vlans: BridgeVlans, vlan: Option<&str>) -> Hotplug {
        let name = IfName::new("vif5.0").unwrap();
        Hotplug {
            script: "vif-openvswitch",
            mode: Mode::Openvswitch,
            command: Command::Online,
            type_if: TypeIf::Vif,
            id: DeviceId { domid: 5, devid: 0 },
            backend: "backend/vif/5/0".into(),
            kernel_name: name.clone(),
            wanted_name: name,
            bridge: Some(IfName::new(bridge).unwrap()),
            gatewaydev: None,
            ip: Vec::new(),
            mtu: None,
            vlan: vlan.map(|v| crate::vlanspec::parse(v).unwrap()),
            mac: None,
            antispoof: true,
            ovs_vlans: vlans,
        }
    }

    fn observed(port: Option<Port>) -> Database {
        Database {
            bridges: vec!["ovsbr0".into(), "ovsbr1".into()],
            port,
            identity: [
                ("attached-mac", "00:16:3e:00:00:01"),
                ("xen-vm-name", "web"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        }
    }

    fn tagged(tag: u16, trunks: &[u16]) -> BridgeVlans {
        BridgeVlans {
            tag: Some(tag),
            trunks: trunks.to_vec(),
        }
    }

    #[test]
    fn golden_add_port_with_tag_and_trunks() {
        let h = hp("ovsbr0", tagged(10, &[30, 20]), None);
        let step = plan_port(&observed(None), &h, "vif5.0").unwrap().unwrap();
        assert_eq!(
            step.to_string(),
            "ovs-vsctl -- --if-exists del-port vif5.0 -- add-port ovsbr0 vif5.0 tag=10 \
             trunks=20,30 -- set interface vif5.0 \
             'external-ids:\"attached-mac\"=\"00:16:3e:00:00:01\"' \
             'external-ids:\"xen-vm-name\"=\"web\"'"
        );
    }

    #[test]
    fn a_port_as_wanted_needs_nothing_and_a_different_one_is_replaced() {
        let h = hp("ovsbr0", tagged(10, &[20]), None);
        let Some(Step::OvsAddPort { config, .. }) =
            plan_port(&observed(None), &h, "vif5.0").unwrap()
        else {
            panic!()
        };
        let port = Port {
            name: "vif5.0".into(),
            bridge: Some("ovsbr0".into()),
            config: config.clone(),
        };
        assert_eq!(
            plan_port(&observed(Some(port.clone())), &h, "vif5.0").unwrap(),
            None
        );
        let elsewhere = Port {
            bridge: Some("ovsbr1".into()),
            ..port.clone()
        };
        let step = plan_port(&observed(Some(elsewhere.clone())), &h, "vif5.0").unwrap();
        assert!(matches!(step, Some(Step::OvsAddPort { old: Some(o), .. }) if o == elsewhere));
        let mut other_tag = port;
        other_tag.config.tag = Some(11);
        assert!(
            plan_port(&observed(Some(other_tag)), &h, "vif5.0")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn a_missing_bridge_is_one_clear_line() {
        let h = hp("ovsbr9", BridgeVlans::default(), None);
        let e = plan_port(&observed(None), &h, "vif5.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Open vSwitch has no bridge ovsbr9 (it has: ovsbr0, ovsbr1)"
        );
    }

    #[test]
    fn the_vlan_key_maps_onto_tag_trunks_and_vlan_mode() {
        let h = hp("ovsbr0", BridgeVlans::default(), Some("10"));
        assert_eq!(
            port_vlans(&h).unwrap(),
            (Some(10), vec![], Some("access".into()))
        );
        let h = hp("ovsbr0", BridgeVlans::default(), Some("10p/100+10x2"));
        assert_eq!(
            port_vlans(&h).unwrap(),
            (
                Some(10),
                vec![100, 110, 120],
                Some("native-untagged".into())
            )
        );
        let step = plan_port(&observed(None), &h, "vif5.0").unwrap().unwrap();
        assert!(
            step.to_string().contains(
                "add-port ovsbr0 vif5.0 tag=10 trunks=100,110,120 vlan_mode=native-untagged"
            ),
            "{step}"
        );
        let mut h = hp("ovsbr0", BridgeVlans::default(), None);
        h.vlan = Some(vec![
            PortVlan {
                vid: 10,
                pvid: true,
                untagged: true,
            },
            PortVlan {
                vid: 20,
                pvid: false,
                untagged: true,
            },
        ]);
        let e = port_vlans(&h).unwrap_err();
        assert!(e.to_string().contains("not VLAN 20"), "{e}");
    }

    #[test]
    fn golden_untagged_port_and_del_port() {
        let h = hp("ovsbr0", BridgeVlans::default(), None);
        let step = plan_port(&observed(None), &h, "vif5.0").unwrap().unwrap();
        assert_eq!(
            step.to_string(),
            "ovs-vsctl -- --if-exists del-port vif5.0 -- add-port ovsbr0 vif5.0 -- set interface \
             vif5.0 'external-ids:\"attached-mac\"=\"00:16:3e:00:00:01\"' \
             'external-ids:\"xen-vm-name\"=\"web\"'"
        );
        let del = Step::OvsDelPort {
            name: "vif5.0".into(),
            old: None,
        };
        assert_eq!(del.to_string(), "ovs-vsctl --if-exists del-port vif5.0");
    }

    #[test]
    fn golden_online_comes_up_before_the_port_joins() {
        use crate::modes::fixture::{netback, text, vif};
        let h = hp("ovsbr0", tagged(10, &[]), None);
        let o = Observed {
            vif: vif(netback(false)),
            db: observed(None),
            bridge_mtu: Some(9000),
        };
        let steps = plan_online(&o, &h).unwrap();
        assert_eq!(
            text(&steps),
            [
                "ip link set vif5.0 address fe:ff:ff:ff:ff:ff",
                "ip link set vif5.0 mtu 9000",
                "ip link set vif5.0 up",
                "ovs-vsctl -- --if-exists del-port vif5.0 -- add-port ovsbr0 vif5.0 tag=10 -- set \
                 interface vif5.0 'external-ids:\"attached-mac\"=\"00:16:3e:00:00:01\"' \
                 'external-ids:\"xen-vm-name\"=\"web\"'",
                "xenstore-write /local/domain/5/device/vif/0/mtu 9000",
            ]
        );
    }

    #[test]
    fn golden_offline_takes_the_link_down_then_removes_the_port() {
        use crate::modes::fixture::{netback, text, vif};
        let mut h = hp("ovsbr0", BridgeVlans::default(), None);
        h.command = Command::Offline;
        h.antispoof = false;
        let port = Port {
            name: "vif5.0".into(),
            bridge: Some("ovsbr0".into()),
            config: PortConfig::default(),
        };
        let mut o = Observed {
            vif: vif(netback(true)),
            db: Database {
                port: Some(port),
                ..Default::default()
            },
            bridge_mtu: None,
        };
        assert_eq!(
            text(&plan_offline(&o, &h).unwrap()),
            [
                "ip link set vif5.0 down",
                "ovs-vsctl --if-exists del-port vif5.0"
            ]
        );
        // No port (or the database unreachable, logged at observe), the device gone: nothing.
        o.db.port = None;
        o.vif = Vif::default();
        assert!(plan_offline(&o, &h).unwrap().is_empty());
    }
}
