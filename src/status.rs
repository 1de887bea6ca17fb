//! `xen-vif status`: every vif the backend directory lists, what xenstore asks for, what the
//! kernel has, and the difference — which is exactly what `online` would still change.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::config;
use crate::invocation::{self, Call, Command, DeviceId, Hotplug, Mode, TypeIf, Words};
use crate::modes::{self, Vif, filter};
use crate::netlink::Netlink;
use crate::plan::Step;
use crate::xenstore::{self, Store, XenStore};

const BACKEND_DIR: &str = "backend/vif";

#[derive(Debug, Default)]
pub struct VifStatus {
    pub domid: u32,
    pub devid: u32,
    pub device: String,
    pub mode: String,
    pub bridge: Option<String>,
    pub mtu: Option<u32>,
    pub state: String,
    pub hotplug_status: String,
    pub hotplug_error: Option<String>,
    /// The anti-spoofing filter: `on`, `missing`, `stale`, `off` (configuration), `-` (nothing
    /// to filter).
    pub filter: String,
    /// Open vSwitch mode: the port's VLAN columns (`tag=10 trunks=20,30`), "-" without any.
    pub ovs_port: Option<String>,
    pub differences: Vec<String>,
    /// What the running daemon last did for this vif: its pid, the action, `ok` or `error`.
    pub daemon: Option<(u32, String, String)>,
}

fn ids(store: &dyn Store, dir: &str) -> Result<Vec<u32>> {
    let mut v: Vec<u32> = store
        .directory(dir)
        .with_context(|| format!("list {dir}"))?
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// Every vif's row. One backend that cannot be read or makes no sense (a value that is not
/// UTF-8, a bad key) is a row saying so; the others are still shown.
pub fn collect(store: &dyn Store, nl: &mut Netlink) -> Result<Vec<VifStatus>> {
    let mut out = Vec::new();
    for domid in ids(store, BACKEND_DIR)? {
        let devids = match ids(store, &format!("{BACKEND_DIR}/{domid}")) {
            Ok(d) => d,
            Err(e) => {
                crate::log::error(&format!("status: domain {domid}: {e:#}"));
                continue;
            }
        };
        for devid in devids {
            let id = DeviceId { domid, devid };
            out.push(one(store, nl, id).unwrap_or_else(|e| bad(id, e)));
        }
    }
    Ok(out)
}

/// The row of a backend that could not be looked at.
fn bad(id: DeviceId, e: anyhow::Error) -> VifStatus {
    VifStatus {
        domid: id.domid,
        devid: id.devid,
        device: id.kernel_name(TypeIf::Vif),
        mode: "-".into(),
        state: "bad".into(),
        differences: vec![format!("cannot read the backend: {e:#}")],
        ..Default::default()
    }
}

/// `s` with control characters escaped (`\u{1b}`): values from xenstore and link names from the
/// kernel must not drive the administrator's terminal.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn one(store: &dyn Store, nl: &mut Netlink, id: DeviceId) -> Result<VifStatus> {
    let backend = format!("{BACKEND_DIR}/{}/{}", id.domid, id.devid);
    let mut keys = invocation::backend_keys(None);
    keys.extend(["script", "hotplug-status", "hotplug-error"]);
    let be = xenstore::read_keys(store, &backend, &keys)?;
    let mut st = VifStatus {
        domid: id.domid,
        devid: id.devid,
        device: id.kernel_name(TypeIf::Vif),
        hotplug_status: be.get("hotplug-status").cloned().unwrap_or_default(),
        hotplug_error: be.get("hotplug-error").cloned(),
        state: "missing".into(),
        filter: "-".into(),
        ..Default::default()
    };
    let mode = match Mode::from_script(be.get("script").map_or("", String::as_str)) {
        Ok(m) => m,
        Err(e) => {
            st.mode = "unknown".into();
            st.differences.push(format!("{e:#}"));
            return Ok(st);
        }
    };
    st.mode = mode.to_string();
    let call = Call {
        script: mode.script(),
        mode,
        command: Command::Online,
        type_if: TypeIf::Vif,
        words: Words::default(),
    };
    let none = |_: &str| None;
    let antispoof = config::current().as_ref().map_or(true, |c| c.antispoof);
    let hp = match invocation::resolve(&call, id, backend, &none, &be) {
        Ok(h) => Hotplug { antispoof, ..h },
        Err(e) => {
            st.differences.push(format!("backend is invalid: {e:#}"));
            return Ok(st);
        }
    };
    st.device = hp.wanted_name.to_string();
    // One observation for every column and for the differences. One the mode refuses (no
    // device, the Open vSwitch database unreachable, ...) is a difference: what every mode
    // reads about the vif is still shown.
    let observed = modes::observe(nl, store, &hp);
    let fallback;
    let vif = match &observed {
        Ok(o) => o.vif(),
        Err(_) => {
            fallback = modes::observe_vif(nl, &hp)?;
            &fallback
        }
    };
    if let Some(link) = vif.device(&hp) {
        st.state = if link.up { "up" } else { "down" }.into();
        st.mtu = Some(link.mtu);
        st.device = link.name.clone();
        if let Some(m) = link.master {
            st.bridge = nl.link_by_index(m)?.map(|b| b.name);
        }
    }
    st.filter = filter_state(vif, &hp);
    if mode == Mode::Openvswitch {
        // Online observed the port under `vifname`; a device not renamed yet has its own.
        let port = match &observed {
            Ok(o) if st.device == hp.wanted_name.as_str() => Ok(o.ovs_port().cloned()),
            _ => crate::ovsdb::Ovsdb::connect().and_then(|mut db| db.port(&st.device)),
        };
        match port {
            Ok(Some(port)) => {
                st.bridge = port.bridge;
                let words = port.config.vlan_words();
                st.ovs_port = Some(if words.is_empty() {
                    "-".into()
                } else {
                    words.join(" ")
                });
            }
            Ok(None) => st
                .differences
                .push(format!("no Open vSwitch port {}", st.device)),
            Err(e) => st.differences.push(format!("{e:#}")),
        }
    }
    match observed.and_then(|o| modes::plan_observed(&o, &hp)) {
        Ok(steps) => st.differences.extend(
            steps
                .iter()
                .filter(|s| !matches!(s, Step::XsWrite { .. }))
                .map(|s| match s {
                    // The whole chain is many lines; `add D N --dry-run` prints it.
                    Step::Filter { .. } => format!(
                        "needs: {} (`xen-vif add {} {} --dry-run` shows them)",
                        s.label(),
                        id.domid,
                        id.devid
                    ),
                    s => format!("needs: {s}"),
                }),
        ),
        Err(e) => st.differences.push(format!("{e:#}")),
    }
    Ok(st)
}

