//! Pre-built bridges (`(network-script /bin/true)` made checking): `network-prebuilt start
//! bridges=...` and `xen-vif network check ...` change nothing and fail with one line per bridge
//! that is missing, not a bridge, or down.

mod support;
use support::*;

/// A host as a distribution builds it: br4 over a VLAN-ish port, br100, both up.
fn host(tag: &str) -> Option<Sandbox> {
    let sb = Sandbox::new(tag)?;
    sb.bridge("br4");
    sb.bridge("br100");
    sb.netback_vif("eth1", "x1");
    sb.ip("link set eth1 master br4");
    Some(sb)
}

#[test]
fn usable_bridges_pass_and_nothing_changes() {
    let Some(sb) = host("ok") else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.net("network-prebuilt", &["start", "bridges=br4,br100"]);
    assert_ok(&o);
    assert_eq!(stderr(&o), "");
    let o = sb.net("xen-vif", &["network", "check", "br4", "br100"]);
    assert_ok(&o);
    let o = sb.net("network-prebuilt", &["status", "bridges=br4,br100"]);
    assert_ok(&o);
    assert!(
        stdout(&o).contains("bridge br4: up, ports: eth1"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("bridge br100: up, ports: none"),
        "{}",
        stdout(&o)
    );
    assert_ok(&sb.net("network-prebuilt", &["stop", "bridges=br4,br100"]));
    assert_eq!(before, sb.snapshot());
    assert!(sb.state_files().is_empty());
}

#[test]
fn each_failure_kind_is_one_line() {
    let Some(sb) = host("fail") else {
        return;
    };
    sb.netback_vif("br5", "x5");
    sb.bridge("br6");
    sb.ip("link set br6 down");
    let before = sb.snapshot();
    let expected = [
        "network-prebuilt: bridge br7 does not exist",
        "network-prebuilt: br5 is not a bridge (it is a veth link)",
        "network-prebuilt: bridge br6 is down",
    ];
    let o = sb.net(
        "network-prebuilt",
        &["start", "bridges=br4,br7", "bridge=br5", "bridges=br6"],
    );
    assert_fails(&o);
    assert_eq!(stderr(&o).lines().collect::<Vec<_>>(), expected);
    let o = sb.net("xen-vif", &["network", "check", "br4", "br7", "br5", "br6"]);
    assert_fails(&o);
    let lines: Vec<String> = stderr(&o).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (got, want) in lines.iter().zip(expected) {
        assert_eq!(
            got.strip_prefix("xen-vif: "),
            want.strip_prefix("network-prebuilt: ")
        );
    }
    // Status reports the same and still exits 0.
    let o = sb.net("network-prebuilt", &["status", "bridges=br6"]);
    assert_ok(&o);
    assert!(stdout(&o).contains("bridge br6 is down"));
    assert_eq!(before, sb.snapshot());
}

#[test]
fn naming_no_bridge_is_an_error() {
    let Some(sb) = host("none") else {
        return;
    };
    let o = sb.net("network-prebuilt", &["start"]);
    assert_fails(&o);
    assert!(stderr(&o).contains("no bridges named"), "{}", stderr(&o));
    let o = sb.net("network-prebuilt", &["start", "bridges=a/b"]);
    assert_fails(&o);
    let o = sb.net("xen-vif", &["network", "check"]);
    assert_ne!(o.status.code(), Some(0));
}
