//! vif-openvswitch against a real Open vSwitch (a private ovsdb-server and ovs-vswitchd per
//! test, userspace datapath) in the test's network namespace: the database and the kernel
//! asserted, and guests on the same tag reaching each other while other tags do not.

mod support;
use support::ovs::Ovs;
use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";
const UUID: &str = "5b1e0e4c-8c1f-4d0b-9b4e-000000000005";

/// A sandbox with Open vSwitch, bridge ovsbr0, and guest 5's vif5.0 whose backend names
/// `bridge` (plus `extra` keys), with the VM's name and uuid where libxl writes them.
fn guest(tag: &str, bridge: &str, extra: &[(&str, &str)]) -> Option<(Sandbox, Ovs)> {
    let sb = Sandbox::new(tag)?;
    let ovs = Ovs::start(&sb)?;
    ovs.add_bridge(&sb, "ovsbr0");
    add_vif(&sb, 5, bridge, extra);
    Some((sb, ovs))
}

fn add_vif(sb: &Sandbox, domid: u32, bridge: &str, extra: &[(&str, &str)]) {
    sb.netback_vif(&format!("vif{domid}.0"), &format!("g{domid}.0"));
    let mut keys = vec![
        ("bridge", bridge),
        ("script", "/etc/xen/scripts/vif-openvswitch"),
    ];
    keys.extend_from_slice(extra);
    sb.backend(domid, 0, &keys);
    let uuid = format!("{}{domid}", &UUID[..UUID.len() - 1]);
    let vm = format!("/vm/{uuid}");
    sb.xs.write(&format!("/local/domain/{domid}/vm"), &vm);
    sb.xs.write(&format!("{vm}/name"), &format!("guest{domid}"));
    sb.xs.write(&format!("{vm}/uuid"), &uuid);
}

fn run(sb: &Sandbox, ovs: &Ovs, script: &str, cmd: &str, domid: u32) -> std::process::Output {
    let mut env = sb.libxl_env(script, domid, 0);
    env.extend(ovs.env());
    sb.run(script, &[cmd, "type_if=vif"], &env)
}

fn online(sb: &Sandbox, ovs: &Ovs, domid: u32) -> std::process::Output {
    run(sb, ovs, "vif-openvswitch", "online", domid)
}

fn offline(sb: &Sandbox, ovs: &Ovs, domid: u32) -> std::process::Output {
    run(sb, ovs, "vif-openvswitch", "offline", domid)
}

fn hotplug(sb: &Sandbox, key: &str) -> Option<String> {
    sb.xs.read(&format!("{BE}/{key}"))
}

#[test]
fn online_sets_tag_trunks_and_external_ids_offline_removes_the_port() {
    let Some((sb, ovs)) = guest("ovs-online", "ovsbr0.10:20:30", &[]) else {
        return;
    };
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("10"));
    assert_eq!(
        ovs.get("port", "vif5.0", "trunks").as_deref(),
        Some("[20, 30]")
    );
    assert_eq!(
        ovs.get("port", "vif5.0", "vlan_mode").as_deref(),
        Some("[]")
    );
    let ids = ovs.get("interface", "vif5.0", "external_ids").unwrap();
    assert_eq!(
        ids,
        format!(
            "{{attached-mac=\"00:16:3e:00:00:01\", xen-vm-name=guest5, xen-vm-uuid=\"{UUID}\"}}"
        )
    );
    // ovs-vswitchd took the port (the change was applied, not only stored).
    let ofport = ovs.get("interface", "vif5.0", "ofport").unwrap();
    assert!(
        ofport.parse::<i64>().is_ok_and(|p| p > 0),
        "ofport {ofport}"
    );
    assert!(sb.is_up("vif5.0"));
    assert_eq!(sb.mac("vif5.0"), "fe:ff:ff:ff:ff:ff");
    assert_eq!(sb.mtu("vif5.0"), 1500);
    assert_eq!(hotplug(&sb, "hotplug-status").as_deref(), Some("connected"));
    assert_eq!(hotplug(&sb, "hotplug-error"), None);
    assert_eq!(
        sb.xs.read("/local/domain/5/device/vif/0/mtu").as_deref(),
        Some("1500")
    );

    // Online twice: one port, the same settings, the same interface row.
    let uuid = ovs.get("interface", "vif5.0", "_uuid");
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("10"));
    assert_eq!(ovs.get("interface", "vif5.0", "_uuid"), uuid);
    assert!(sb.is_up("vif5.0"));

    assert_ok(&offline(&sb, &ovs, 5));
    assert!(ovs.ports("ovsbr0").is_empty());
    assert_eq!(ovs.get("port", "vif5.0", "tag"), None);
    assert!(!sb.is_up("vif5.0"));
    // Offline of what is gone already: fine.
    assert_ok(&offline(&sb, &ovs, 5));
}