/// One word for the vif's filter, from its observed state: `off` (configuration), `-`
/// (nothing to filter), `missing`, `on` (as wanted) or `stale`. Pure.
fn filter_state(vif: &Vif, hp: &Hotplug) -> String {
    let name = hp.kernel_name.as_str();
    if !hp.antispoof {
        return "off".into();
    }
    let Some(want) = filter::ruleset(name, hp.wanted_name.as_str(), hp.mac, &hp.ip) else {
        return "-".into();
    };
    match (
        &vif.filter.chain,
        filter::plan(&vif.filter, name, Some(&want)).is_empty(),
    ) {
        (None, _) => "missing",
        (Some(_), true) => "on",
        (Some(_), false) => "stale",
    }
    .into()
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if c.is_control() => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn opt<T: ToString>(v: &Option<T>, quote: bool) -> String {
    match v {
        None => "null".into(),
        Some(x) if quote => json_str(&x.to_string()),
        Some(x) => x.to_string(),
    }
}

pub fn to_json(list: &[VifStatus]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|s| {
            let mut m = BTreeMap::new();
            m.insert("domid", s.domid.to_string());
            m.insert("devid", s.devid.to_string());
            m.insert("device", json_str(&s.device));
            m.insert("mode", json_str(&s.mode));
            m.insert("bridge", opt(&s.bridge, true));
            m.insert("mtu", opt(&s.mtu, false));
            m.insert("state", json_str(&s.state));
            m.insert("hotplug_status", json_str(&s.hotplug_status));
            m.insert("hotplug_error", opt(&s.hotplug_error, true));
            m.insert("filter", json_str(&s.filter));
            m.insert("ovs_port", opt(&s.ovs_port, true));
            m.insert(
                "daemon",
                s.daemon
                    .as_ref()
                    .map_or("null".into(), |(pid, action, result)| {
                        format!(
                            "{{\"pid\":{pid},\"action\":{},\"result\":{}}}",
                            json_str(action),
                            json_str(result)
                        )
                    }),
            );
            m.insert(
                "differences",
                format!(
                    "[{}]",
                    s.differences
                        .iter()
                        .map(|d| json_str(d))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            );
            let fields: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{v}", json_str(k)))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    format!("[{}]", items.join(","))
}

pub fn run(json: bool) -> Result<()> {
    let store = XenStore::open()?;
    let mut nl = Netlink::open().context("open rtnetlink")?;
    let mut list = collect(&store, &mut nl)?;
    if let Some(pid) = crate::lock::daemon_pid() {
        for h in crate::daemon::handled() {
            if let Some(s) = list
                .iter_mut()
                .find(|s| s.domid == h.domid && s.devid == h.devid)
            {
                s.daemon = Some((pid, h.action, h.result));
            }
        }
    }
    let text = if json {
        format!("{}\n", to_json(&list))
    } else {
        table(&list)
    };
    crate::output::print(text.as_bytes())?;
    Ok(())
}

fn table(list: &[VifStatus]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        o,
        "{:<6} {:<6} {:<15} {:<7} {:<15} {:<6} {:<8} {:<8} HOTPLUG",
        "DOMID", "DEVID", "DEVICE", "MODE", "BRIDGE", "MTU", "STATE", "FILTER"
    );
    for s in list {
        let _ = writeln!(
            o,
            "{:<6} {:<6} {:<15} {:<7} {:<15} {:<6} {:<8} {:<8} {}",
            s.domid,
            s.devid,
            printable(&s.device),
            printable(&s.mode),
            printable(s.bridge.as_deref().unwrap_or("-")),
            s.mtu.map_or("-".into(), |m| m.to_string()),
            printable(&s.state),
            printable(&s.filter),
            if s.hotplug_status.is_empty() {
                "-".into()
            } else {
                printable(&s.hotplug_status)
            }
        );
        if let Some(e) = &s.hotplug_error {
            let _ = writeln!(o, "    hotplug-error: {}", printable(e));
        }
        if let Some(p) = &s.ovs_port {
            let _ = writeln!(o, "    ovs port: {}", printable(p));
        }
        for d in &s.differences {
            let _ = writeln!(o, "    {}", printable(d));
        }
    }
    match crate::lock::daemon_pid() {
        None => {
            let _ = writeln!(o, "daemon: not running");
        }
        Some(pid) => {
            let handled = crate::daemon::handled();
            let _ = writeln!(
                o,
                "daemon: running (pid {pid}), {} vifs handled",
                handled.len()
            );
            for h in handled {
                let _ = writeln!(
                    o,
                    "    {} {} {}",
                    printable(&h.device),
                    printable(&h.action),
                    printable(&h.result)
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(printable("a\x1b[2Jb\nc\u{9b}"), "a\\u{1b}[2Jb\\nc\\u{9b}");
        assert_eq!(json_str("a\x1b\u{9b}\"\n"), "\"a\\u001b\\u009b\\\"\\n\"");
    }

    #[test]
    fn the_filter_word_comes_from_the_observed_chain() {
        use crate::addr::parse_guest_addrs;
        use crate::modes::fixture::hp;
        use crate::nftables::ChainState;
        let mut h = hp(Mode::Bridge, Command::Online);
        let mut vif = Vif::default();
        assert_eq!(filter_state(&vif, &h), "off");
        h.antispoof = true;
        // Neither a MAC nor addresses: nothing to filter.
        assert_eq!(filter_state(&vif, &h), "-");
        h.mac = Some([0x00, 0x16, 0x3e, 0, 0, 5]);
        h.ip = parse_guest_addrs("10.0.0.5").unwrap();
        assert_eq!(filter_state(&vif, &h), "missing");
        let want = filter::ruleset("vif5.0", "vif5.0", h.mac, &h.ip).unwrap();
        vif.filter.table = true;
        vif.filter.chain = Some(ChainState {
            devices: vec!["vif5.0".into()],
            comment: Some(filter::fingerprint(&want)),
            rules: Some(want.rules.len()),
        });
        assert_eq!(filter_state(&vif, &h), "on");
        vif.filter.chain.as_mut().unwrap().rules = Some(want.rules.len() + 1);
        assert_eq!(filter_state(&vif, &h), "stale");
    }
}
