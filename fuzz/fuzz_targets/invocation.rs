#![no_main]
//! argv words, environment and backend keys through the whole contract: triage, locate and
//! resolve either give a validated call or an error, never a panic.
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use xen_vif::invocation::{self, Personality, Triage};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    // Sections separated by NUL: argv words | environment k=v lines | backend k=v lines.
    let mut parts = s.split('\0');
    let args: Vec<String> = parts.next().unwrap_or("").split(' ').map(String::from).collect();
    let kv = |p: Option<&str>| -> BTreeMap<String, String> {
        p.unwrap_or("")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let env = kv(parts.next());
    let backend = kv(parts.next());
    let env_fn = |k: &str| env.get(k).cloned();
    for p in [Personality::VifBridge, Personality::VifRoute, Personality::VifSetup] {
        let Ok(Triage::Run(call)) = invocation::triage(p, &args, &env_fn) else { continue };
        let Ok((id, path)) = invocation::locate(&call, &env_fn) else { continue };
        if let Ok(hp) = invocation::resolve(&call, id, path, &env_fn, &backend) {
            assert!(!hp.wanted_name.as_str().is_empty() && hp.wanted_name.as_str().len() <= 15);
        }
    }
});
