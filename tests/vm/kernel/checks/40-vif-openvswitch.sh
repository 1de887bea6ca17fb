# vif-openvswitch on Open vSwitch's kernel datapath (Debian's openvswitch module): three guests'
# vifs, vif5.0 and vif6.0 on VLAN 10 and vif7.0 on VLAN 20, each a veth whose other end is the
# guest's eth0 in namespace g<DOMID>. Open vSwitch runs from its default place
# (/var/run/openvswitch), where xen-vif finds the database unasked.

OVS=/var/run/openvswitch

ovs_start() {
    mkdir -p "$OVS"
    export OVS_RUNDIR=$OVS OVS_DBDIR=$OVS OVS_LOGDIR=$OVS OVS_SYSCONFDIR=$OVS
    export OVS_PKGDATADIR=/usr/share/openvswitch
    ovsdb-tool create "$OVS/conf.db" /usr/share/openvswitch/vswitch.ovsschema &&
        ovsdb-server "$OVS/conf.db" --remote="punix:$OVS/db.sock" --pidfile --detach \
            --no-chdir --log-file &&
        ovs-vsctl --no-wait init &&
        ovs-vswitchd --pidfile --detach --no-chdir --log-file
}

ovs_stop() {
    for d in ovs-vswitchd ovsdb-server; do
        [ -f "$OVS/$d.pid" ] && kill "$(cat "$OVS/$d.pid")" 2>/dev/null
    done
}

ovs_guest() { # DOMID ADDR
    setup ip netns add "g$1"
    setup ip link add "vif$1.0" type veth peer name eth0 netns "g$1" address "$(guest_mac "$1" 0)"
    setup inns "g$1" ip link set lo up
    setup inns "g$1" ip addr add "$2/24" dev eth0
    setup inns "g$1" ip link set eth0 up
}

check_begin vif-openvswitch-start
expect "ovsdb-server and ovs-vswitchd start" ovs_start
expect "ovs-vsctl add-br ovsbr0 (kernel datapath)" ovs-vsctl --timeout=20 add-br ovsbr0
setup ip link set ovsbr0 up
ovs_guest 5 10.9.0.5
ovs_guest 6 10.9.0.6
ovs_guest 7 10.9.0.7
xs_reset
xs_add 5 0 script=/etc/xen/scripts/vif-openvswitch bridge=ovsbr0.10:20:30
xs_add 6 0 script=/etc/xen/scripts/vif-openvswitch bridge=ovsbr0.10
xs_add 7 0 script=/etc/xen/scripts/vif-openvswitch bridge=ovsbr0.20
xs_start
check_end

check_begin vif-openvswitch-online
for d in 5 6 7; do
    expect "vif-openvswitch online for vif$d.0" hotplug vif-openvswitch online $d 0
    expect_eq "vif$d.0's hotplug-status" "$(xs_written $d 0 hotplug-status)" connected
done
expect_eq "vif5.0's tag" "$(ovs-vsctl get port vif5.0 tag)" 10
expect_eq "vif5.0's trunks" "$(ovs-vsctl get port vif5.0 trunks)" "[20, 30]"
expect_eq "vif7.0's tag" "$(ovs-vsctl get port vif7.0 tag)" 20
expect_eq "vif5.0's attached-mac" "$(ovs-vsctl get interface vif5.0 external-ids:attached-mac)" '"00:16:3e:00:05:00"'
# The kernel datapath took the port: its master is ovs-system, and it has an OpenFlow number.
expect_eq "vif5.0's master (the kernel datapath)" "$(master_of vif5.0)" ovs-system
expect_eq "vif5.0 is up" "$(cat /sys/class/net/vif5.0/operstate)" up
ofport=$(ovs-vsctl get interface vif5.0 ofport)
[ "${ofport:-0}" -gt 0 ] 2>/dev/null || fail "vif5.0's ofport is '$ofport'"
expect "online again" hotplug vif-openvswitch online 5 0
expect_eq "ports after online again" "$(ovs-vsctl list-ports ovsbr0 | tr '\n' ' ')" "vif5.0 vif6.0 vif7.0 "
check_end

check_begin vif-openvswitch-ping
expect "a guest on VLAN 10 reaches the other one on VLAN 10" reaches g5 10.9.0.6
expect_fail "a guest on VLAN 10 reaches the guest on VLAN 20" reaches g5 10.9.0.7
expect_fail "the guest on VLAN 20 reaches one on VLAN 10" reaches g7 10.9.0.6
check_end

check_begin vif-openvswitch-offline
for d in 5 6 7; do
    expect "vif-openvswitch offline for vif$d.0" hotplug vif-openvswitch offline $d 0
done
expect_eq "ports after offline" "$(ovs-vsctl list-ports ovsbr0)" ""
expect_eq "vif5.0's master after offline" "$(master_of vif5.0)" ""
# Offline takes the link down before it removes the port: ovs-vswitchd letting the port go
# must not bring it up again.
sleep 1
expect_eq "vif5.0 is down after offline" "$(ip -o link show dev vif5.0 | grep -c '[<,]UP[,>]')" 0
expect "offline again" hotplug vif-openvswitch offline 5 0
xs_stop
ovs_stop
for d in 5 6 7; do
    ip link del "vif$d.0" 2>/dev/null
    ip netns del "g$d" 2>/dev/null
done
check_end
