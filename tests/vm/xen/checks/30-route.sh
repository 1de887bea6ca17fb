# Route mode through the real xl: network-route builds dummy0 holding the routed subnet's
# gateway; two domUs with `script=vif-route,gatewaydev=dummy0` reach the gateway and each other
# through dom0 (proxy ARP and host routes set by xen-vif as vif-route).

route_sysctls() {
    for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/proxy_arp \
        /proc/sys/net/ipv4/conf/default/proxy_arp; do
        echo "$f=$(cat $f)"
    done
}
route_before=$(net_snapshot)
sysctl_before=$(route_sysctls)

check_begin route-network-start
if expect "network-route start netdev=dummy0 gateway=10.9.0.1/29" \
        /etc/xen/scripts/network-route start netdev=dummy0 gateway=10.9.0.1/29; then
    expect_eq "dummy0" "$(link_summary dummy0)" "kind=dummy master=- up=true mtu=1500 addrs=10.9.0.1/29"
    expect_eq "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)" 1
fi
check_end

check_begin route-guests
domu route-a "'ip=10.9.0.2,script=vif-route,gatewaydev=dummy0,mac=00:16:3e:00:09:02'" \
    "xvt.ip=10.9.0.2/29 xvt.gw=10.9.0.1 xvt.ping=10.9.0.1"
domu route-b "'ip=10.9.0.3,script=vif-route,gatewaydev=dummy0,mac=00:16:3e:00:09:03'" \
    "xvt.ip=10.9.0.3/29 xvt.gw=10.9.0.1 xvt.ping=10.9.0.1,10.9.0.2"
ida= idb=
if expect "xl create route-a (ip=10.9.0.2, script=vif-route)" xl_create route-a; then
    ida=$(domid_of route-a)
    expect_eq "vif$ida.0" "$(link_summary vif$ida.0)" "kind=- master=- up=true mtu=1500 addrs=10.9.0.1/32"
    # (linkdown until the frontend connects: carrier, not configuration)
    expect_eq "the route to route-a" \
        "$(ip -j route show 10.9.0.2 | jq -r '.[] | "\(.dst) dev \(.dev) src \(.prefsrc) metric \(.metric)"')" \
        "10.9.0.2 dev vif$ida.0 src 10.9.0.1 metric 2"
    expect_eq "hotplug-status" "$(xs_read "$(backend_of "$ida" 0)/hotplug-status")" connected
    wait_ping route-a eth0 10.9.0.1 90 || fail "route-a does not reach its gateway"
fi
if expect "xl create route-b (ip=10.9.0.3, script=vif-route)" xl_create route-b; then
    idb=$(domid_of route-b)
    wait_ping route-b eth0 10.9.0.1 90 || fail "route-b does not reach its gateway"
    wait_ping route-b eth0 10.9.0.2 60 ||
        fail "route-b does not reach route-a (10.9.0.2) through dom0"
fi
check_end

check_begin route-stop
for n in route-a route-b; do
    domid_of $n >/dev/null && expect "xl destroy $n" xl_run destroy $n
done
expect_eq "routes to the guests" "$(ip route show 10.9.0.2; ip route show 10.9.0.3)" ""
expect "network-route stop" /etc/xen/scripts/network-route stop netdev=dummy0 gateway=10.9.0.1/29
expect_eq "dummy0 after stop" "$(link_summary dummy0)" absent
expect_same "sysctls after stop vs before start" "$sysctl_before" "$(route_sysctls)"
expect_same "dom0's network after stop vs before start" "$route_before" "$(net_snapshot)"
check_end
