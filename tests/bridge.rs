//! vif-bridge in the real kernel: each test in its own network namespace, the binary run as libxl
//! runs it, kernel state and xenstore contents asserted.

mod support;
use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";

fn guest(tag: &str, extra: &[(&str, &str)]) -> Option<Sandbox> {
    guest_on_xenbr0(tag, extra)
}

fn hotplug_status(sb: &Sandbox) -> Option<String> {
    sb.xs.read(&format!("{BE}/hotplug-status"))
}

#[test]
fn online_attaches_and_offline_detaches() {
    let Some(sb) = guest("online", &[]) else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.online("vif-bridge", 5, 0);
    assert_ok(&o);
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
    assert!(sb.is_up("vif5.0"));
    assert_eq!(sb.mac("vif5.0"), "fe:ff:ff:ff:ff:ff");
    assert_eq!(sb.mtu("vif5.0"), 1500);
    assert_eq!(hotplug_status(&sb).as_deref(), Some("connected"));
    assert_eq!(
        sb.xs.read("/local/domain/5/device/vif/0/mtu").as_deref(),
        Some("1500")
    );
    assert_eq!(sb.xs.read(&format!("{BE}/hotplug-error")), None);

    let o = sb.offline("vif-bridge", 5, 0);
    assert_ok(&o);
    assert_eq!(sb.master("vif5.0"), None);
    assert!(!sb.is_up("vif5.0"));
    // Offline reports nothing to libxl (as stock), and leaves the port MAC (netback deletes the
    // device next); everything else is as before.
    assert_eq!(hotplug_status(&sb).as_deref(), Some("connected"));
    assert_eq!(
        without(&before, "vif5.0"),
        without(&sb.snapshot(), "vif5.0")
    );
}

#[test]
fn online_twice_is_the_same_state() {
    let Some(sb) = guest("twice", &[]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    let first = sb.snapshot();
    sb.xs.clear_traffic();
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(first, sb.snapshot());
    assert_eq!(hotplug_status(&sb).as_deref(), Some("connected"));
}

#[test]
fn debug_logging_names_each_step_once() {
    let Some(sb) = guest("verbose", &[("ip", "10.9.0.5")]) else {
        return;
    };
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("XEN_VIF_LOG".into(), "debug".into()));
    let o = sb.run("vif-bridge", &["online", "type_if=vif"], &env);
    assert_ok(&o);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    for want in ["ip link set vif5.0 master xenbr0", "nft add table netdev"] {
        let n = lines.iter().filter(|l| l.contains(want)).count();
        assert_eq!(n, 1, "{want:?} once in:\n{err}");
    }
    // The filter's whole nft text is there once too, as debug detail under its label.
    assert_eq!(err.matches("type filter hook ingress").count(), 1, "{err}");
}

#[test]
fn mtu_from_xenstore() {
    let Some(sb) = guest("mtu", &[("mtu", "1400")]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.mtu("vif5.0"), 1400);
    assert_eq!(
        sb.xs.read("/local/domain/5/device/vif/0/mtu").as_deref(),
        Some("1400")
    );
}

#[test]
fn mtu_from_a_jumbo_bridge() {
    let Some(sb) = Sandbox::new("jumbo") else {
        return;
    };
    sb.bridge("xenbr0");
    // A bridge with no ports takes any MTU; the vif must follow it.
    sb.ip("link set xenbr0 mtu 9000");
    sb.netback_vif("vif5.0", "g5.0");
    sb.ip("link set g5.0 mtu 9000");
    sb.backend(5, 0, &[("bridge", "xenbr0")]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.mtu("vif5.0"), 9000);
    assert_eq!(sb.mtu("xenbr0"), 9000);
    assert_eq!(
        sb.xs.read("/local/domain/5/device/vif/0/mtu").as_deref(),
        Some("9000")
    );
}

