# Guest-side helpers for the VM tiers (POSIX sh: busybox ash in the kernel VM, dash in dom0).
# A check prints exactly one line on the console: `CHECK ok NAME` or `CHECK FAIL NAME: why`
# (the first thing that went wrong); details go to the console as `  | ...` lines. The host
# reads these lines (scripts/vm-lib.sh, vm_verdict) and fails on any failed or missing check.

CHECK_NAME=
CHECK_ERR=

# Debian's busybox-static runs its own applets before anything in PATH: the full iproute2 is
# needed (JSON output, VLAN and bridge details), so name it by path.
ip() { /usr/sbin/ip "$@"; }
bridge() { /usr/sbin/bridge "$@"; }

note() { echo "  | $*"; }

check_begin() {
    CHECK_NAME=$1
    CHECK_ERR=
    echo "== $CHECK_NAME (at $(cut -d' ' -f1 /proc/uptime) s)"
}

# Record a failure of the current check (the first one is the reason shown).
fail() {
    note "FAIL: $*"
    [ -n "$CHECK_ERR" ] || CHECK_ERR=$*
}

check_end() {
    if [ -z "$CHECK_ERR" ]; then
        echo "CHECK ok $CHECK_NAME"
    else
        # One line, whatever the reason holds.
        echo "CHECK FAIL $CHECK_NAME: $(echo "$CHECK_ERR" | tr '\n' ' ')"
    fi
}

# expect DESC CMD...: CMD must succeed. It runs in this shell (a function may set variables);
# its output goes to the console.
expect() {
    _desc=$1
    shift
    "$@" && return 0
    fail "$_desc ($*)"
    return 1
}

# expect_fail DESC CMD...: CMD must fail.
expect_fail() {
    _desc=$1
    shift
    "$@" || return 0
    fail "$_desc (succeeded: $*)"
    return 1
}

expect_eq() {
    if [ "$2" != "$3" ]; then
        fail "$1: got '$2', want '$3'"
        return 1
    fi
    return 0
}

# expect_contains DESC HAYSTACK NEEDLE
expect_contains() {
    case "$2" in
        *"$3"*) return 0 ;;
    esac
    note "$2"
    fail "$1: no '$3' in the output"
    return 1
}

