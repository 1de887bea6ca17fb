#![no_main]
//! The route mode's `ip` list: never a panic; what is accepted is bounded and non-overlapping.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(list) = xen_vif::addr::parse_guest_addrs(s) {
        assert!(list.len() <= xen_vif::addr::MAX_GUEST_ADDRS);
    }
});
