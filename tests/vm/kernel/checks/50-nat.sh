# NAT mode (xend's network-nat + vif-nat): network-nat masquerades 10/8 out of up0, a veth whose
# far end is the "outside" network (namespace outside, 192.168.60.2). A guest (veth vif9.0, its
# end in namespace ng) configured by vif-nat with the address derived from its domid
# (10.0.9.1, router 10.0.9.128) reaches the outside, which sees only dom0's 192.168.60.1: it
# has no route back to 10/8 and counts echo requests by source in its own nf_tables table.

nat_outside up0 192.168.60
nat_before=$(net_snapshot)
sysctl_before=$(nat_sysctls)

check_begin network-nat-start
if expect "network-nat start netdev=up0" netscript network-nat start netdev=up0; then
    expect_eq "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)" 1
    expect_contains "the masquerading chain" "$(nft list table ip xen-vif-nat 2>&1)" \
        'ip saddr 10.0.0.0/8 oifname "up0" masquerade'
    expect "network-nat start again (nothing to do)" netscript network-nat start netdev=up0
fi
check_end

check_begin vif-nat-online
setup ip netns add ng
setup ip link add vif9.0 type veth peer name eth0 netns ng address "$(guest_mac 9 0)"
setup inns ng ip link set lo up
setup inns ng ip addr add 10.0.9.1/24 dev eth0
setup inns ng ip link set eth0 up
setup inns ng ip route add default via 10.0.9.128
xs_reset
xs_add 9 0 script=/etc/xen/scripts/vif-nat
xs_start
if expect "vif-nat online (domain 9, no ip)" hotplug vif-nat online 9 0; then
    expect_eq "vif9.0" "$(link_summary vif9.0)" "kind=veth master=- up=true mtu=1500 addrs=10.0.9.128/32"
    expect_eq "the route to the guest" \
        "$(ip -j route show 10.0.9.1 | jq -r '.[] | "\(.dst) dev \(.dev) scope \(.scope) src \(.prefsrc)"')" \
        "10.0.9.1 dev vif9.0 scope link src 10.0.9.128"
    expect_eq "proxy_arp on vif9.0" "$(cat /proc/sys/net/ipv4/conf/vif9.0/proxy_arp)" 1
    expect_eq "hotplug-status" "$(xs_written 9 0 hotplug-status)" connected
    expect_contains "nf_tables tables (vif9.0's filter)" "$(nft list tables)" "xen-vif-vif9.0"
    expect "vif-nat online again (nothing to do)" hotplug vif-nat online 9 0
    reaches ng 10.0.9.128 || fail "the guest does not reach its router 10.0.9.128"
    if reaches ng 192.168.60.2; then
        # conntrack's reply direction: the outside answered dom0's uplink address.
        expect_contains "dom0's conntrack entry for the guest's ping" \
            "$(grep 'src=10.0.9.1 dst=192.168.60.2' /proc/net/nf_conntrack 2>&1)" \
            "src=192.168.60.2 dst=192.168.60.1"
    else
        fail "the guest does not reach the outside (192.168.60.2) through dom0"
    fi
    [ "$(counted 192.168.60.1)" -gt 0 ] 2>/dev/null ||
        fail "the outside saw no echo request from dom0's address: $(counted 192.168.60.1)"
    expect_eq "echo requests the outside saw from 10/8" "$(counted 10.0.0.0/8)" 0
fi
check_end

check_begin vif-nat-offline
if expect "vif-nat offline" hotplug vif-nat offline 9 0; then
    expect_eq "vif9.0 after offline" "$(link_summary vif9.0)" "kind=veth master=- up=false mtu=1500 addrs="
    expect_eq "routes to the guest" "$(ip route show 10.0.9.1)" ""
    expect_eq "proxy_arp on vif9.0" "$(cat /proc/sys/net/ipv4/conf/vif9.0/proxy_arp)" 0
    # The guest's masqueraded connections are forgotten (ctnetlink), not left to time out.
    expect_eq "conntrack entries of the guest" "$(grep 'src=10.0.9.1 ' /proc/net/nf_conntrack)" ""
    expect_eq "vif9.0's nf_tables table" "$(nft list tables | grep xen-vif-vif9.0)" ""
    reaches ng 192.168.60.2 && fail "the guest still reaches the outside after offline"
fi
xs_stop
ip link del vif9.0
ip netns del ng
check_end

check_begin network-nat-stop
expect "network-nat stop netdev=up0" netscript network-nat stop netdev=up0
expect_eq "nf_tables tables of xen-vif" "$(nft list tables | grep xen-vif)" ""
expect_same "sysctls after stop vs before start" "$sysctl_before" "$(nat_sysctls)"
expect_same "host network state after stop vs before start" "$nat_before" "$(net_snapshot)"
check_end
ip link del up0
ip netns del outside
