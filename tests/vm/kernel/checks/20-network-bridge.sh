# network-bridge on an 802.1q trunk (eth1.4 enslaved to br4, one bridge per VLAN) and
# its VLAN-aware variant (one bridge with VLAN filtering). eth1 is a veth whose other end is the
# trunk port of a "switch": there, VLAN 4 ends in namespace sw4 (10.50.0.1) and VLAN 100 in
# sw100 (10.50.0.2), the same subnet, so a guest on VLAN 4 reaching 10.50.0.1 and NOT 10.50.0.2
# proves its frames carry the right tag. Guests are veths attached by vif-bridge as libxl would.

# The switch and its two VLAN ends; eth1 up without addresses, as a distribution's VLAN trunk.
switch_setup() {
    setup ip netns add sw
    setup ip netns add sw4
    setup ip netns add sw100
    setup ip link add eth1 type veth peer name eth1 netns sw
    setup inns sw ip link set eth1 up
    for v in 4 100; do
        setup inns sw ip link add link eth1 name eth1.$v type vlan id $v
        setup inns sw ip link set eth1.$v netns sw$v
        setup inns sw$v ip link set eth1.$v up
        setup inns sw$v ip link set lo up
    done
    setup inns sw4 ip addr add 10.50.0.1/24 dev eth1.4
    setup inns sw100 ip addr add 10.50.0.2/24 dev eth1.100
    setup ip link set eth1 up
}

switch_teardown() {
    ip link del eth1 2>/dev/null
    for n in sw sw4 sw100; do ip netns del $n 2>/dev/null; done
}

# guest DOMID ADDR: netback's vif<DOMID>.0, its guest end eth0 in namespace g<DOMID>.
guest() {
    setup ip netns add "g$1"
    setup ip link add "vif$1.0" type veth peer name eth0 netns "g$1" address "$(guest_mac "$1" 0)"
    setup inns "g$1" ip addr add "$2/24" dev eth0
    setup inns "g$1" ip link set eth0 up
}

guest_remove() {
    ip link del "vif$1.0" 2>/dev/null
    ip netns del "g$1" 2>/dev/null
}

# Guest 4 reaches the switch's VLAN 4 end only, guest 100 its VLAN 100 end only.
vlan_pings() {
    reaches g4 10.50.0.1 || fail "guest on VLAN 4 does not reach 10.50.0.1 (VLAN 4)"
    reaches g100 10.50.0.2 || fail "guest on VLAN 100 does not reach 10.50.0.2 (VLAN 100)"
    pings g4 10.50.0.2 && fail "guest on VLAN 4 reaches 10.50.0.2 (VLAN 100)"
    pings g100 10.50.0.1 && fail "guest on VLAN 100 reaches 10.50.0.1 (VLAN 4)"
    :
}

# --- one bridge per VLAN ---------------------------------------------------------------------
check_begin network-bridge-trunk-start
switch_setup
before=$(net_snapshot)
if expect "network-bridge start trunk=eth1 vlans=4,100" \
        netscript network-bridge start trunk=eth1 vlans=4,100; then
    for v in 4 100; do
        expect_eq "br$v" "$(link_summary br$v)" \
            "kind=bridge vlan_filtering=0 master=- up=true mtu=1500 addrs="
        expect_eq "eth1.$v" "$(link_summary eth1.$v)" \
            "kind=vlan id=$v link=eth1 master=br$v up=true mtu=1500 addrs="
    done
    expect_eq "eth1's bridge (the trunk stays out)" "$(master_of eth1)" ""
    expect "network-bridge status" netscript network-bridge status trunk=eth1 vlans=4,100
fi
check_end

check_begin network-bridge-trunk-ping
guest 4 10.50.0.14
guest 100 10.50.0.15
xs_reset
xs_add 4 0 bridge=br4
xs_add 100 0 bridge=br100
xs_start
expect "vif-bridge online vif4.0 (bridge=br4)" hotplug vif-bridge online 4 0
expect "vif-bridge online vif100.0 (bridge=br100)" hotplug vif-bridge online 100 0
expect_eq "vif4.0's bridge" "$(master_of vif4.0)" br4
expect_eq "vif100.0's bridge" "$(master_of vif100.0)" br100
vlan_pings
expect "vif-bridge offline vif4.0" hotplug vif-bridge offline 4 0
expect "vif-bridge offline vif100.0" hotplug vif-bridge offline 100 0
xs_stop
guest_remove 4
guest_remove 100
check_end

check_begin network-bridge-trunk-stop
expect "network-bridge stop trunk=eth1 vlans=4,100" \
    netscript network-bridge stop trunk=eth1 vlans=4,100
expect_same "host network state after stop vs before start" "$before" "$(net_snapshot)"
check_end

# --- the VLAN-aware variant: one filtering bridge, the trunk a tagged port -------------------
check_begin network-bridge-vlan-aware-start
before=$(net_snapshot)
vbr=
if expect "network-bridge start trunk=eth1 vlans=4,100 vlan_filtering=yes" \
        netscript network-bridge start trunk=eth1 vlans=4,100 vlan_filtering=yes; then
    vbr=$(master_of eth1)
    note "the trunk's bridge: $vbr"
    if [ -z "$vbr" ]; then
        fail "eth1 is not a port of a bridge"
    else
        expect_eq "$vbr" "$(link_summary "$vbr")" \
            "kind=bridge vlan_filtering=1 master=- up=true mtu=1500 addrs="
        # The trunk carries 4 and 100 tagged (what it does with the default VLAN 1 is the
        # implementation's choice).
        trunk=" $(port_vlans eth1) "
        for v in 4 100; do
            expect_contains "eth1's VLAN table" "$trunk" " $v "
        done
        expect_eq "no per-VLAN devices" "$(ip -j -d link show | jq -r '[.[] | select(.linkinfo.info_kind == "vlan")] | length')" 0
    fi
fi
check_end

check_begin network-bridge-vlan-aware-ping
guest 4 10.50.0.14
guest 100 10.50.0.15
xs_reset
xs_add 4 0 "bridge=$vbr" vlan=4
xs_add 100 0 "bridge=$vbr" vlan=100
xs_start
expect "vif-bridge online vif4.0 (vlan=4)" hotplug vif-bridge online 4 0
expect "vif-bridge online vif100.0 (vlan=100)" hotplug vif-bridge online 100 0
expect_eq "vif4.0's VLAN table" "$(port_vlans vif4.0)" "4pu"
expect_eq "vif100.0's VLAN table" "$(port_vlans vif100.0)" "100pu"
vlan_pings
expect "vif-bridge offline vif4.0" hotplug vif-bridge offline 4 0
expect "vif-bridge offline vif100.0" hotplug vif-bridge offline 100 0
xs_stop
guest_remove 4
guest_remove 100
check_end

check_begin network-bridge-vlan-aware-stop
expect "network-bridge stop trunk=eth1 vlans=4,100 vlan_filtering=yes" \
    netscript network-bridge stop trunk=eth1 vlans=4,100 vlan_filtering=yes
expect_same "host network state after stop vs before start" "$before" "$(net_snapshot)"
check_end
switch_teardown