#[test]
fn a_changed_backend_replaces_the_port_settings() {
    let Some((sb, ovs)) = guest("ovs-change", "ovsbr0.10", &[("mtu", "1400")]) else {
        return;
    };
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(sb.mtu("vif5.0"), 1400);
    sb.xs.write(&format!("{BE}/bridge"), "ovsbr0:7");
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("[]"));
    assert_eq!(ovs.get("port", "vif5.0", "trunks").as_deref(), Some("[7]"));
}

#[test]
fn the_vlan_key_sets_tag_trunks_and_vlan_mode() {
    let Some((sb, ovs)) = guest("ovs-vlan", "ovsbr0", &[("vlan", "10p/20/30")]) else {
        return;
    };
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("10"));
    assert_eq!(
        ovs.get("port", "vif5.0", "trunks").as_deref(),
        Some("[20, 30]")
    );
    assert_eq!(
        ovs.get("port", "vif5.0", "vlan_mode").as_deref(),
        Some("native-untagged")
    );
}

/// Bad input: exit 1, one clear line in hotplug-error, nothing changed.
fn refused(tag: &str, bridge: &str, extra: &[(&str, &str)], expect: &str) {
    let Some((sb, ovs)) = guest(tag, bridge, extra) else {
        return;
    };
    let before = sb.snapshot();
    let o = online(&sb, &ovs, 5);
    assert_fails(&o);
    let err = hotplug(&sb, "hotplug-error").unwrap_or_default();
    assert!(err.contains(expect), "hotplug-error {err:?}");
    assert!(!err.contains('\n'));
    assert_eq!(hotplug(&sb, "hotplug-status").as_deref(), Some("error"));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(ovs.ports("ovsbr0").is_empty());
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_missing_bridge_fails_online_with_one_line() {
    refused(
        "ovs-nobr",
        "nosuch.10",
        &[],
        "Open vSwitch has no bridge nosuch (it has: ovsbr0)",
    );
}

#[test]
fn bad_bridge_syntax_is_refused() {
    refused(
        "ovs-syntax",
        "ovsbr0.x:20",
        &[],
        "bridge \"ovsbr0.x:20\": tag \"x\" is not a number",
    );
    refused(
        "ovs-syntax2",
        "ovsbr0.10:",
        &[],
        "trunk \"\" is not a number",
    );
}

#[test]
fn vlan_key_and_bridge_suffix_conflict() {
    refused(
        "ovs-conflict",
        "ovsbr0.10",
        &[("vlan", "10")],
        "give only one of them",
    );
}

#[test]
fn a_guest_owned_identity_key_is_refused() {
    let Some((sb, ovs)) = guest("ovs-perms", "ovsbr0", &[]) else {
        return;
    };
    sb.xs.set_perms("/local/domain/5/vm", &["n5"]);
    let o = online(&sb, &ovs, 5);
    assert_fails(&o);
    let err = hotplug(&sb, "hotplug-error").unwrap_or_default();
    assert!(
        err.contains("/local/domain/5/vm is owned by domain 5, not the toolstack"),
        "{err}"
    );
    assert!(ovs.ports("ovsbr0").is_empty());
}

#[test]
fn missing_identity_keys_are_left_out() {
    let Some((sb, ovs)) = guest("ovs-noid", "ovsbr0", &[]) else {
        return;
    };
    sb.xs.rm("/local/domain/5/vm");
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(
        ovs.get("interface", "vif5.0", "external_ids").as_deref(),
        Some("{attached-mac=\"00:16:3e:00:00:01\"}")
    );
}

#[test]
fn vif_setup_dispatches_to_openvswitch() {
    let Some((sb, ovs)) = guest("ovs-setup", "ovsbr0.5", &[]) else {
        return;
    };
    let mut env = sb.libxl_env("vif-openvswitch", 5, 0);
    env.extend(ovs.env());
    assert_ok(&sb.run("vif-setup", &["online", "type_if=vif"], &env));
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("5"));
    // The tap's online and the vif's add have nothing to do, as with the other modes.
    assert_ok(&sb.run("vif-setup", &["offline", "type_if=tap"], &env));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    assert_ok(&sb.run("vif-setup", &["offline", "type_if=vif"], &env));
    assert!(ovs.ports("ovsbr0").is_empty());
}