#[test]
fn vifname_renames_and_offline_finds_it() {
    let Some(sb) = guest("vifname", &[("vifname", "web0")]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(
        sb.link("vif5.0").is_some(),
        "netback's name stays as an altname"
    );
    assert_eq!(sb.link("web0").unwrap()["ifname"], "web0");
    assert_eq!(sb.master("web0").as_deref(), Some("xenbr0"));
    // The MTU goes to the guest's frontend by domid/devid, not a path derived from "web0".
    assert_eq!(
        sb.xs.read("/local/domain/5/device/vif/0/mtu").as_deref(),
        Some("1500")
    );
    // Online again (an earlier rename is ours): fine.
    assert_ok(&sb.online("vif-bridge", 5, 0));
    // libxl still passes vif=vif5.0 on offline.
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_eq!(sb.master("web0"), None);
    assert!(!sb.is_up("web0"));
}

#[test]
fn vifname_collision_is_refused_before_any_change() {
    let Some(sb) = guest("collide", &[("vifname", "taken0")]) else {
        return;
    };
    sb.ip("link add taken0 type bridge");
    let before = sb.snapshot();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("taken0") && err.contains("vif5.0"), "{err}");
    assert_eq!(hotplug_status(&sb).as_deref(), Some("error"));
    // And offline does not touch the other link that has the vifname.
    sb.ip("link set taken0 up");
    sb.xs.rm("/local/domain/0/backend/vif/5/0/hotplug-error");
    sb.ip("link del vif5.0");
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert!(sb.is_up("taken0"));
}

/// The squatting attack: domain 5 asks for `vifname=vif6.0`, netback's name of domain 6's
/// device. Refused before any change.
#[test]
fn a_vifname_of_another_guests_device_is_refused() {
    let Some(sb) = guest("squat", &[("vifname", "vif6.0")]) else {
        return;
    };
    let before = sb.snapshot();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
    assert_eq!(hotplug_status(&sb).as_deref(), Some("error"));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        err,
        "vif-bridge online vif5.0: vifname \"vif6.0\" is netback's name form (vifD.N) for \
         another device; choose a name that is not"
    );
    for bad in ["vif6.0-emu", "vif5.0-emu", "all", "default", "up", "-v"] {
        sb.backend(5, 0, &[("bridge", "xenbr0"), ("vifname", bad)]);
        assert_fails(&sb.online("vif-bridge", 5, 0));
        assert_eq!(before, sb.snapshot(), "{bad}");
    }
}

/// The same attack left over from before the check (or made by hand): domain 5's device
/// renamed to vif6.0, carrying xen-vif's alias for vif5.0. Domain 6's hotplug must not take it
/// for its own: its offline does nothing to it, its online fails naming the owner.
#[test]
fn another_guests_device_under_our_name_is_left_alone() {
    let Some(sb) = Sandbox::new("squatted") else {
        return;
    };
    sb.bridge("xenbr0");
    sb.bridge("xenbr1");
    sb.netback_vif("vif6.0", "g5.0");
    let o = sb.sh("ip link set vif6.0 alias 'xen-vif vif5.0' && \
                   ip link property add dev vif6.0 altname vif5.0 && \
                   ip link set vif6.0 master xenbr0 up");
    assert!(o.status.success(), "{}", stderr(&o));
    sb.backend(5, 0, &[("bridge", "xenbr0")]);
    sb.backend(6, 0, &[("bridge", "xenbr1")]);
    let before = sb.snapshot();
    // Domain 6's offline (libxl always runs it): domain 5's device stays up on xenbr0.
    assert_ok(&sb.offline("vif-bridge", 6, 0));
    assert_eq!(before, sb.snapshot());
    // Domain 6's online: refused, domain 5's device not moved to xenbr1.
    let o = sb.online("vif-bridge", 6, 0);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot());
    let err = sb
        .xs
        .read("/local/domain/0/backend/vif/6/0/hotplug-status")
        .unwrap();
    assert_eq!(err, "error");
    let err = sb
        .xs
        .read("/local/domain/0/backend/vif/6/0/hotplug-error")
        .unwrap();
    assert_eq!(
        err,
        "vif-bridge online vif6.0: device vif6.0 is another backend's: vif6.0 carries the \
         alias \"xen-vif vif5.0\""
    );
    // Domain 5's own offline finds it (by its altname) and takes it off the bridge.
    assert_ok(&sb.offline("vif-bridge", 5, 0));
    assert_eq!(sb.master("vif6.0"), None);
}

