#![no_main]
//! The `vlan` key parser: any string gives a table or an error, never a panic; a table has one
//! PVID and valid, distinct VLAN ids.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(table) = xen_vif::vlanspec::parse(s) {
        assert_eq!(table.iter().filter(|v| v.pvid).count(), 1);
        assert!(table.iter().all(|v| (1..=4094).contains(&v.vid)));
        assert!(table.windows(2).all(|w| w[0].vid < w[1].vid));
    }
});
