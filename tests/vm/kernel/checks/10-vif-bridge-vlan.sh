# vif-bridge with the backend's `vlan` key on a VLAN-filtering bridge: the port's exact VLAN
# table (PVID, untagged, tagged; the bridge's default VLAN 1 gone), and offline takes the port
# off the bridge, VLANs with it.

vlan_case() {
    check_begin "$1"
    spec=$2 want=$3
    setup ip link add br0 type bridge vlan_filtering 1
    setup ip link set br0 up
    # netback's vif5.0: exists, down, when libxl runs online.
    setup ip link add vif5.0 type veth peer name dom5eth0
    xs_one bridge=br0 "vlan=$spec"
    if expect "vif-bridge online with vlan=$spec" hotplug vif-bridge online 5 0; then
        expect_eq "vif5.0's bridge" "$(master_of vif5.0)" br0
        expect_eq "vif5.0's VLAN table (vlan=$spec)" "$(port_vlans vif5.0)" "$want"
        expect_eq "hotplug-status" "$(xs_written 5 0 hotplug-status)" connected
    fi
    expect "vif-bridge offline" hotplug vif-bridge offline 5 0
    expect_eq "vif5.0's bridge after offline" "$(master_of vif5.0)" ""
    expect_eq "vif5.0's VLANs after offline" "$(port_vlans vif5.0)" ""
    setup ip link del vif5.0
    setup ip link del br0
    xs_stop
    check_end
}

vlan_case vif-bridge-vlan-10 10 "10pu"
vlan_case vif-bridge-vlan-10p-20 10p/20 "10pu 20"
vlan_case vif-bridge-vlan-10p-100-10x4 10p/100+10x4 "10pu 100 110 120 130 140"
vlan_case vif-bridge-vlan-5u-7-9 5u/7-9 "5pu 7 8 9"

check_begin vif-bridge-vlan-nonfiltering
setup ip link add br0 type bridge
setup ip link set br0 up
setup ip link add vif5.0 type veth peer name dom5eth0
xs_one bridge=br0 vlan=10
expect_fail "vif-bridge online with vlan=10 on a non-filtering bridge" hotplug vif-bridge online 5 0
expect_contains "online's output" "$HP_OUT" "does not filter VLANs"
expect_contains "hotplug-error" "$(xs_written 5 0 hotplug-error)" "does not filter VLANs"
expect_eq "hotplug-status" "$(xs_written 5 0 hotplug-status)" error
expect_eq "vif5.0's bridge (nothing changed)" "$(master_of vif5.0)" ""
expect "offline after the failed online" hotplug vif-bridge offline 5 0
setup ip link del vif5.0
setup ip link del br0
xs_stop
check_end