/// Keys offline does not need went bad after online (a bad value, a value not UTF-8): offline
/// still takes the device off the bridge and down, and says what it ignored.
#[test]
fn offline_tears_down_when_unneeded_keys_went_bad() {
    let Some(sb) = guest("offbadkeys", &[("vifname", "web0"), ("mtu", "1400")]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.master("web0").as_deref(), Some("xenbr0"));
    for (key, value) in [
        ("mtu", "junk"),
        ("vlan", "x"),
        ("ip", "not-an-ip"),
        ("vifname", "vif6.0"),
    ] {
        sb.xs.write(&format!("{BE}/{key}"), value);
    }
    let o = sb.offline("vif-bridge", 5, 0);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("ignoring mtu for offline"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("ignoring vifname for offline"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sb.master("web0"), None);
    assert!(!sb.is_up("web0"));
    // Online again refuses the bad keys (and changes nothing).
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-bridge", 5, 0));
    assert_eq!(before, sb.snapshot());
    // A value that is not UTF-8.
    sb.backend(5, 0, &[("bridge", "xenbr0"), ("vifname", "web0")]);
    for key in ["mtu", "vlan", "ip"] {
        sb.xs.rm(&format!("{BE}/{key}"));
    }
    assert_ok(&sb.online("vif-bridge", 5, 0));
    sb.xs.write_bytes(&format!("{BE}/mtu"), b"\xff\xfe");
    let o = sb.offline("vif-bridge", 5, 0);
    assert_ok(&o);
    assert!(
        stderr(&o).contains("ignoring backend/vif/5/0/mtu for offline: invalid utf-8"),
        "{}",
        stderr(&o)
    );
    assert_eq!(sb.master("web0"), None);
    assert!(!sb.is_up("web0"));
}

/// A failure after the vif vanished (here: a hook that deletes it, then fails): undoing this
/// run's changes to a link that is gone counts as done, and the message is the cause alone.
#[test]
fn undo_of_a_vanished_vif_is_done_and_the_cause_is_the_message() {
    let Some(sb) = guest("undogone", &[("mtu", "1400")]) else {
        return;
    };
    let hook = sb.etc_dir().join("xen/scripts/vif-post.d/10-vanish.hook");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, "ip link del \"$dev\"\nexit 7\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert!(sb.link("vif5.0").is_none());
    assert_eq!(
        sb.xs.read(&format!("{BE}/hotplug-error")).unwrap(),
        "vif-bridge online vif5.0: hook /etc/xen/scripts/vif-post.d/10-vanish.hook failed \
         (exit status: 7)"
    );
    assert_eq!(hotplug_status(&sb).as_deref(), Some("error"));
}

#[test]
fn bridge_auto_detected_when_the_host_has_one() {
    let Some(sb) = Sandbox::new("auto") else {
        return;
    };
    sb.bridge("br-only");
    sb.netback_vif("vif5.0", "g5.0");
    sb.backend(5, 0, &[]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("br-only"));
}

#[test]
fn several_bridges_and_none_named_is_an_error_naming_them() {
    let Some(sb) = Sandbox::new("several") else {
        return;
    };
    sb.bridge("br-a");
    sb.bridge("br-b");
    sb.netback_vif("vif5.0", "g5.0");
    sb.backend(5, 0, &[]);
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("br-a") && err.contains("br-b"), "{err}");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn xenbr_falls_back_to_an_eth_bridge() {
    let Some(sb) = Sandbox::new("xenbr-eth") else {
        return;
    };
    sb.bridge("eth0");
    sb.netback_vif("vif5.0", "g5.0");
    sb.backend(5, 0, &[("bridge", "xenbr0")]);
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("eth0"));
}

#[test]
fn missing_bridge_fails_cleanly() {
    let Some(sb) = guest("nobridge", &[]) else {
        return;
    };
    sb.ip("link del xenbr0");
    let before = sb.snapshot();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        err,
        "vif-bridge online vif5.0: bridge xenbr0 does not exist"
    );
    assert_eq!(hotplug_status(&sb).as_deref(), Some("error"));
    assert!(stderr(&o).contains("bridge xenbr0 does not exist"));
    assert_eq!(before, sb.snapshot());
    // libxl runs offline after a failed online: it must succeed.
    assert_ok(&sb.offline("vif-bridge", 5, 0));
}