#[test]
fn an_unreachable_database_fails_online_but_not_offline() {
    let Some((sb, ovs)) = guest("ovs-nodb", "ovsbr0", &[]) else {
        return;
    };
    assert_ok(&online(&sb, &ovs, 5));
    let mut env = sb.libxl_env("vif-openvswitch", 5, 0);
    env.push((
        "OVS_RUNDIR".into(),
        sb.dir.join("nowhere").display().to_string(),
    ));
    let o = sb.run("vif-openvswitch", &["offline", "type_if=vif"], &env);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("cannot connect to ovsdb-server"),
        "{}",
        stderr(&o)
    );
    assert!(!sb.is_up("vif5.0"));
    // The port is left (as stock leaves it): a later offline that reaches the database cleans up.
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    assert_ok(&offline(&sb, &ovs, 5));
    assert!(ovs.ports("ovsbr0").is_empty());

    let o = sb.run("vif-openvswitch", &["online", "type_if=vif"], &env);
    assert_fails(&o);
    let err = hotplug(&sb, "hotplug-error").unwrap_or_default();
    assert!(err.contains("cannot connect to ovsdb-server"), "{err}");
}

#[test]
fn a_failing_hook_takes_the_port_back() {
    let Some((sb, ovs)) = guest("ovs-undo", "ovsbr0.10", &[]) else {
        return;
    };
    let hooks = sb.etc_dir().join("xen/scripts/vif-post.d");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("10-fail.hook");
    std::fs::write(&hook, "exit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_fails(&online(&sb, &ovs, 5));
    assert!(ovs.ports("ovsbr0").is_empty());
    assert!(!sb.is_up("vif5.0"));
}

#[test]
fn guests_on_one_tag_reach_each_other_and_not_another_tag() {
    let Some((sb, ovs)) = guest("ovs-ping", "ovsbr0.10", &[]) else {
        return;
    };
    add_vif(&sb, 6, "ovsbr0.10", &[]);
    add_vif(&sb, 7, "ovsbr0.20", &[]);
    let mut guests = Vec::new();
    for (domid, ip) in [(5, "10.9.0.5"), (6, "10.9.0.6"), (7, "10.9.0.7")] {
        assert_ok(&online(&sb, &ovs, domid));
        let g = sb.netns(&format!("g{domid}"));
        sb.move_to(&format!("g{domid}.0"), &g);
        g.ip(&format!("addr add {ip}/24 dev g{domid}.0"));
        g.ip(&format!("link set g{domid}.0 up"));
        guests.push(g);
    }
    let [g5, _g6, g7] = &guests[..] else {
        unreachable!()
    };
    assert!(
        g5.ping("10.9.0.6"),
        "guests on tag 10 do not reach each other"
    );
    assert!(!g5.ping("10.9.0.7"), "tag 10 reaches tag 20");
    assert!(!g7.ping("10.9.0.6"), "tag 20 reaches tag 10");
}

#[test]
fn dry_run_changes_nothing_and_status_shows_the_port_and_its_differences() {
    let Some((sb, ovs)) = guest("ovs-dry", "ovsbr0.10:20", &[]) else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.run("xen-vif", &["add", "5", "0", "--dry-run"], &ovs.env());
    assert_ok(&o);
    assert!(
        stdout(&o).contains(
            "ovs-vsctl -- --if-exists del-port vif5.0 -- add-port ovsbr0 vif5.0 tag=10 trunks=20 \
             -- set interface vif5.0 'external-ids:\"attached-mac\"=\"00:16:3e:00:00:01\"'"
        ),
        "{}",
        stdout(&o)
    );
    assert!(ovs.ports("ovsbr0").is_empty());
    assert_eq!(before, sb.snapshot());

    assert_ok(&online(&sb, &ovs, 5));
    let o = sb.run("xen-vif", &["status"], &ovs.env());
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("openvswitch ovsbr0"), "{out}");
    assert!(out.contains("ovs port: tag=10 trunks=20"), "{out}");
    assert!(!out.contains("needs:"), "{out}");

    // Someone retags the port: status names what online would put back.
    ovs.vsctl(&["set", "port", "vif5.0", "tag=11"]);
    let out = stdout(&sb.run("xen-vif", &["status"], &ovs.env()));
    assert!(out.contains("ovs port: tag=11 trunks=20"), "{out}");
    assert!(
        out.contains("needs: ovs-vsctl -- --if-exists del-port vif5.0 -- add-port ovsbr0 vif5.0 tag=10 trunks=20"),
        "{out}"
    );
    assert_ok(&online(&sb, &ovs, 5));
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("10"));
}

