//! Differential conformance: Debian's own Xen hotplug scripts (package xen-utils-common:
//! vif-bridge, vif-route, vif-openvswitch, vif-setup) and xen-vif run on identical fixtures in twin network
//! namespaces, and their results are compared. Every difference must be listed, with its reason,
//! in `tests/known-differences`: an unlisted difference fails, and so does a listed one that no
//! longer occurs.
//!
//! Both sides run exactly as deployed: as `/etc/xen/scripts/<name>` under `ip netns exec` (which
//! gives each run its own mount namespace and the netns's /sys). There a read-only overlay puts
//! the stock scripts (or the same directory with vif-bridge, vif-route and vif-setup linked to
//! xen-vif, as an installation of xen-vif leaves it) at /etc/xen/scripts, and a per-sandbox
//! overlay on /var/log catches the stock scripts' xen-hotplug.log; the runs write nothing to the
//! host's /etc or /var/log. The C xenstore tools the stock scripts use reach the sandbox's test
//! xenstored through XENSTORED_PATH.
//!
//! The stock scripts come from scripts/stock-scripts.sh (Debian's package, unpacked once into a
//! cache); XEN_VIF_STOCK_SCRIPTS=DIR compares against another scripts directory (e.g. a newer
//! Xen's); XEN_VIF_KNOWN_DIFFERENCES=FILE reads another list; XEN_VIF_CONFORMANCE=TEXT runs only
//! the scenarios whose name contains TEXT.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::*;

const BE: &str = "/local/domain/0/backend/vif/5/0";
const FE: &str = "/local/domain/5/device/vif/0";
const SCRIPTS: &str = "/etc/xen/scripts";
const ABSENT: &str = "(absent)";
const EMPTY: &str = "(empty)";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// One call of the script, with argv and environment exactly as the caller passes them.
struct Call {
    label: &'static str,
    /// The program: vif-bridge, vif-route or vif-setup (run as /etc/xen/scripts/<program>).
    program: &'static str,
    args: Vec<&'static str>,
    env: Vec<(String, String)>,
    /// `ip` commands run on both twins before the call (e.g. the vif vanishing).
    before: Vec<String>,
}

struct Scenario {
    name: &'static str,
    /// `ip` commands that build the host; every MAC is given, so snapshots compare.
    host: Vec<String>,
    /// The backend's `script` key (libxl writes the script it will run).
    script: &'static str,
    /// Backend keys beyond the ones libxl always writes (a key given "" is left out); a key that
    /// starts with '/' is a node elsewhere.
    keys: Vec<(&'static str, &'static str)>,
    calls: Vec<Call>,
    /// An administrator's hook in /etc/xen/scripts/vif-post.d recording what it is given.
    hook: bool,
}

