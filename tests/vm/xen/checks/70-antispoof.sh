# The anti-spoofing filter under real Xen: a domU with ip= reaches dom0 from its own address,
# and not from an address it added itself.

check_begin antispoof
domu spoof-a "'bridge=xenbr0,mac=00:16:3e:00:00:0f,ip=10.0.0.6'" \
    "xvt.ip=10.0.0.6/24 xvt.ping=10.0.0.1 xvt.spoof=10.0.0.66/24,10.0.0.1"
if expect "xl create (ip=10.0.0.6)" xl_create spoof-a; then
    id=$(domid_of spoof-a)
    status=$(/usr/lib/xen-vif/xen-vif status --json)
    expect_eq "xen-vif status: the filter of vif$id.0" \
        "$(echo "$status" | jq -r ".[] | select(.device == \"vif$id.0\") | .filter")" on
    wait_ping spoof-a eth0 10.0.0.1 90 || fail "the domU does not reach dom0 from its own address"
    wait_console spoof-a "DOMU eth0 ping 10.0.0.1 from 10.0.0.66 " 90 ||
        fail "the domU did not report its ping from 10.0.0.66"
    grep -q "DOMU eth0 ping 10.0.0.1 from 10.0.0.66 FAIL" "$(console_of spoof-a)" ||
        fail "the domU reached dom0 from 10.0.0.66, an address it added itself"
    dom0_reaches 10.0.0.6 || fail "dom0 does not reach the domU (10.0.0.6)"
    expect "xl destroy" xl_run destroy spoof-a
    domain_gone spoof-a || fail "spoof-a still exists"
fi
check_end