#[test]
fn a_link_that_is_not_a_bridge_is_refused() {
    let Some(sb) = guest("notbridge", &[("bridge", "g5.0")]) else {
        return;
    };
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("g5.0 is not a bridge"), "{err}");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn offline_of_a_vanished_vif_succeeds() {
    let Some(sb) = guest("vanished", &[]) else {
        return;
    };
    assert_ok(&sb.online("vif-bridge", 5, 0));
    sb.ip("link del vif5.0");
    assert_ok(&sb.offline("vif-bridge", 5, 0));
}

#[test]
fn online_of_a_missing_vif_fails() {
    let Some(sb) = Sandbox::new("novif") else {
        return;
    };
    sb.bridge("xenbr0");
    sb.backend(5, 0, &[("bridge", "xenbr0")]);
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert_eq!(
        err,
        "vif-bridge online vif5.0: device vif5.0 does not exist"
    );
}

#[test]
fn tap_add_and_remove() {
    let Some(sb) = guest("tap", &[]) else { return };
    sb.netback_vif("vif5.0-emu", "t5.0");
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.push(("INTERFACE".into(), "vif5.0-emu".into()));
    assert_ok(&sb.run("vif-bridge", &["add", "type_if=tap"], &env));
    assert_eq!(sb.master("vif5.0-emu").as_deref(), Some("xenbr0"));
    assert!(sb.is_up("vif5.0-emu"));
    // The tap reports nothing to xenstore (as stock): the vif does that.
    assert_eq!(hotplug_status(&sb).as_deref(), Some(""));
    assert_eq!(sb.xs.read("/local/domain/5/device/vif/0/mtu"), None);
    assert_ok(&sb.run("vif-bridge", &["remove", "type_if=tap"], &env));
    assert_eq!(sb.master("vif5.0-emu"), None);
}

#[test]
fn udev_tap_add_without_xenbus_path() {
    let Some(sb) = guest("udevtap", &[]) else {
        return;
    };
    sb.netback_vif("vif5.0-emu", "t5.0");
    let env = vec![
        ("INTERFACE".to_string(), "vif5.0-emu".to_string()),
        ("UDEV_CALL".to_string(), "1".to_string()),
    ];
    assert_ok(&sb.run("vif-setup", &["add", "type_if=tap"], &env));
    assert_eq!(sb.master("vif5.0-emu").as_deref(), Some("xenbr0"));
}

#[test]
fn ignored_combinations_do_nothing() {
    let Some(sb) = guest("ignored", &[]) else {
        return;
    };
    let before = sb.snapshot();
    let env = sb.libxl_env("vif-bridge", 5, 0);
    for args in [
        &["online", "type_if=tap"][..],
        &["offline", "type_if=tap"],
        &["add", "type_if=vif"],
        &["remove"],
        &["add"],
    ] {
        sb.xs.clear_traffic();
        let o = sb.run("vif-bridge", args, &env);
        assert_ok(&o);
        assert!(sb.xs.traffic().is_empty(), "{args:?} touched xenstore");
    }
    assert_eq!(before, sb.snapshot());
}

#[test]
fn udev_vif_setup_with_absolute_path() {
    let Some(sb) = guest("udev", &[]) else { return };
    let env = vec![
        ("XENBUS_TYPE".to_string(), "vif".to_string()),
        ("XENBUS_PATH".to_string(), BE.to_string()),
        ("XENBUS_BASE_PATH".to_string(), "backend".to_string()),
        (
            "script".to_string(),
            "/etc/xen/scripts/vif-bridge".to_string(),
        ),
        ("vif".to_string(), "vif5.0".to_string()),
        ("UDEV_CALL".to_string(), "1".to_string()),
        ("ACTION".to_string(), "online".to_string()),
    ];
    assert_ok(&sb.run("vif-setup", &["online", "type_if=vif"], &env));
    assert_eq!(sb.master("vif5.0").as_deref(), Some("xenbr0"));
    assert_eq!(hotplug_status(&sb).as_deref(), Some("connected"));
}

