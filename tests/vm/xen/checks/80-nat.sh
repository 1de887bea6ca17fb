# NAT mode through the real xl: network-nat masquerades the guests out of dom0's uplink0, a veth
# whose far end is the "outside" network (namespace outside, 192.168.50.2: the LAN or the
# internet). A domU with `script=vif-nat,ip=10.50.0.2` reaches the outside through dom0, and
# the outside sees dom0's address (192.168.50.1) as the source: it has no route back to 10/8
# and counts the echo requests by source in its own nf_tables table.

nat_outside uplink0 192.168.50
nat_before=$(net_snapshot)
sysctl_before=$(nat_sysctls)

check_begin nat-start
if expect "network-nat start netdev=uplink0" /etc/xen/scripts/network-nat start netdev=uplink0; then
    expect_eq "ip_forward" "$(cat /proc/sys/net/ipv4/ip_forward)" 1
    expect_contains "the masquerading chain" "$(nft list table ip xen-vif-nat 2>&1)" \
        'ip saddr 10.0.0.0/8 oifname "uplink0" masquerade'
fi
check_end

check_begin nat-create
domu nat-a "'script=vif-nat,ip=10.50.0.2,mac=00:16:3e:00:50:02'" \
    "xvt.ip=10.50.0.2/24 xvt.gw=10.50.0.129 xvt.ping=10.50.0.129,192.168.50.2"
id=
if expect "xl create (script=vif-nat, ip=10.50.0.2)" xl_create nat-a; then
    id=$(domid_of nat-a)
    # The router address: the guest's with 127 added to the last octet.
    expect_eq "vif$id.0" "$(link_summary vif$id.0)" "kind=- master=- up=true mtu=1500 addrs=10.50.0.129/32"
    expect_eq "the route to nat-a" \
        "$(ip -j route show 10.50.0.2 | jq -r '.[] | "\(.dst) dev \(.dev) scope \(.scope) src \(.prefsrc)"')" \
        "10.50.0.2 dev vif$id.0 scope link src 10.50.0.129"
    expect_eq "proxy_arp on vif$id.0" "$(cat /proc/sys/net/ipv4/conf/vif$id.0/proxy_arp)" 1
    expect_eq "hotplug-status" "$(xs_read "$(backend_of "$id" 0)/hotplug-status")" connected
    wait_ping nat-a eth0 10.50.0.129 90 || fail "nat-a does not reach its router 10.50.0.129"
    if wait_ping nat-a eth0 192.168.50.2 60; then
        # conntrack's reply direction: the outside answered dom0's uplink address.
        expect_contains "dom0's conntrack entry for the guest's ping" \
            "$(grep 'src=10.50.0.2 dst=192.168.50.2' /proc/net/nf_conntrack 2>&1)" \
            "src=192.168.50.2 dst=192.168.50.1"
    else
        fail "nat-a does not reach the outside (192.168.50.2) through dom0"
    fi
    [ "$(counted 192.168.50.1)" -gt 0 ] 2>/dev/null ||
        fail "the outside saw no echo request from dom0's address: $(counted 192.168.50.1)"
    expect_eq "echo requests the outside saw from 10/8" "$(counted 10.0.0.0/8)" 0
    dom0_reaches 10.50.0.2 || fail "dom0 does not reach the domU (10.50.0.2)"
fi
check_end

check_begin nat-destroy
if [ -n "$id" ] && expect "xl destroy" xl_run destroy nat-a; then
    domain_gone nat-a || fail "nat-a still exists"
    vif_gone "$id" 0 "vif$id.0"
    expect_eq "routes to the guest" "$(ip route show 10.50.0.2)" ""
    expect_eq "neighbours of the guest" "$(ip neigh show 10.50.0.2; ip neigh show proxy)" ""
    # The guest's masqueraded connections are forgotten (ctnetlink), not left to time out.
    expect_eq "conntrack entries of the guest" "$(grep 'src=10.50.0.2 ' /proc/net/nf_conntrack)" ""
    expect_eq "vif$id.0's nf_tables table" "$(nft list tables | grep "xen-vif-vif$id.0")" ""
    expect_same "dom0's network after destroy vs before create" "$nat_before" "$(net_snapshot)"
fi
[ -n "$id" ] || fail "no domain to destroy (nat-create failed)"
check_end

check_begin nat-stop
expect "network-nat stop netdev=uplink0" /etc/xen/scripts/network-nat stop netdev=uplink0
expect_eq "nf_tables tables of xen-vif" "$(nft list tables | grep xen-vif)" ""
expect_same "sysctls after stop vs before start" "$sysctl_before" "$(nat_sysctls)"
expect_same "dom0's network after stop vs before start" "$nat_before" "$(net_snapshot)"
check_end
ip link del uplink0
ip netns del outside