#[test]
fn a_change_the_switch_never_applies_is_taken_back_within_the_deadline() {
    let Some((sb, mut ovs)) = guest("ovs-deadsw", "ovsbr0.10", &[]) else {
        return;
    };
    ovs.kill_switch();
    let before = sb.snapshot();
    let started = std::time::Instant::now();
    let o = online(&sb, &ovs, 5);
    assert_fails(&o);
    // Within libxl's 40 s, with time left to take the change back.
    assert!(started.elapsed() < std::time::Duration::from_secs(38));
    let err = hotplug(&sb, "hotplug-error").unwrap_or_default();
    assert!(
        err.contains("gave up waiting for ovs-vswitchd to apply configuration"),
        "{err}"
    );
    assert!(ovs.ports("ovsbr0").is_empty());
    assert_eq!(before, sb.snapshot());
}

#[test]
fn a_port_moves_to_the_bridge_the_backend_names_now() {
    let Some((sb, ovs)) = guest("ovs-move", "ovsbr0.10", &[]) else {
        return;
    };
    ovs.add_bridge(&sb, "ovsbr1");
    assert_ok(&online(&sb, &ovs, 5));
    sb.xs.write(&format!("{BE}/bridge"), "ovsbr1.11");
    assert_ok(&online(&sb, &ovs, 5));
    assert!(ovs.ports("ovsbr0").is_empty());
    assert_eq!(ovs.ports("ovsbr1"), ["vif5.0"]);
    assert_eq!(ovs.get("port", "vif5.0", "tag").as_deref(), Some("11"));
    assert_ok(&offline(&sb, &ovs, 5));
    assert!(ovs.ports("ovsbr1").is_empty());
}

#[test]
fn the_emulated_nics_tap_joins_and_leaves_the_switch_with_its_filter() {
    let Some((sb, ovs)) = guest("ovs-tap", "ovsbr0.10", &[]) else {
        return;
    };
    // qemu's tap for the HVM guest's emulated NIC, beside its PV vif.
    sb.netback_vif("vif5.0-emu", "t5.0");
    let mut env = sb.libxl_env("vif-openvswitch", 5, 0);
    env.extend(ovs.env());
    env.push(("INTERFACE".into(), "vif5.0-emu".into()));
    assert_ok(&sb.run("vif-openvswitch", &["add", "type_if=tap"], &env));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0-emu"]);
    assert_eq!(ovs.get("port", "vif5.0-emu", "tag").as_deref(), Some("10"));
    assert!(
        ovs.get("interface", "vif5.0-emu", "external_ids")
            .unwrap()
            .contains("xen-vm-name=guest5"),
    );
    assert!(sb.is_up("vif5.0-emu"));
    // The tap has its own filter; it reports nothing to xenstore (the vif does that).
    let tables = stdout(&sb.sh("nft list tables netdev"));
    assert!(tables.contains("xen-vif-vif5.0-emu"), "{tables}");
    assert_eq!(hotplug(&sb, "hotplug-status").as_deref(), Some(""));
    assert_eq!(sb.xs.read("/local/domain/5/device/vif/0/mtu"), None);
    // The PV vif beside it, then the tap goes: the vif's port stays.
    assert_ok(&online(&sb, &ovs, 5));
    assert_ok(&sb.run("vif-openvswitch", &["remove", "type_if=tap"], &env));
    assert_eq!(ovs.ports("ovsbr0"), ["vif5.0"]);
    let tables = stdout(&sb.sh("nft list tables netdev"));
    assert!(!tables.contains("xen-vif-vif5.0-emu"), "{tables}");
    assert!(tables.contains("xen-vif-vif5.0"), "{tables}");
}