#[test]
fn argv_and_env_bridge_are_overridden_by_xenstore() {
    let Some(sb) = Sandbox::new("precedence") else {
        return;
    };
    sb.bridge("br-env");
    sb.bridge("br-argv");
    sb.bridge("br-xs");
    sb.netback_vif("vif5.0", "g5.0");
    sb.netback_vif("vif5.1", "g5.1");
    sb.netback_vif("vif5.2", "g5.2");
    sb.backend(5, 0, &[]);
    sb.backend(5, 1, &[]);
    sb.backend(5, 2, &[("bridge", "br-xs")]);
    for (devid, want) in [(0, "br-env"), (1, "br-argv"), (2, "br-xs")] {
        let mut env = sb.libxl_env("vif-bridge", 5, devid);
        env.push(("bridge".into(), "br-env".into()));
        let mut args = vec!["online", "type_if=vif"];
        if devid > 0 {
            args.push("bridge=br-argv");
        }
        assert_ok(&sb.run("vif-bridge", &args, &env));
        assert_eq!(sb.master(&format!("vif5.{devid}")).as_deref(), Some(want));
    }
}

#[test]
fn a_device_that_is_not_this_domains_is_refused() {
    let Some(sb) = guest("foreign", &[]) else {
        return;
    };
    sb.netback_vif("vif6.0", "g6.0");
    let mut env = sb.libxl_env("vif-bridge", 5, 0);
    env.retain(|(k, _)| k != "vif");
    env.push(("vif".into(), "vif6.0".into()));
    let before = sb.snapshot();
    assert_fails(&sb.run("vif-bridge", &["online", "type_if=vif"], &env));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("vif6.0"), "{err}");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn frontend_id_mismatch_is_refused() {
    let Some(sb) = guest("mismatch", &[("frontend-id", "7")]) else {
        return;
    };
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("frontend-id"), "{err}");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn the_guest_writable_frontend_is_never_read() {
    let Some(sb) = guest("frontend", &[]) else {
        return;
    };
    // A hostile guest plants values in its own directory.
    sb.xs.write("/local/domain/5/device/vif/0/bridge", "evil0");
    sb.xs.write("/local/domain/5/device/vif/0/mtu", "68");
    sb.xs.clear_traffic();
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert_eq!(sb.mtu("vif5.0"), 1500);
    for r in sb.xs.traffic() {
        if r.path.starts_with("/local/domain/5/") {
            assert_eq!(r.op, "WRITE", "read from the frontend: {r:?}");
        }
    }
}

#[test]
fn a_failure_after_changes_undoes_them() {
    let Some(sb) = guest("undo", &[("mtu", "1400")]) else {
        return;
    };
    // The frontend write is the last step before hotplug-status: make it fail.
    sb.xs.inject(Fault {
        op: Some("WRITE".into()),
        path_prefix: "/local/domain/5/device/vif/0/mtu".into(),
        action: FaultAction::Error("EACCES".into()),
        times: None,
    });
    let before = sb.snapshot();
    let o = sb.online("vif-bridge", 5, 0);
    assert_fails(&o);
    assert_eq!(before, sb.snapshot(), "the run's kernel changes are undone");
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.starts_with("vif-bridge online vif5.0: "), "{err}");
    assert_eq!(hotplug_status(&sb).as_deref(), Some("error"));
}

#[test]
fn vlan_on_a_bridge_without_filtering_is_a_clear_error() {
    let Some(sb) = guest("vlan-nofilter", &[("vlan", "10")]) else {
        return;
    };
    let before = sb.snapshot();
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("does not filter VLANs"), "{err}");
    assert_eq!(before, sb.snapshot());
}

#[test]
fn bad_vlan_term_is_named() {
    let Some(sb) = guest("vlan-bad", &[("vlan", "10p/5000")]) else {
        return;
    };
    assert_fails(&sb.online("vif-bridge", 5, 0));
    let err = sb.xs.read(&format!("{BE}/hotplug-error")).unwrap();
    assert!(err.contains("\"5000\"") || err.contains("5000"), "{err}");
}

#[test]
fn addresses_on_the_port_are_flushed() {
    let Some(sb) = guest("flush", &[]) else {
        return;
    };
    sb.ip("addr add 192.0.2.9/24 dev vif5.0");
    assert_ok(&sb.online("vif-bridge", 5, 0));
    assert!(sb.addrs("vif5.0").is_empty());
}
