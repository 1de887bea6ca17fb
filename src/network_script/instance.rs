//! One instance of a network script, and which one a call means.

use anyhow::Result;

use super::observed::Observed;
use super::params::{Action, Params, Script};
use super::state::{Location, Record, State};
use super::{bridge, nat, route};
use crate::ifname::IfName;
use crate::log;
use crate::netlink::Netlink;
use crate::plan::Step;

/// What a script computed for `start`.
pub enum Start {
    /// Nothing to build, and why (e.g. the NIC is already a bridge built by someone else).
    Nothing(String),
    /// The changes, and what `stop` needs to know to undo them.
    Steps {
        steps: Vec<Step>,
        records: Vec<Record>,
    },
}

/// One instance of a network script (the bridge over eth0, the gateway on dummy0, ...), its
/// parameters resolved. The planners are pure: they see the host as `Observed` holds it.
pub trait Instance {
    fn script(&self) -> Script;
    /// Names the instance's state file: one per bridge, trunk or gateway device.
    fn key(&self) -> String;
    /// The parameters that name this instance again (kept in the state file, so `stop` finds
    /// it even when the default it was derived from is gone).
    fn params(&self) -> Vec<(String, String)>;
    fn plan_start(&self, o: &Observed) -> Result<Start>;
    /// Whether the host still is as a completed start (this `state`) left it. By default: a
    /// start would change nothing.
    fn is_started(&self, o: &Observed, _state: &State) -> Result<bool> {
        Ok(match self.plan_start(o)? {
            Start::Steps { steps, .. } => steps.is_empty(),
            Start::Nothing(_) => true,
        })
    }
    /// What puts the host back as `state` records it, from what the kernel has now. Empty
    /// means the host already is as before start.
    fn plan_stop(&self, o: &Observed, state: &State) -> Result<Vec<Step>>;
    /// The family ip nf_tables chains (table, chain) its planners read, besides what every
    /// instance reads; `state` is the recorded start, if any.
    fn ip_chains(&self, _state: Option<&State>) -> Vec<(String, String)> {
        Vec::new()
    }
    /// The bridge ports whose VLANs `status` shows (read only for status).
    fn vlan_ports(&self) -> Vec<&IfName> {
        Vec::new()
    }
    fn status(&self, o: &Observed, state: Option<&State>) -> Result<String>;
}

pub fn instance(nl: &mut Netlink, script: Script, p: &Params) -> Result<Option<Box<dyn Instance>>> {
    Ok(match script {
        Script::Route => Some(Box::new(route::instance(nl, p)?)),
        Script::Nat => Some(Box::new(nat::instance(nl, p)?)),
        _ => bridge::instance(nl, p)?,
    })
}

/// The instance the parameters name, or derive from the host. A crash can take what the
/// default is derived from (the default route) away with it: when the default cannot be
/// derived — or, for stop and status, has no state — the one instance this namespace has
/// state for is meant.
pub fn resolve(
    nl: &mut Netlink,
    script: Script,
    action: Action,
    p: &Params,
    loc: &Location,
) -> Result<Option<Box<dyn Instance>>> {
    let derived = instance(nl, script, p);
    if script.naming_keys().iter().any(|k| p.has(k)) {
        return derived;
    }
    match &derived {
        Ok(None) => return derived,
        Ok(Some(i))
            if action == Action::Start || loc.state_file(script.name(), &i.key()).exists() =>
        {
            return derived;
        }
        _ => {}
    }
    let files = loc.state_files(script.name());
    let [only] = files.as_slice() else {
        return derived;
    };
    let Some(st) = State::load(only)? else {
        return derived;
    };
    let mut vars = st.instance()?.to_vec();
    vars.extend(p.vars.iter().filter(|(k, _)| k == "force").cloned());
    log::debug(&format!(
        "using the instance recorded in {}",
        only.display()
    ));
    instance(nl, script, &Params::new(script, &vars)?)
}