# The port VLAN table of a link, normalised: `VID` + `p` for the PVID + `u` for egress
# untagged, sorted by VID, e.g. `10pu 100 110`; empty when the link has no VLANs.
port_vlans() {
    bridge -j vlan show dev "$1" | jq -r '
        [.[]? | .vlans[]? | "\(.vlan)"
            + (if ((.flags // []) | index("PVID")) then "p" else "" end)
            + (if ((.flags // []) | index("Egress Untagged")) then "u" else "" end)]
        | join(" ")'
}

# The bridge a link is a port of ("" when none). sysfs, not jq: jq 1.6 takes ~0.2 s to start
# under TCG.
master_of() {
    [ -e "/sys/class/net/$1/master" ] || return 0
    basename "$(readlink "/sys/class/net/$1/master")"
}

# One line with what a check asserts about a link, for exact comparison, e.g.
# `kind=vlan id=4 link=eth1 master=br4 up=true mtu=1500 addrs=` (addrs: non-link-local ones);
# `absent` when there is no such link.
link_summary() {
    link_exists "$1" || { echo absent; return 0; }
    { ip -j -d link show dev "$1"; ip -j addr show dev "$1"; } | jq -rs '
        .[0][0] as $l | (.[1][0].addr_info // []) as $a | ($l.linkinfo.info_kind // "-") as $k
        | "kind=\($k)"
        + (if $k == "vlan" then " id=\($l.linkinfo.info_data.id) link=\($l.link)" else "" end)
        + (if $k == "bridge" then " vlan_filtering=\($l.linkinfo.info_data.vlan_filtering)" else "" end)
        + " master=\($l.master // "-") up=\($l.flags | index("UP") != null) mtu=\($l.mtu)"
        + " addrs=\([$a[] | select(.scope != "link") | "\(.local)/\(.prefixlen)"] | join(","))"'
}

# inns NS CMD...: run in a network namespace.
inns() {
    _ns=$1
    shift
    ip netns exec "$_ns" "$@"
}

# pings NS ADDR: one ping from a namespace is answered (within 1 s; a reply takes ms here).
pings() { inns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1; }

# reaches NS ADDR: a ping is answered within 5 tries (the first packets wait for neighbours).
reaches() {
    for _try in 1 2 3 4 5; do
        inns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
    done
    return 1
}

link_exists() { ip link show dev "$1" >/dev/null 2>&1; }

# A normalised picture of the namespace's links, addresses and routes (IPv6 link-local and
# multicast left out; carrier flags left out): equal pictures mean the same network state.
net_snapshot() {
    { ip -j -d link show; ip -j addr show; ip -j route show table all
      ip -6 -j route show table all; } | jq -rs '
        def flags: [.[] | select(. != "LOWER_UP" and . != "NO-CARRIER" and . != "M-DOWN")];
        def routes($f): .[] | select(((.dst // "") | test("^(fe80|ff00)")) | not)
            | select(.type != "multicast")
            # linkdown follows the carrier (which comes and goes with ports): not config.
            | .flags |= map(select(. != "linkdown")) | "\($f) \(.)";
        (.[0][] | "link \(.ifname) kind=\(.linkinfo.info_kind // "-")"
            + " master=\(.master // "-") mtu=\(.mtu) mac=\(.address // "-")"
            + " flags=\(.flags | flags | join(","))"
            + " vlan=\(.linkinfo.info_data.id // "-")"
            + " vlan_filtering=\(.linkinfo.info_data.vlan_filtering // "-")"),
        (.[1][] | .ifname as $l | .addr_info[] | select((.local | startswith("fe80")) | not)
            | "addr \($l) \(.local)/\(.prefixlen) scope=\(.scope) brd=\(.broadcast // "-")"),
        (.[2] | routes("route4")), (.[3] | routes("route6"))' | LC_ALL=C sort
}

# Wait up to $2 tenths of a second for a command ($3...) to succeed.
wait_for() {
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
        _n=$((_n - 1))
    done
    return 1
}

# setup CMD...: a step that prepares a check; its failure fails the check.
setup() { expect "setup" "$@"; }

# expect_same DESC BEFORE AFTER: two pictures (net_snapshot, sysctls) must be identical.
expect_same() {
    [ "$2" = "$3" ] && return 0
    echo "$2" > /tmp/expect_same.before
    echo "$3" > /tmp/expect_same.after
    diff /tmp/expect_same.before /tmp/expect_same.after | while IFS= read -r _l; do note "$_l"; done
    fail "$1"
    return 1
}

# NAT checks: the "outside" network (the LAN or the internet) beyond dom0's uplink: namespace
# outside behind the veth UPLINK, dom0 NET.1/24 and the outside NET.2/24. A reply to a guest's
# own address cannot leave the outside (no route back to 10/8), so only a masqueraded ping
# succeeds; the outside counts echo requests by source (dom0's address, or 10/8) in its own
# nf_tables table, read by `counted`.
nat_outside() {
    setup ip netns add outside
    setup ip link add "$1" type veth peer name eth0 netns outside
    setup ip addr add "$2.1/24" dev "$1"
    setup ip link set "$1" up
    setup inns outside ip link set lo up
    setup inns outside ip addr add "$2.2/24" dev eth0
    setup inns outside ip link set eth0 up
    setup inns outside ip route add prohibit 10.0.0.0/8
    setup inns outside nft -f - <<EOF
table ip seen {
    chain input {
        type filter hook input priority 0;
        icmp type echo-request ip saddr $2.1 counter
        icmp type echo-request ip saddr 10.0.0.0/8 counter
    }
}
EOF
}

nat_sysctls() {
    for f in /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/all/proxy_arp; do
        echo "$f=$(cat $f)"
    done
}

# counted SOURCE: the echo requests from SOURCE (as in the rule) the outside has counted.
counted() {
    inns outside nft list chain ip seen input |
        sed -n "s|.*ip saddr $1 counter packets \\([0-9]*\\) .*|\\1|p"
}