fn cmds(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// netback's vif (a veth standing in; its peer is the guest's end, down).
fn vif() -> Vec<String> {
    cmds(&[
        "link add vif5.0 address 02:00:00:00:05:00 type veth peer name g5.0 address 02:00:00:00:05:01",
    ])
}

/// qemu's tap for an HVM guest's emulated NIC.
fn tap() -> Vec<String> {
    cmds(&[
        "link add vif5.0-emu address 02:00:00:00:05:e0 type veth peer name t5.0 address 02:00:00:00:05:e1",
    ])
}

fn bridge(name: &str, n: u8) -> Vec<String> {
    // A fixed MAC: an empty bridge's own MAC otherwise follows its ports.
    vec![
        format!("link add {name} address 02:00:00:00:b0:{n:02x} type bridge"),
        format!("link set {name} up"),
    ]
}

/// The routed host's uplink: eth0 with 192.0.2.1/24 and the default route (a veth whose peer is
/// up, so it has carrier like a cabled NIC).
fn uplink(address: bool) -> Vec<String> {
    let mut v = cmds(&[
        "link add eth0 address 02:00:00:00:e0:00 type veth peer name peth0 address 02:00:00:00:e0:01",
        "link set peth0 up",
        "link set eth0 up",
    ]);
    if address {
        v.extend(cmds(&[
            "addr add 192.0.2.1/24 brd + dev eth0",
            "route add default via 192.0.2.254 dev eth0",
        ]));
    }
    v
}

fn concat(parts: &[Vec<String>]) -> Vec<String> {
    parts.concat()
}

/// The environment libxl gives the script (libxl_linux.c get_hotplug_env), plus PATH from xl's.
fn libxl_env(script: &str, netdev: &str) -> Vec<(String, String)> {
    vec![
        ("script".into(), format!("{SCRIPTS}/{script}")),
        ("XENBUS_TYPE".into(), "vif".into()),
        ("XENBUS_PATH".into(), "backend/vif/5/0".into()),
        ("XENBUS_BASE_PATH".into(), "backend".into()),
        ("netdev".into(), netdev.into()),
        ("vif".into(), "vif5.0".into()),
    ]
}

/// `<script> <args>` as libxl runs it for the PV vif.
fn libxl(label: &'static str, script: &'static str, args: &[&'static str], netdev: &str) -> Call {
    Call {
        label,
        program: script,
        args: args.to_vec(),
        env: libxl_env(script, netdev),
        before: Vec::new(),
    }
}

/// `<script> add|remove type_if=tap` as libxl runs it for the emulated NIC's tap.
fn libxl_tap(
    label: &'static str,
    script: &'static str,
    args: &[&'static str],
    netdev: &str,
) -> Call {
    let mut c = libxl(label, script, args, netdev);
    c.env.push(("INTERFACE".into(), "vif5.0-emu".into()));
    c
}

fn bridge_call(label: &'static str, command: &'static str) -> Call {
    libxl(label, "vif-bridge", &[command, "type_if=vif"], "")
}

fn route_call(label: &'static str, command: &'static str, netdev: &str) -> Call {
    libxl(label, "vif-route", &[command, "type_if=vif"], netdev)
}

fn nat_call(label: &'static str, command: &'static str) -> Call {
    libxl(label, "vif-nat", &[command, "type_if=vif"], "")
}

/// A NAT guest (the stock script's DHCP is off: no /etc/dhcpd.conf).
fn natted(name: &'static str, keys: &[(&'static str, &'static str)], calls: Vec<Call>) -> Scenario {
    Scenario {
        name,
        hook: false,
        host: concat(&[uplink(true), vif()]),
        script: "vif-nat",
        keys: keys.to_vec(),
        calls,
    }
}

/// vif-nat for the guest's second vif (handle 1), as libxl runs it.
fn nat_call_1(label: &'static str, command: &'static str) -> Call {
    let mut c = nat_call(label, command);
    for (k, v) in &mut c.env {
        match k.as_str() {
            "XENBUS_PATH" => *v = "backend/vif/5/1".into(),
            "vif" => *v = "vif5.1".into(),
            _ => {}
        }
    }
    c
}

/// The second vif's backend directory, beside the harness's first.
const NAT_SECOND_VIF: &[(&str, &str)] = &[
    (
        "/local/domain/0/backend/vif/5/1/frontend",
        "/local/domain/5/device/vif/1",
    ),
    ("/local/domain/0/backend/vif/5/1/frontend-id", "5"),
    ("/local/domain/0/backend/vif/5/1/online", "1"),
    ("/local/domain/0/backend/vif/5/1/state", "2"),
    (
        "/local/domain/0/backend/vif/5/1/script",
        "/etc/xen/scripts/vif-nat",
    ),
    ("/local/domain/0/backend/vif/5/1/mac", "00:16:3e:00:01:05"),
    ("/local/domain/0/backend/vif/5/1/handle", "1"),
    ("/local/domain/0/backend/vif/5/1/type", "vif"),
    ("/local/domain/0/backend/vif/5/1/bridge", "xenbr0"),
    ("/local/domain/5/device/vif/1/backend-id", "0"),
];

fn nat_on_off() -> Vec<Call> {
    vec![nat_call("online", "online"), nat_call("offline", "offline")]
}

/// udev running vif-setup from xen-backend.rules: the uevent's environment (netback adds
/// `script` and `vif`; XENBUS_PATH is absolute).
fn udev_vif(label: &'static str, command: &'static str, script: &str) -> Call {
    Call {
        label,
        program: "vif-setup",
        args: vec![command, "type_if=vif"],
        env: vec![
            ("ACTION".into(), command.into()),
            ("XENBUS_TYPE".into(), "vif".into()),
            ("XENBUS_PATH".into(), BE.into()),
            ("XENBUS_BASE_PATH".into(), "backend".into()),
            ("script".into(), format!("{SCRIPTS}/{script}")),
            ("vif".into(), "vif5.0".into()),
            ("UDEV_CALL".into(), "1".into()),
        ],
        before: Vec::new(),
    }
}

/// udev running vif-setup for a `vif*-emu` net device: only the net uevent's environment.
fn udev_tap(label: &'static str, action: &'static str) -> Call {
    Call {
        label,
        program: "vif-setup",
        args: vec![action, "type_if=tap"],
        env: vec![
            ("ACTION".into(), action.into()),
            ("INTERFACE".into(), "vif5.0-emu".into()),
            ("UDEV_CALL".into(), "1".into()),
        ],
        before: Vec::new(),
    }
}

fn before(mut c: Call, list: &[&str]) -> Call {
    c.before = cmds(list);
    c
}

fn bridged_host() -> Vec<String> {
    concat(&[bridge("xenbr0", 0), vif()])
}

fn bridged(
    name: &'static str,
    keys: &[(&'static str, &'static str)],
    calls: Vec<Call>,
) -> Scenario {
    Scenario {
        name,
        hook: false,
        host: bridged_host(),
        script: "vif-bridge",
        keys: keys.to_vec(),
        calls,
    }
}

fn routed(name: &'static str, ip: &'static str, calls: Vec<Call>) -> Scenario {
    Scenario {
        name,
        hook: false,
        host: concat(&[uplink(true), vif()]),
        script: "vif-route",
        keys: vec![("gatewaydev", "eth0"), ("ip", ip)],
        calls,
    }
}

fn on_off() -> Vec<Call> {
    vec![
        bridge_call("online", "online"),
        bridge_call("offline", "offline"),
    ]
}

/// online and offline as libxl runs them; `netdev` is what libxl passes from gatewaydev.
fn route_on_off(netdev: &str) -> Vec<Call> {
    vec![
        route_call("online", "online", netdev),
        route_call("offline", "offline", netdev),
    ]
}

fn tap_add_remove(script: &'static str, netdev: &str) -> Vec<Call> {
    vec![
        libxl_tap("add", script, &["add", "type_if=tap"], netdev),
        libxl_tap("remove", script, &["remove", "type_if=tap"], netdev),
    ]
}

const VM: &str = "/vm/5b1e0e4c-8c1f-4d0b-9b4e-000000000005";

/// A guest on Open vSwitch bridge ovsbr0 (started by the twin for script vif-openvswitch),
/// with the VM's name and uuid where libxl writes them.
fn switched(
    name: &'static str,
    bridge: &'static str,
    keys: &[(&'static str, &'static str)],
    calls: Vec<Call>,
) -> Scenario {
    let mut all = vec![
        ("bridge", bridge),
        ("/local/domain/5/vm", VM),
        ("/vm/5b1e0e4c-8c1f-4d0b-9b4e-000000000005/name", "guest5"),
        (
            "/vm/5b1e0e4c-8c1f-4d0b-9b4e-000000000005/uuid",
            "5b1e0e4c-8c1f-4d0b-9b4e-000000000005",
        ),
    ];
    all.extend_from_slice(keys);
    Scenario {
        name,
        hook: false,
        host: vif(),
        script: "vif-openvswitch",
        keys: all,
        calls,
    }
}

fn ovs_call(label: &'static str, command: &'static str) -> Call {
    libxl(label, "vif-openvswitch", &[command, "type_if=vif"], "")
}

fn scenarios() -> Vec<Scenario> {
    vec![
        switched(
            "ovs",
            "ovsbr0.10:20:30",
            &[],
            vec![
                ovs_call("online", "online"),
                ovs_call("online-again", "online"),
                ovs_call("offline", "offline"),
            ],
        ),
        switched(
            "ovs-untagged",
            "ovsbr0",
            &[],
            vec![ovs_call("online", "online"), ovs_call("offline", "offline")],
        ),
        switched(
            "ovs-mtu-key",
            "ovsbr0.10",
            &[("mtu", "1400")],
            vec![ovs_call("online", "online"), ovs_call("offline", "offline")],
        ),
        switched(
            "ovs-missing-bridge",
            "nosuch.10",
            &[],
            vec![ovs_call("online", "online")],
        ),
        switched(
            "ovs-bad-syntax",
            "ovsbr0.x",
            &[],
            vec![ovs_call("online", "online")],
        ),
        switched(
            "ovs-vanished",
            "ovsbr0.10",
            &[],
            vec![
                ovs_call("online", "online"),
                before(ovs_call("offline", "offline"), &["link del vif5.0"]),
            ],
        ),
        bridged("bridge", &[], on_off()),
        bridged("bridge-mtu-key", &[("mtu", "1400")], on_off()),
        Scenario {
            name: "bridge-jumbo",
            hook: false,
            host: concat(&[
                bridged_host(),
                cmds(&["link set xenbr0 mtu 9000", "link set g5.0 mtu 9000"]),
            ]),
            script: "vif-bridge",
            keys: vec![],
            calls: on_off(),
        },
        bridged(
            "bridge-vifname",
            &[("vifname", "web0")],
            vec![
                bridge_call("online", "online"),
                bridge_call("online-again", "online"),
                bridge_call("offline", "offline"),
            ],
        ),
        Scenario {
            name: "bridge-vifname-taken",
            hook: false,
            host: concat(&[
                bridged_host(),
                cmds(&[
                    "link add taken0 address 02:00:00:00:0a:00 type veth peer name taken0p address 02:00:00:00:0a:01",
                ]),
            ]),
            script: "vif-bridge",
            keys: vec![("vifname", "taken0")],
            calls: on_off(),
        },
        Scenario {
            name: "bridge-xenbr-to-eth",
            hook: false,
            host: concat(&[bridge("eth0", 0), vif()]),
            script: "vif-bridge",
            keys: vec![],
            calls: on_off(),
        },
        Scenario {
            name: "bridge-autodetect",
            hook: false,
            host: concat(&[bridge("br-only", 0), vif()]),
            script: "vif-bridge",
            keys: vec![("bridge", "")],
            calls: on_off(),
        },
        Scenario {
            name: "bridge-autodetect-several",
            hook: false,
            host: concat(&[bridge("br-a", 0), bridge("br-b", 1), vif()]),
            script: "vif-bridge",
            keys: vec![("bridge", "")],
            calls: on_off(),
        },
        Scenario {
            name: "bridge-missing",
            hook: false,
            host: vif(),
            script: "vif-bridge",
            keys: vec![],
            // libxl runs offline after a failed online.
            calls: on_off(),
        },
        Scenario {
            name: "bridge-not-a-bridge",
            hook: false,
            host: concat(&[
                bridged_host(),
                cmds(&[
                    "link add eth1 address 02:00:00:00:e1:00 type veth peer name peth1 address 02:00:00:00:e1:01",
                ]),
            ]),
            script: "vif-bridge",
            keys: vec![("bridge", "eth1")],
            calls: on_off(),
        },
        // `vlan` (Xen 4.19's key) on a bridge without VLAN filtering (this kernel has none).
        bridged("bridge-vlan-key", &[("vlan", "10")], on_off()),
        Scenario {
            name: "bridge-tap",
            hook: false,
            host: concat(&[bridged_host(), tap()]),
            script: "vif-bridge",
            keys: vec![],
            calls: tap_add_remove("vif-bridge", ""),
        },
        Scenario {
            name: "bridge-tap-vifname",
            hook: false,
            host: concat(&[bridged_host(), tap()]),
            script: "vif-bridge",
            keys: vec![("vifname", "web0")],
            calls: tap_add_remove("vif-bridge", ""),
        },
        Scenario {
            hook: true,
            ..bridged("bridge-hook", &[], on_off())
        },
        Scenario {
            hook: true,
            ..bridged("bridge-vifname-hook", &[("vifname", "web0")], on_off())
        },
        Scenario {
            name: "bridge-tap-hook",
            hook: true,
            host: concat(&[bridged_host(), tap()]),
            script: "vif-bridge",
            keys: vec![],
            calls: tap_add_remove("vif-bridge", ""),
        },
        Scenario {
            name: "bridge-ignored",
            hook: false,
            host: concat(&[bridged_host(), tap()]),
            script: "vif-bridge",
            keys: vec![],
            calls: vec![
                libxl_tap("online-tap", "vif-bridge", &["online", "type_if=tap"], ""),
                libxl_tap("offline-tap", "vif-bridge", &["offline", "type_if=tap"], ""),
                libxl("add-vif", "vif-bridge", &["add", "type_if=vif"], ""),
                libxl("remove-default", "vif-bridge", &["remove"], ""),
                libxl("add-default", "vif-bridge", &["add"], ""),
            ],
        },
        bridged(
            "bridge-unknown-command",
            &[],
            vec![
                bridge_call("online", "online"),
                libxl("start", "vif-bridge", &["start"], ""),
            ],
        ),
        bridged(
            "bridge-vanished",
            &[],
            vec![
                bridge_call("online", "online"),
                before(bridge_call("offline", "offline"), &["link del vif5.0"]),
            ],
        ),
        bridged(
            "bridge-online-twice",
            &[],
            vec![
                bridge_call("online", "online"),
                bridge_call("online-again", "online"),
            ],
        ),
        bridged(
            "bridge-udev",
            &[],
            vec![
                udev_vif("online", "online", "vif-bridge"),
                udev_vif("offline", "offline", "vif-bridge"),
            ],
        ),
        // libxl (run_hotplug_scripts=1, the default) runs the scripts and says so in xenstore;
        // a udev rule calling vif-setup as well would run every action twice.
        bridged(
            "bridge-udev-under-libxl",
            &[("/local/domain/0/libxl/disable_udev", "1")],
            vec![
                udev_vif("online", "online", "vif-bridge"),
                udev_vif("offline", "offline", "vif-bridge"),
            ],
        ),
        Scenario {
            name: "bridge-udev-tap",
            hook: false,
            host: concat(&[bridged_host(), tap()]),
            script: "vif-bridge",
            keys: vec![],
            calls: vec![udev_tap("add", "add"), udev_tap("remove", "remove")],
        },
        Scenario {
            name: "route-udev",
            hook: false,
            host: concat(&[uplink(true), vif()]),
            script: "vif-route",
            // udev passes no netdev: the gateway is the default (eth0 for the stock script).
            keys: vec![("ip", "192.0.2.10")],
            calls: vec![
                udev_vif("online", "online", "vif-route"),
                udev_vif("offline", "offline", "vif-route"),
            ],
        },
        routed("route", "192.0.2.10", route_on_off("eth0")),
        routed(
            "route-several",
            "192.0.2.10 192.0.2.11 198.51.100.0/28",
            route_on_off("eth0"),
        ),
        routed("route-no-ip", "", route_on_off("eth0")),
        Scenario {
            name: "route-default-netdev",
            hook: true,
            host: concat(&[uplink(true), vif()]),
            script: "vif-route",
            // No gatewaydev: libxl passes netdev empty, the stock default is eth0.
            keys: vec![("ip", "192.0.2.10")],
            calls: route_on_off(""),
        },
        Scenario {
            name: "route-no-gateway-address",
            hook: false,
            host: concat(&[uplink(false), vif()]),
            script: "vif-route",
            keys: vec![("gatewaydev", "eth0"), ("ip", "192.0.2.10")],
            calls: route_on_off("eth0"),
        },
        Scenario {
            name: "route-vifname",
            hook: false,
            host: concat(&[uplink(true), vif()]),
            script: "vif-route",
            keys: vec![
                ("gatewaydev", "eth0"),
                ("ip", "192.0.2.10"),
                ("vifname", "web0"),
            ],
            calls: route_on_off("eth0"),
        },
        Scenario {
            name: "route-tap",
            hook: false,
            host: concat(&[uplink(true), tap()]),
            script: "vif-route",
            keys: vec![("gatewaydev", "eth0"), ("ip", "192.0.2.10")],
            calls: tap_add_remove("vif-route", "eth0"),
        },
        Scenario {
            name: "route-ipv6",
            hook: false,
            host: concat(&[
                uplink(true),
                cmds(&["addr add 2001:db8::1/64 dev eth0 nodad"]),
                vif(),
            ]),
            script: "vif-route",
            keys: vec![("gatewaydev", "eth0"), ("ip", "192.0.2.10 2001:db8::10")],
            calls: route_on_off("eth0"),
        },
        Scenario {
            hook: true,
            ..routed(
                "route-hook",
                "192.0.2.10 198.51.100.0/28",
                route_on_off("eth0"),
            )
        },
        routed(
            "route-vanished",
            "192.0.2.10",
            vec![
                route_call("online", "online", "eth0"),
                before(
                    route_call("offline", "offline", "eth0"),
                    &["link del vif5.0"],
                ),
            ],
        ),
        natted("nat", &[], nat_on_off()),
        natted("nat-ip", &[("ip", "192.168.7.20")], nat_on_off()),
        natted(
            "nat-online-twice",
            &[],
            vec![
                nat_call("online", "online"),
                nat_call("online-again", "online"),
                nat_call("offline", "offline"),
            ],
        ),
        natted("nat-vifname", &[("vifname", "web0")], nat_on_off()),
        // `ip link set dev VIF up arp on`: a device without ARP gets it.
        Scenario {
            host: concat(&[uplink(true), vif(), cmds(&["link set vif5.0 arp off"])]),
            ..natted("nat-noarp", &[], nat_on_off())
        },
        // A second vif (handle 1): its default address is 10.0.5.2, its router 10.0.5.129.
        Scenario {
            host: concat(&[
                uplink(true),
                vif(),
                cmds(&[
                    "link add vif5.1 address 02:00:00:00:05:10 type veth peer name g5.1 address 02:00:00:00:05:11",
                ]),
            ]),
            ..natted(
                "nat-second-vif",
                NAT_SECOND_VIF,
                vec![
                    nat_call("online", "online"),
                    nat_call_1("online-1", "online"),
                    nat_call_1("offline-1", "offline"),
                    nat_call("offline", "offline"),
                ],
            )
        },
        natted(
            "nat-vanished",
            &[],
            vec![
                nat_call("online", "online"),
                before(nat_call("offline", "offline"), &["link del vif5.0"]),
            ],
        ),
        Scenario {
            hook: true,
            ..natted("nat-hook", &[], nat_on_off())
        },
        Scenario {
            hook: true,
            ..natted("nat-ip-hook", &[("ip", "192.168.7.20")], nat_on_off())
        },
        Scenario {
            name: "nat-tap",
            hook: false,
            host: concat(&[uplink(true), tap()]),
            script: "vif-nat",
            keys: vec![],
            calls: tap_add_remove("vif-nat", ""),
        },
        routed(
            "route-online-twice",
            "192.0.2.10",
            vec![
                route_call("online", "online", "eth0"),
                route_call("online-again", "online", "eth0"),
            ],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Running one side

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Stock,
    XenVif,
}

/// What one side leaves behind after each call: "call-label" -> (key -> value).
type Observed = Vec<(&'static str, BTreeMap<String, String>)>;

/// The directory laid over /etc for one side: `xen/scripts/` with the stock scripts, or with
/// xen-vif linked as vif-bridge, vif-route, vif-nat and vif-setup (the rest stays stock, as installed).
fn etc_layer(sb: &Sandbox, stock: &Path, side: Side, hook: bool) -> PathBuf {
    let layer = sb.path(match side {
        Side::Stock => "etc-stock",
        Side::XenVif => "etc-xen-vif",
    });
    let scripts = layer.join("xen/scripts");
    fs::create_dir_all(&scripts).unwrap();
    for entry in fs::read_dir(stock).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), scripts.join(entry.file_name())).unwrap();
        }
    }
    if hook {
        let dir = scripts.join("vif-post.d");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("50-record.hook");
        fs::write(&path, HOOK).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if side == Side::XenVif {
        for name in [
            "vif-bridge",
            "vif-route",
            "vif-nat",
            "vif-openvswitch",
            "vif-setup",
        ] {
            let _ = fs::remove_file(scripts.join(name));
            std::os::unix::fs::symlink(binary(), scripts.join(name)).unwrap();
        }
    }
    layer
}

/// The stock scripts source hooks into their shell; the variables they document for hooks are
/// recorded one per line in the sandbox's /var/log overlay.
const HOOK: &str = r#"# Records what a vif-post.d hook is given (tests/conformance.rs).
for _xv_var in command dev vif type_if XENBUS_PATH bridge ip main_ip netdev; do
    eval "echo \"$_xv_var=\${$_xv_var-(unset)}\""
done >>/var/log/xen/hook.out
"#;
const HOOK_OUT: &str = "log-upper/xen/hook.out";

/// Inside `ip netns exec` (a private mount namespace): the overlays, then the program.
/// /etc/xen is exactly the layer's (a Xen host's own /etc/xen, its hooks and xen-vif.toml, must
/// not leak in). Exits HARNESS_FAILED (never a script's status) if the overlays cannot be set up.
const WRAPPER: &str = r#"layer=$1 upper=$2 work=$3; shift 3
mount -t overlay xen-vif-etc -o "lowerdir=$layer:/etc" /etc &&
mount --bind "$layer/xen" /etc/xen &&
mount -t overlay xen-vif-log -o "lowerdir=/var/log,upperdir=$upper,workdir=$work" /var/log ||
exit 97
exec "$@""#;
const HARNESS_FAILED: i32 = 97;

struct Twin {
    /// Open vSwitch, for vif-openvswitch (dropped before the sandbox).
    ovs: Option<support::ovs::Ovs>,
    sb: Sandbox,
    layer: PathBuf,
}

impl Twin {
    fn new(sc: &Scenario, stock: &Path, side: Side, tag: &str) -> Twin {
        let sb = Sandbox::new(&format!("cf-{tag}")).expect("sandbox (checked before)");
        let layer = etc_layer(&sb, stock, side, sc.hook);
        // The stock scripts append their stderr to /var/log/xen/xen-hotplug.log.
        fs::create_dir_all(sb.path("log-upper/xen")).unwrap();
        fs::create_dir_all(sb.path("log-work")).unwrap();
        for c in &sc.host {
            sb.ip(c);
        }
        let ovs = (sc.script == "vif-openvswitch").then(|| {
            let ovs = support::ovs::Ovs::start(&sb).expect("Open vSwitch (checked before)");
            // A fixed MAC, as for the Linux bridges.
            ovs.vsctl(&[
                "add-br",
                "ovsbr0",
                "--",
                "set",
                "bridge",
                "ovsbr0",
                "datapath_type=netdev",
                "other-config:hwaddr=02:00:00:00:b0:00",
            ]);
            sb.ip("link set ovsbr0 up");
            ovs
        });
        let mut keys: Vec<(String, String)> = vec![
            ("frontend".into(), FE.into()),
            ("frontend-id".into(), "5".into()),
            ("online".into(), "1".into()),
            ("state".into(), "2".into()),
            ("script".into(), format!("{SCRIPTS}/{}", sc.script)),
            ("mac".into(), "00:16:3e:00:00:05".into()),
            ("handle".into(), "0".into()),
            ("type".into(), "vif".into()),
            // libxl's default bridge, written whatever the script.
            ("bridge".into(), "xenbr0".into()),
            // Pre-created empty: netback waits for the script to write `connected`.
            ("hotplug-status".into(), String::new()),
        ];
        for (k, v) in &sc.keys {
            keys.retain(|(key, _)| key != k);
            if !v.is_empty() {
                keys.push((k.to_string(), v.to_string()));
            }
        }
        for (k, v) in &keys {
            if k.starts_with('/') {
                sb.xs.write(k, v);
            } else {
                sb.xs.write(&format!("{BE}/{k}"), v);
            }
        }
        sb.xs.write(&format!("{FE}/backend-id"), "0");
        sb.xs.write(&format!("{FE}/mac"), "00:16:3e:00:00:05");
        Twin { ovs, sb, layer }
    }

    fn run(&self, call: &Call) -> Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.sb.ns, "sh", "-c", WRAPPER, "wrapper"])
            .arg(&self.layer)
            .arg(self.sb.path("log-upper"))
            .arg(self.sb.path("log-work"))
            .arg(format!("{SCRIPTS}/{}", call.program))
            .args(&call.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("XENSTORED_PATH", self.sb.xs.socket())
            .envs(call.env.iter().map(|(k, v)| (k, v)))
            .envs(self.ovs.iter().flat_map(|o| o.env()))
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_ne!(
            out.status.code(),
            Some(HARNESS_FAILED),
            "cannot lay the scripts over /etc/xen/scripts (overlayfs): {}",
            stderr(&out)
        );
        out
    }

    fn hotplug_log(&self) -> String {
        fs::read_to_string(self.sb.path("log-upper/xen/xen-hotplug.log")).unwrap_or_default()
    }
}

/// Runs the scenario on one side; returns what each call left behind, and for diagnostics the
/// stock scripts' xen-hotplug.log or xen-vif's stderr.
fn run_side(sc: &Scenario, stock: &Path, side: Side, tag: &str) -> (Observed, String) {
    let twin = Twin::new(sc, stock, side, tag);
    let mut observed = Vec::new();
    let mut errors = String::new();
    for call in &sc.calls {
        for c in &call.before {
            twin.sb.ip(c);
        }
        twin.sb.xs.clear_traffic();
        let out = twin.run(call);
        let _ = write!(errors, "[{}] {}", call.label, stderr(&out));
        let mut seen = observe(&twin.sb, &out);
        if let Some(ovs) = &twin.ovs {
            ovs_rows(ovs, &mut seen);
        }
        if let Ok(text) = fs::read_to_string(twin.sb.path(HOOK_OUT)) {
            fs::remove_file(twin.sb.path(HOOK_OUT)).unwrap();
            for line in text.lines() {
                let (var, value) = line.split_once('=').unwrap_or((line, ""));
                let key = format!("hook {var}");
                // A hook that ran twice in one call shows both values.
                match seen.get_mut(&key) {
                    Some(v) => {
                        v.push_str(" ; ");
                        v.push_str(value);
                    }
                    None => {
                        seen.insert(key, value.to_string());
                    }
                }
            }
        }
        observed.push((call.label, seen));
    }
    let log = match side {
        Side::Stock => twin.hotplug_log(),
        Side::XenVif => errors,
    };
    (observed, log)
}

// ---------------------------------------------------------------------------------------------
// Observing: one flat map per call, key -> value, so a difference is one key

fn observe(sb: &Sandbox, out: &Output) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "exit".to_string(),
        out.status
            .code()
            .map_or_else(|| format!("{:?}", out.status), |c| c.to_string()),
    );
    let so = stdout(out);
    if !so.trim().is_empty() {
        m.insert("stdout".to_string(), so.trim().replace('\n', "\\n"));
    }
    links(sb, &mut m);
    addresses(sb, &mut m);
    for (fam, tag) in [("-4", "route4"), ("-6", "route6")] {
        for line in sb.ip(&format!("{fam} route show table all")).lines() {
            // The kernel's own IPv6 link-local and multicast routes come and go with links.
            if line.contains("fe80::") || line.starts_with("multicast") {
                continue;
            }
            // `linkdown` follows carrier, which the kernel updates asynchronously (linkwatch).
            let line: Vec<&str> = line
                .split_whitespace()
                .filter(|w| *w != "linkdown")
                .collect();
            m.insert(format!("{tag} {}", line.join(" ")), "present".into());
        }
    }
    for line in sb.ip("neigh show proxy").lines() {
        m.insert(format!("proxy-neigh {}", line.trim()), "present".into());
    }
    sysctls(sb, &mut m);
    traffic(sb, &mut m);
    m
}

