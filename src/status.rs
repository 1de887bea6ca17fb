//! `xen-vif status`: every vif the backend directory lists, what xenstore asks for, what the
//! kernel has, and the difference — which is exactly what `online` would still change.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::invocation::{self, Call, Command, DeviceId, Mode, TypeIf, Words};
use crate::modes::find_device;
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
    /// Open vSwitch mode: the port's VLAN columns (`tag=10 trunks=20,30`), "-" without any.
    pub ovs_port: Option<String>,
    pub differences: Vec<String>,
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

pub fn collect(store: &dyn Store, nl: &mut Netlink) -> Result<Vec<VifStatus>> {
    let mut out = Vec::new();
    for domid in ids(store, BACKEND_DIR)? {
        for devid in ids(store, &format!("{BACKEND_DIR}/{domid}"))? {
            out.push(one(store, nl, DeviceId { domid, devid })?);
        }
    }
    Ok(out)
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
    let hp = match invocation::resolve(&call, id, backend, &none, &be) {
        Ok(h) => h,
        Err(e) => {
            st.differences.push(format!("backend is invalid: {e:#}"));
            return Ok(st);
        }
    };
    st.device = hp.wanted_name.to_string();
    if let Some(link) = find_device(nl, &hp)? {
        st.state = if link.up { "up" } else { "down" }.into();
        st.mtu = Some(link.mtu);
        st.device = link.name.clone();
        if let Some(m) = link.master {
            st.bridge = nl.link_by_index(m)?.map(|b| b.name);
        }
    }
    if mode == Mode::Openvswitch {
        match crate::ovsdb::Ovsdb::connect().and_then(|mut db| db.port(&st.device)) {
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
    match crate::modes::plan(nl, store, &hp) {
        Ok(steps) => st.differences.extend(
            steps
                .iter()
                .filter(|s| !matches!(s, Step::XsWrite { .. }))
                .map(|s| format!("needs: {s}")),
        ),
        Err(e) => st.differences.push(format!("{e:#}")),
    }
    Ok(st)
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
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
            m.insert("ovs_port", opt(&s.ovs_port, true));
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
    let list = collect(&store, &mut nl)?;
    if json {
        println!("{}", to_json(&list));
        return Ok(());
    }
    println!(
        "{:<6} {:<6} {:<15} {:<7} {:<15} {:<6} {:<8} HOTPLUG",
        "DOMID", "DEVID", "DEVICE", "MODE", "BRIDGE", "MTU", "STATE"
    );
    for s in &list {
        println!(
            "{:<6} {:<6} {:<15} {:<7} {:<15} {:<6} {:<8} {}",
            s.domid,
            s.devid,
            s.device,
            s.mode,
            s.bridge.as_deref().unwrap_or("-"),
            s.mtu.map_or("-".into(), |m| m.to_string()),
            s.state,
            if s.hotplug_status.is_empty() {
                "-"
            } else {
                &s.hotplug_status
            }
        );
        if let Some(e) = &s.hotplug_error {
            println!("    hotplug-error: {e}");
        }
        if let Some(p) = &s.ovs_port {
            println!("    ovs port: {p}");
        }
        for d in &s.differences {
            println!("    {d}");
        }
    }
    Ok(())
}
