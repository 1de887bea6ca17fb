# The `vlan` key on a VLAN-filtering bridge through xl. libxl 4.17 does not write `vlan` (4.19
# does): the TEST-ONLY wrapper /etc/xen/scripts/vif-vlan writes it into the backend, then runs
# xen-vif as vif-bridge. dom0 reaches VLAN 10 through xenbr1.10.

test_bridge xenbr1 02:00:00:00:00:03 - vlan_filtering 1
setup bridge vlan add dev xenbr1 vid 10 self
setup ip link add link xenbr1 name xenbr1.10 type vlan id 10
setup ip addr add 10.10.0.1/24 dev xenbr1.10
setup ip link set xenbr1.10 up

check_begin vlan-port
echo 10 > /run/xvt/vlan
domu vlan-a "'bridge=xenbr1,script=vif-vlan,mac=00:16:3e:00:10:02'" "xvt.ip=10.10.0.2/24 xvt.ping=10.10.0.1"
if expect "xl create (bridge=xenbr1, vlan=10 via the wrapper)" xl_create vlan-a; then
    id=$(domid_of vlan-a)
    expect_eq "the backend's vlan key" "$(xs_read "$(backend_of "$id" 0)/vlan")" 10
    expect_eq "vif$id.0's VLAN table" "$(port_vlans vif$id.0)" 10pu
    expect_eq "hotplug-status" "$(xs_read "$(backend_of "$id" 0)/hotplug-status")" connected
    if ! wait_ping vlan-a eth0 10.10.0.1 90; then
        fail "vlan-a does not reach dom0 on VLAN 10"
        note "$(bridge -d vlan show; ip -d link show xenbr1.10; ip -s link show vif$id.0)"
    fi
    expect "xl destroy" xl_run destroy vlan-a
    expect_eq "xenbr1's ports" "$(ports_of xenbr1)" ""
fi
check_end
ip link del xenbr1.10
ip link del xenbr1
