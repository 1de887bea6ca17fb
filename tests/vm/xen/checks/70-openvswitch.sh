# vif-openvswitch through the real xl, on Open vSwitch's kernel datapath: xen-vif is
# /etc/xen/scripts/vif-openvswitch, libxl runs it for `script=vif-openvswitch`. dom0 reaches
# VLAN 10 through an internal port ovs10 (tag 10) of ovsbr0; the domU's port is `ovsbr0.10`.
# Open vSwitch is the test host's own (daemons, libraries and loader under /xvt/ovs, put there by
# scripts/test-xen.sh: dom0's cached image stays as it is), run from its default place.

O=/xvt/ovs
OVS=/var/run/openvswitch
ovs_run() {
    _p=$1
    shift
    "$O/lib/ld-linux-x86-64.so.2" --library-path "$O/lib" "$O/bin/$_p" "$@"
}
vsctl() { ovs_run ovs-vsctl --timeout=30 "$@"; }

ovs_start() {
    while read -r m; do insmod "$O/mod$m" 2>/dev/null; done < "$O/modules"
    [ -d /sys/module/openvswitch ] || { note "openvswitch.ko did not load"; return 1; }
    mkdir -p "$OVS"
    export OVS_RUNDIR=$OVS OVS_DBDIR=$OVS OVS_LOGDIR=$OVS OVS_SYSCONFDIR=$OVS OVS_PKGDATADIR=$O
    ovs_run ovsdb-tool create "$OVS/conf.db" "$O/vswitch.ovsschema" &&
        ovs_run ovsdb-server "$OVS/conf.db" --remote="punix:$OVS/db.sock" --pidfile --detach \
            --no-chdir --log-file &&
        vsctl --no-wait init &&
        ovs_run ovs-vswitchd --pidfile --detach --no-chdir --log-file
}

ovs_stop() {
    for d in ovs-vswitchd ovsdb-server; do
        [ -f "$OVS/$d.pid" ] && kill "$(cat "$OVS/$d.pid")" 2>/dev/null
    done
}

check_begin ovs-create
id=
if expect "Open vSwitch starts" ovs_start &&
    expect "ovsbr0 with dom0's port on VLAN 10" vsctl add-br ovsbr0 \
        -- add-port ovsbr0 ovs10 tag=10 -- set interface ovs10 type=internal; then
    setup ip link set ovsbr0 up
    setup ip addr add 10.21.0.1/24 dev ovs10
    setup ip link set ovs10 up
    domu ovs-a "'bridge=ovsbr0.10,script=vif-openvswitch,mac=00:16:3e:00:21:02'" \
        "xvt.ip=10.21.0.2/24 xvt.ping=10.21.0.1"
    if expect "xl create (vif bridge=ovsbr0.10, script=vif-openvswitch)" xl_create ovs-a; then
        id=$(domid_of ovs-a)
        expect_eq "ovsbr0's ports" "$(vsctl list-ports ovsbr0 | tr '\n' ' ')" "ovs10 vif$id.0 "
        expect_eq "vif$id.0's tag" "$(vsctl get port vif$id.0 tag)" 10
        expect_eq "vif$id.0's xen-vm-name (libxl's /vm/UUID/name)" \
            "$(vsctl get interface vif$id.0 external-ids:xen-vm-name | tr -d '"')" ovs-a
        expect_eq "vif$id.0's attached-mac" \
            "$(vsctl get interface vif$id.0 external-ids:attached-mac | tr -d '"')" 00:16:3e:00:21:02
        expect_eq "vif$id.0's master (the kernel datapath)" "$(master_of vif$id.0)" ovs-system
        expect_eq "hotplug-status" "$(xs_read "$(backend_of "$id" 0)/hotplug-status")" connected
        if ! wait_ping ovs-a eth0 10.21.0.1 90; then
            fail "the domU does not reach dom0 on VLAN 10 (10.21.0.1)"
            note "$(vsctl show)"
        fi
        dom0_reaches 10.21.0.2 || fail "dom0 does not reach the domU (10.21.0.2)"
    fi
fi
check_end

check_begin ovs-destroy
if [ -n "$id" ] && expect "xl destroy" xl_run destroy ovs-a; then
    domain_gone ovs-a || fail "ovs-a still exists"
    vif_gone "$id" 0 "vif$id.0"
    expect_eq "ovsbr0's ports" "$(vsctl list-ports ovsbr0 | tr '\n' ' ')" "ovs10 "
fi
[ -n "$id" ] || fail "no domain to destroy (ovs-create failed)"
vsctl del-br ovsbr0
ovs_stop
check_end