/// The OVSDB rows of every port on ovsbr0: VLAN columns, the interface's external-ids, and
/// whether ovs-vswitchd took it (an OpenFlow port number).
fn ovs_rows(ovs: &support::ovs::Ovs, m: &mut BTreeMap<String, String>) {
    let ports = ovs.ports("ovsbr0");
    m.insert("ovs ports ovsbr0".into(), ports.join(","));
    for p in &ports {
        for col in ["tag", "trunks", "vlan_mode"] {
            let v = ovs.get("port", p, col).unwrap_or_default();
            m.insert(format!("ovs port {p} {col}"), v);
        }
        let ids = ovs.get("interface", p, "external_ids").unwrap_or_default();
        m.insert(format!("ovs interface {p} external_ids"), ids);
        let ofport = ovs.get("interface", p, "ofport").unwrap_or_default();
        let taken = ofport.parse::<i64>().is_ok_and(|n| n > 0);
        m.insert(format!("ovs interface {p} ofport>0"), taken.to_string());
    }
}

fn links(sb: &Sandbox, m: &mut BTreeMap<String, String>) {
    let v: Value = serde_json::from_str(&sb.ip("-j -d link show")).unwrap();
    for l in v.as_array().unwrap() {
        let name = l["ifname"].as_str().unwrap();
        // The userspace datapath's own device: a random MAC, never touched by a script.
        if name == "ovs-netdev" {
            continue;
        }
        let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
        // Carrier follows the peer and the bridge's port states: the kernel's doing.
        let flags: Vec<String> = l["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .filter(|f| !["LOWER_UP", "NO-CARRIER", "M-DOWN"].contains(f))
            .map(String::from)
            .collect();
        let alt: Vec<String> = l["altnames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for (what, value) in [
            ("kind", s(&l["linkinfo"]["info_kind"])),
            ("master", s(&l["master"])),
            ("mtu", l["mtu"].to_string()),
            ("mac", s(&l["address"])),
            ("flags", flags.join(",")),
            (
                "altnames",
                if alt.is_empty() {
                    "-".into()
                } else {
                    alt.join(",")
                },
            ),
            ("promiscuity", l["promiscuity"].to_string()),
        ] {
            m.insert(format!("link {name} {what}"), value);
        }
    }
}

fn addresses(sb: &Sandbox, m: &mut BTreeMap<String, String>) {
    let v: Value = serde_json::from_str(&sb.ip("-j addr show")).unwrap();
    for l in v.as_array().unwrap() {
        let name = l["ifname"].as_str().unwrap();
        for a in l["addr_info"].as_array().unwrap() {
            let ip = a["local"].as_str().unwrap();
            if ip.starts_with("fe80") {
                continue;
            }
            let mut value = format!(
                "scope={} brd={}",
                a["scope"].as_str().unwrap_or("-"),
                a["broadcast"].as_str().unwrap_or("-")
            );
            if let Some(label) = a["label"].as_str().filter(|lb| *lb != name) {
                let _ = write!(value, " label={label}");
            }
            for flag in ["secondary", "tentative", "noprefixroute", "nodad"] {
                if a[flag].as_bool() == Some(true) {
                    let _ = write!(value, " {flag}");
                }
            }
            m.insert(format!("addr {name} {ip}/{}", a["prefixlen"]), value);
        }
    }
}

fn sysctls(sb: &Sandbox, m: &mut BTreeMap<String, String>) {
    // One process for all of them; /proc/sys/net is the reader's network namespace.
    let o = sb.sh(
        "cd /proc/sys/net && grep -H . ipv4/ip_forward ipv4/conf/*/proxy_arp \
         ipv4/conf/*/forwarding ipv6/conf/*/proxy_ndp ipv6/conf/*/forwarding \
         ipv6/conf/*/disable_ipv6 2>/dev/null",
    );
    for line in stdout(&o).lines() {
        if let Some((path, value)) = line.rsplit_once(':') {
            m.insert(format!("sysctl {path}"), value.to_string());
        }
    }
}

/// The xenstore requests of this call: a set of nodes looked at, and every change with the
/// values in order.
fn traffic(sb: &Sandbox, m: &mut BTreeMap<String, String>) {
    let mut changes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in sb.xs.traffic() {
        let key = format!("xs {} {}", r.op, r.path).trim_end().to_string();
        match r.value {
            Some(v) => changes.entry(key).or_default().push(v),
            None if is_change(&r.op) => changes.entry(key).or_default().push("-".into()),
            None => {
                m.insert(key, "yes".into());
            }
        }
    }
    for (k, v) in changes {
        m.insert(k, v.join(" ; "));
    }
}

fn is_change(op: &str) -> bool {
    matches!(
        op,
        "WRITE" | "MKDIR" | "RM" | "SET_PERMS" | "INTRODUCE" | "RELEASE"
    )
}

// ---------------------------------------------------------------------------------------------
// Comparing

#[derive(Debug)]
struct Difference {
    scenario: String,
    call: String,
    key: String,
    stock: String,
    xen_vif: String,
}

impl Difference {
    fn entry(&self) -> String {
        format!(
            "difference: {} / {} / {}\n  stock:   {}\n  xen-vif: {}\n",
            self.scenario, self.call, self.key, self.stock, self.xen_vif
        )
    }
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// A READ of a node by one side counts as done by the other if that one listed the node's
/// directory instead (it then knows which keys exist; an absent key is not read).
fn covered(key: &str, other: &BTreeMap<String, String>) -> bool {
    key.strip_prefix("xs READ ")
        .is_some_and(|p| other.contains_key(&format!("xs DIRECTORY {}", parent(p))))
}

fn shown(v: Option<&String>) -> String {
    match v.map(String::as_str) {
        None => ABSENT.into(),
        Some("") => EMPTY.into(),
        Some(v) => v.into(),
    }
}

fn differences(scenario: &str, a: &Observed, b: &Observed) -> Vec<Difference> {
    let mut out = Vec::new();
    for ((label, sa), (_, sb)) in a.iter().zip(b) {
        let keys: BTreeSet<&String> = sa.keys().chain(sb.keys()).collect();
        for k in keys {
            let (va, vb) = (sa.get(k), sb.get(k));
            if va == vb || (vb.is_none() && covered(k, sb)) || (va.is_none() && covered(k, sa)) {
                continue;
            }
            out.push(Difference {
                scenario: scenario.to_string(),
                call: label.to_string(),
                key: k.clone(),
                stock: shown(va),
                xen_vif: shown(vb),
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The list of known differences

#[derive(Debug)]
struct Known {
    line: usize,
    scenario: String,
    call: String,
    key: String,
    stock: String,
    xen_vif: String,
    why: String,
    seen: bool,
}

impl Known {
    fn matches(&self, d: &Difference) -> bool {
        glob(&self.scenario, &d.scenario)
            && glob(&self.call, &d.call)
            && self.key == d.key
            && self.stock == d.stock
            && self.xen_vif == d.xen_vif
    }
}

/// `*` matches anything, `route*` every name that starts with "route".
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The format (see the file's head): `difference: SCENARIO / CALL / KEY`, then `stock:` and
/// `xen-vif:` values; a `why:` (continued by indented lines) closes a group of differences.
fn parse_known(text: &str) -> Vec<Known> {
    let mut all = Vec::new();
    let mut group: Vec<Known> = Vec::new();
    let mut why: Option<String> = None;
    let close = |group: &mut Vec<Known>, why: &mut Option<String>, all: &mut Vec<Known>| {
        if let Some(w) = why.take() {
            for mut k in group.drain(..) {
                k.why = w.clone();
                all.push(k);
            }
        }
    };
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("difference:") {
            close(&mut group, &mut why, &mut all);
            let parts: Vec<&str> = rest.trim().splitn(3, " / ").collect();
            let [scenario, call, key] = parts[..] else {
                panic!("known-differences line {n}: want `difference: SCENARIO / CALL / KEY`");
            };
            group.push(Known {
                line: n,
                scenario: scenario.into(),
                call: call.into(),
                key: key.into(),
                stock: String::new(),
                xen_vif: String::new(),
                why: String::new(),
                seen: false,
            });
        } else if let Some(v) = line.trim_start().strip_prefix("stock:") {
            let k = group
                .last_mut()
                .unwrap_or_else(|| panic!("line {n}: stock: outside an entry"));
            k.stock = v.trim().into();
        } else if let Some(v) = line.trim_start().strip_prefix("xen-vif:") {
            let k = group
                .last_mut()
                .unwrap_or_else(|| panic!("line {n}: xen-vif: outside an entry"));
            k.xen_vif = v.trim().into();
        } else if let Some(w) = line.strip_prefix("why:") {
            assert!(
                !group.is_empty(),
                "known-differences line {n}: why: without differences"
            );
            why = Some(w.trim().into());
        } else if let (true, Some(w)) = (line.starts_with(' '), why.as_mut()) {
            w.push(' ');
            w.push_str(line.trim());
        } else {
            panic!("known-differences line {n}: cannot read {line:?}");
        }
    }
    close(&mut group, &mut why, &mut all);
    assert!(
        group.is_empty(),
        "known-differences: the last differences have no why:"
    );
    all
}

// ---------------------------------------------------------------------------------------------
// The test

/// The stock scripts' directory: what scripts/stock-scripts.sh prints (it honours
/// XEN_VIF_STOCK_SCRIPTS, else fetches Debian's package once into a cache), or None.
fn stock_dir() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/stock-scripts.sh");
    let out = Command::new(&script).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        eprintln!("{}: {}", script.display(), stderr(&out));
        return None;
    }
    Some(PathBuf::from(stdout(&out).trim()))
}

fn known_file() -> PathBuf {
    std::env::var_os("XEN_VIF_KNOWN_DIFFERENCES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/known-differences"))
}

fn prerequisites() -> Option<PathBuf> {
    let root = nix::unistd::geteuid().is_root();
    if !require(root, "root (network and mount namespaces)") {
        return None;
    }
    for tool in [
        "ip",
        "xenstore-read",
        "xenstore-write",
        "brctl",
        "ifconfig",
        "logger",
        "mount",
        "bash",
        "ovs-vsctl",
        "ovsdb-server",
        "ovs-vswitchd",
    ] {
        if !require(
            have_tool(tool),
            &format!("{tool} (scripts/deps.sh installs it)"),
        ) {
            return None;
        }
    }
    let stock = stock_dir().filter(|d| d.join("vif-bridge").is_file());
    if !require(
        stock
            .as_ref()
            .is_some_and(|d| d.join("vif-common.sh").is_file()),
        &format!(
            "the stock Xen scripts (scripts/stock-scripts.sh gave {:?})",
            stock
        ),
    ) {
        return None;
    }
    stock
}

#[test]
fn stock_scripts_and_xen_vif_differ_only_as_listed() {
    let Some(stock) = prerequisites() else {
        return;
    };
    eprintln!("stock scripts: {}", stock.display());
    let only = std::env::var("XEN_VIF_CONFORMANCE").unwrap_or_default();
    let file = known_file();
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
    let mut known = parse_known(&text);
    let mut unlisted = Vec::new();
    let mut ran = BTreeSet::new();
    for sc in scenarios().iter().filter(|s| s.name.contains(&only)) {
        ran.insert(sc.name);
        let (first, log1) = run_side(sc, &stock, Side::Stock, "s1");
        let (second, log2) = run_side(sc, &stock, Side::Stock, "s2");
        // The harness must see the stock script do the same thing twice; else a difference
        // below could be the harness's, not xen-vif's.
        let noise = differences(sc.name, &first, &second);
        assert!(
            noise.is_empty(),
            "{}: the stock scripts gave different results on twin fixtures (a harness bug):\n{}\n\
             xen-hotplug.log (1):\n{log1}\nxen-hotplug.log (2):\n{log2}",
            sc.name,
            noise.iter().map(Difference::entry).collect::<String>()
        );
        let (ours, _) = run_side(sc, &stock, Side::XenVif, "xv");
        let diffs = differences(sc.name, &first, &ours);
        eprintln!("{}: {} difference(s)", sc.name, diffs.len());
        for d in diffs {
            match known
                .iter_mut()
                .filter(|k| k.matches(&d))
                .collect::<Vec<_>>()
                .as_mut_slice()
            {
                [] => unlisted.push(d),
                found => found.iter_mut().for_each(|k| k.seen = true),
            }
        }
    }
    let stale: Vec<&Known> = known
        .iter()
        .filter(|k| !k.seen)
        .filter(|k| {
            // With a filter, only entries of the scenarios that ran can be judged.
            only.is_empty() || ran.contains(k.scenario.as_str())
        })
        .collect();
    let mut report = String::new();
    if !unlisted.is_empty() {
        let _ = writeln!(
            report,
            "{} difference(s) not in {} (add each with its reason, or fix xen-vif):\n",
            unlisted.len(),
            file.display()
        );
        for d in &unlisted {
            report.push_str(&d.entry());
        }
        report.push_str("why: ?\n\n");
    }
    if !stale.is_empty() {
        let _ = writeln!(
            report,
            "listed difference(s) that no longer occur (remove them):"
        );
        for k in &stale {
            let _ = writeln!(
                report,
                "  line {}: {} / {} / {} (stock {:?}, xen-vif {:?})",
                k.line, k.scenario, k.call, k.key, k.stock, k.xen_vif
            );
        }
    }
    assert!(report.is_empty(), "{report}");
}

#[test]
fn the_list_of_known_differences_reads() {
    let text = fs::read_to_string(known_file()).unwrap();
    let known = parse_known(&text);
    assert!(!known.is_empty());
    for k in &known {
        assert!(
            !k.why.is_empty() && k.why != "?",
            "line {}: give the reason",
            k.line
        );
        assert!(
            scenarios().iter().any(|s| glob(&k.scenario, s.name)),
            "line {}: no scenario {:?}",
            k.line,
            k.scenario
        );
    }
}
