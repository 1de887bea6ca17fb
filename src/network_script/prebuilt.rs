//! Pre-built bridges: the distro builds them (per-VLAN bridges such as `eth1.4` in `br4`) and xend was told
//! `(network-script /bin/true)`. This is the verifying replacement for `/bin/true`: it changes
//! nothing, and fails at xend start — not at the first `xl create` — with one line per named
//! bridge that is missing, not a bridge, or down.

use anyhow::{Result, bail};

use super::observed::updown;
use super::{Action, Params};
use crate::ifname::IfName;
use crate::log;
use crate::netlink::Netlink;

/// What is wrong with one named bridge, as the line to print; `None` when it is usable.
pub fn problem(nl: &mut Netlink, name: &IfName) -> Result<Option<String>> {
    Ok(match nl.link_by_name(name.as_str())? {
        None => Some(format!("bridge {name} does not exist")),
        Some(l) if !l.is_bridge() => Some(format!(
            "{name} is not a bridge (it is a {} link)",
            l.kind.as_deref().unwrap_or("plain")
        )),
        Some(l) if !l.up => Some(format!("bridge {name} is down")),
        Some(_) => None,
    })
}

/// Check every bridge; print one error line per problem. Exit status 1 when any.
pub fn check(nl: &mut Netlink, names: &[IfName]) -> Result<i32> {
    if names.is_empty() {
        bail!("no bridges named (e.g. bridges=br4,br100)");
    }
    let mut failed = false;
    for n in names {
        if let Some(p) = problem(nl, n)? {
            log::error(&p);
            failed = true;
        }
    }
    Ok(i32::from(failed))
}

pub fn bridges(p: &Params) -> Result<Vec<IfName>> {
    let mut out: Vec<IfName> = Vec::new();
    for v in p.all_of(&["bridges", "bridge"]) {
        let n = IfName::new(v).map_err(|e| anyhow::anyhow!("bridges: {e}"))?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

pub fn run(nl: &mut Netlink, action: Action, p: &Params) -> Result<i32> {
    let names = bridges(p)?;
    match action {
        Action::Start => check(nl, &names),
        // The bridges belong to the distro: nothing of ours to undo.
        Action::Stop => Ok(0),
        Action::Status => {
            let mut out = String::new();
            for n in &names {
                match problem(nl, n)? {
                    Some(p) => out.push_str(&format!("{p}\n")),
                    None => {
                        let links = nl.links()?;
                        let Some(br) = links.iter().find(|l| l.name == n.as_str()) else {
                            continue;
                        };
                        let ports: Vec<String> = links
                            .iter()
                            .filter(|l| l.master == Some(br.index))
                            .map(|l| format!("{} {}", l.name, updown(l)))
                            .collect();
                        out.push_str(&format!(
                            "bridge {n}: up, ports: {}\n",
                            if ports.is_empty() {
                                "none".into()
                            } else {
                                ports.join(", ")
                            }
                        ));
                    }
                }
            }
            crate::output::print(out.as_bytes())?;
            Ok(0)
        }
    }
}
