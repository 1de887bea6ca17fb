# vifname= and mtu= through xl: the vif gets the name and the MTU, the guest reads the MTU
# from its frontend directory, and offline (which libxl runs with vif=vif<domid>.0) still
# finds the renamed device.
net_before=$(net_snapshot)

check_begin vifname-mtu
domu named-a "'bridge=xenbr0,mac=00:16:3e:00:00:0d,vifname=xvtnamed0,mtu=1400'" \
    "xvt.ip=10.0.0.4/24 xvt.ping=10.0.0.1"
id=
if expect "xl create (vifname=xvtnamed0, mtu=1400)" xl_create named-a; then
    id=$(domid_of named-a)
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" xvtnamed0
    expect_eq "xvtnamed0" "$(link_summary xvtnamed0)" "kind=- master=xenbr0 up=true mtu=1400 addrs="
    expect_eq "the frontend's mtu" "$(xs_read /local/domain/$id/device/vif/0/mtu)" 1400
    wait_console named-a "DOMU eth0 mtu=" 90
    expect_contains "the MTU the guest reads" "$(grep -a "DOMU eth0 xenstore-mtu=" "$(console_of named-a)")" "xenstore-mtu=1400"
    expect_contains "the guest's MTU" "$(grep -a "DOMU eth0 mtu=" "$(console_of named-a)")" "mtu=1400"
    wait_ping named-a eth0 10.0.0.1 60 || fail "named-a does not reach dom0"
    if expect "xl destroy" xl_run destroy named-a; then
        # libxl passes vif=vif<domid>.0 to offline as well: xen-vif must find xvtnamed0.
        case "$XL_OUT" in *rror*|*ailed*) fail "xl destroy reported a problem: $XL_OUT" ;; esac
        vif_gone "$id" 0 xvtnamed0
        expect_same "dom0's network after destroy vs before create" "$net_before" "$(net_snapshot)"
    fi
fi
check_end
