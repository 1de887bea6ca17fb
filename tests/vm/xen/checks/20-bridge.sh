# Bridge mode through the real xl: xen-vif is /etc/xen/scripts/vif-bridge, libxl runs it.

net_before=$(net_snapshot)

check_begin bridge-create
domu bridge-a "'bridge=xenbr0,mac=00:16:3e:00:00:0a'" "xvt.ip=10.0.0.2/24 xvt.ping=10.0.0.1"
id=
if expect "xl create (vif bridge=xenbr0)" xl_create bridge-a; then
    id=$(domid_of bridge-a)
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" "vif$id.0"
    expect_eq "vif$id.0" "$(link_summary vif$id.0)" "kind=- master=xenbr0 up=true mtu=1500 addrs="
    expect_eq "vif$id.0's MAC" "$(cat /sys/class/net/vif$id.0/address)" fe:ff:ff:ff:ff:ff
    expect_eq "hotplug-status" "$(xs_read "$(backend_of "$id" 0)/hotplug-status")" connected
    expect_eq "the frontend's mtu" "$(xs_read /local/domain/$id/device/vif/0/mtu)" 1500
    wait_ping bridge-a eth0 10.0.0.1 90 || fail "the domU does not reach dom0 (10.0.0.1)"
    dom0_reaches 10.0.0.2 || fail "dom0 does not reach the domU (10.0.0.2)"
fi
check_end

check_begin bridge-destroy
if expect "xl destroy" xl_run destroy bridge-a; then
    domain_gone bridge-a || fail "bridge-a still exists"
    vif_gone "$id" 0 "vif$id.0"
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" ""
    expect_same "dom0's network after destroy vs before create" "$net_before" "$(net_snapshot)"
fi
check_end

check_begin bridge-shutdown
domu bridge-b "'bridge=xenbr0,mac=00:16:3e:00:00:0b'" "xvt.ip=10.0.0.2/24 xvt.ping=10.0.0.1"
if expect "xl create" xl_create bridge-b; then
    id=$(domid_of bridge-b)
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" "vif$id.0"
    # The guest must be far enough to act on the shutdown request.
    wait_console bridge-b "DOMU ready" 90 || fail "bridge-b did not come up"
    if expect "xl shutdown -w" xl_run shutdown -w bridge-b; then
        wait_for 300 domain_gone bridge-b || fail "bridge-b still exists after shutdown"
        vif_gone "$id" 0 "vif$id.0"
        expect_eq "xenbr0's ports" "$(ports_of xenbr0)" ""
        expect_same "dom0's network after shutdown vs before create" "$net_before" "$(net_snapshot)"
    fi
fi
check_end

test_bridge xenbr2 02:00:00:00:00:02 10.2.0.1/24
check_begin network-attach
domu attach-a "'bridge=xenbr0,mac=00:16:3e:00:00:0c'" \
    "xvt.ip=10.0.0.3/24 xvt.ping=10.0.0.1 xvt.ip1=10.2.0.3/24 xvt.ping1=10.2.0.1"
id=
if expect "xl create" xl_create attach-a; then
    id=$(domid_of attach-a)
    wait_ping attach-a eth0 10.0.0.1 90 || fail "attach-a does not reach dom0 on eth0"
    if expect "xl network-attach bridge=xenbr2" \
            xl_run network-attach attach-a bridge=xenbr2 mac=00:16:3e:00:02:03; then
        expect_eq "xenbr2's ports" "$(ports_of xenbr2)" "vif$id.1"
        expect_eq "vif$id.1" "$(link_summary vif$id.1)" "kind=- master=xenbr2 up=true mtu=1500 addrs="
        expect_eq "hotplug-status" "$(xs_read "$(backend_of "$id" 1)/hotplug-status")" connected
        wait_ping attach-a eth1 10.2.0.1 60 || fail "attach-a does not reach dom0 on its new eth1"
    fi
fi
check_end

check_begin network-detach
if expect "xl network-detach attach-a 1" xl_run network-detach attach-a 1; then
    vif_gone "$id" 1 "vif$id.1"
    expect_eq "xenbr2's ports" "$(ports_of xenbr2)" ""
    expect_eq "xenbr0's ports (eth0 stays)" "$(ports_of xenbr0)" "vif$id.0"
fi
expect "xl destroy" xl_run destroy attach-a
vif_gone "$id" 0 "vif$id.0"
check_end
ip link del xenbr2

