# network-route with a dummy gateway interface (the Debian-Administration routed set-up): dummy0 holds
# the routed subnet's gateway address; a guest (veth, its end in namespace rg) configured by
# vif-route reaches a "world" namespace through dom0; stop removes dummy0 and restores sysctls.

route_sysctls() {
    for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/proxy_arp \
        /proc/sys/net/ipv4/conf/default/proxy_arp /proc/sys/net/ipv6/conf/all/forwarding \
        /proc/sys/net/ipv6/conf/default/forwarding; do
        echo "$f=$(cat $f)"
    done
}

# The world: 10.99.0.2 behind dom0's w0 (10.99.0.1), routing the guests' subnet back via dom0.
setup ip netns add world
setup ip link add w0 type veth peer name eth0 netns world
setup ip addr add 10.99.0.1/24 dev w0
setup ip link set w0 up
setup inns world ip link set lo up
setup inns world ip addr add 10.99.0.2/24 dev eth0
setup inns world ip link set eth0 up
setup inns world ip route add 10.9.0.0/29 via 10.99.0.1
route_before=$(net_snapshot)
sysctl_before=$(route_sysctls)

check_begin network-route-start
if expect "network-route start netdev=dummy0 gateway=10.9.0.1/29" \
        netscript network-route start netdev=dummy0 gateway=10.9.0.1/29; then
    expect_eq "dummy0" "$(link_summary dummy0)" \
        "kind=dummy master=- up=true mtu=1500 addrs=10.9.0.1/29"
    expect_eq "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)" 1
fi
check_end

check_begin network-route-guest
setup ip netns add rg
setup ip link add vif7.0 type veth peer name eth0 netns rg address "$(guest_mac 7 0)"
setup inns rg ip link set lo up
setup inns rg ip addr add 10.9.0.2/29 dev eth0
setup inns rg ip link set eth0 up
setup inns rg ip route add default via 10.9.0.1
xs_reset
xs_add 7 0 script=/etc/xen/scripts/vif-route ip=10.9.0.2 gatewaydev=dummy0
xs_start
# libxl passes the backend's gatewaydev as netdev.
if expect "vif-route online (ip=10.9.0.2 gatewaydev=dummy0)" hotplug vif-route online 7 0 dummy0; then
    expect_eq "vif7.0" "$(link_summary vif7.0)" \
        "kind=veth master=- up=true mtu=1500 addrs=10.9.0.1/32"
    expect_eq "the guest's route" "$(ip -j route show 10.9.0.2 | jq -r '.[0].dev')" vif7.0
    expect_eq "proxy_arp on vif7.0" "$(cat /proc/sys/net/ipv4/conf/vif7.0/proxy_arp)" 1
    expect_eq "hotplug-status" "$(xs_written 7 0 hotplug-status)" connected
    reaches rg 10.9.0.1 || fail "the guest does not reach its gateway 10.9.0.1"
    reaches rg 10.99.0.2 || fail "the guest does not reach the world (10.99.0.2) through dom0"
    reaches world 10.9.0.2 || fail "the world does not reach the guest (10.9.0.2)"
fi
expect "vif-route offline" hotplug vif-route offline 7 0 dummy0
expect_eq "the guest's route after offline" "$(ip -j route show 10.9.0.2 | jq -r '.[0].dev // ""')" ""
xs_stop
ip link del vif7.0
ip netns del rg
check_end

check_begin network-route-stop
expect "network-route stop netdev=dummy0 gateway=10.9.0.1/29" \
    netscript network-route stop netdev=dummy0 gateway=10.9.0.1/29
expect_eq "dummy0 after stop" "$(link_summary dummy0)" absent
expect_same "sysctls after stop vs before start" "$sysctl_before" "$(route_sysctls)"
expect_same "host network state after stop vs before start" "$route_before" "$(net_snapshot)"
check_end
ip link del w0
ip netns del world
