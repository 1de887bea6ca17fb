//! network-bridge, two set-ups: a bridge over a NIC (`nic_bridge`, xend's) or bridges on a
//! VLAN trunk (`trunk`). Here: which one the parameters name.
//!
//! Validation happens before any change; every change is a plan step.

use anyhow::{Result, anyhow, bail};

use super::nic_bridge::NicBridge;
use super::{Instance, Params};
use crate::ifname::IfName;
use crate::netlink::Netlink;

/// `None` for `bridge=null`.
pub fn instance(nl: &mut Netlink, p: &Params) -> Result<Option<Box<dyn Instance>>> {
    if p.get("bridge") == Some("null") {
        return Ok(None);
    }
    if p.has("trunk") {
        return Ok(Some(Box::new(super::trunk::instance(p)?)));
    }
    for k in ["vlans", "bridge_template", "vlan_filtering"] {
        if p.has(k) {
            bail!("{k}= only goes with trunk= (per-VLAN bridges on a trunk)");
        }
    }
    let netdev = match p.netdev()? {
        Some(n) => n,
        None => match nl.default_route_link()? {
            Some(l) => IfName::new(&l.name).map_err(anyhow::Error::msg)?,
            None => bail!("no netdev= given and the host has no default route to take it from"),
        },
    };
    let bridge = p.ifname("bridge")?.unwrap_or_else(|| netdev.clone());
    let pdev = IfName::new(&format!("p{netdev}"))
        .map_err(|e| anyhow!("netdev {netdev}: the NIC's new name: {e}"))?;
    Ok(Some(Box::new(NicBridge {
        netdev,
        bridge,
        pdev,
        force: p.yes("force")?,
    })))
}
