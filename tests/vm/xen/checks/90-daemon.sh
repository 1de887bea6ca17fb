# Resident mode through the real xl: run_hotplug_scripts=0 in /etc/xen/xl.conf, so libxl runs
# no script and netback waits for hotplug-status=connected, which `xen-vif daemon` (one process
# in the background) writes after doing what vif-bridge online would. The last check file:
# it stops the daemon and puts xl.conf back, so nothing after it is affected.

XLCONF=/etc/xen/xl.conf
DAEMON_LOG=/run/xvt/daemon.log
daemon_pid=
cp "$XLCONF" /run/xvt/xl.conf.saved 2>/dev/null || : > /run/xvt/xl.conf.saved
[ -f "$XLCONF" ] || : > /run/xvt/xl.conf.absent

# The vifs the daemon reports it handled (`xen-vif status`): "DEVICE ACTION RESULT" lines.
handled() { /usr/lib/xen-vif/xen-vif status | sed -n 's/^    \(vif[^ ]* [^ ]* [^ ]*\)$/\1/p'; }
daemon_running() { /usr/lib/xen-vif/xen-vif status | grep -q "^daemon: running (pid $daemon_pid)"; }
hotplug_connected() { [ "$(xs_read "$(backend_of "$1" "$2")/hotplug-status")" = connected ]; }
# daemon_did DOMID DEVID ACTION: the hotplug log has the daemon's own line (its pid) for it.
daemon_did() {
    grep -q "\[$daemon_pid\] domain=$1 devid=$2 device=vif$1.$2 $3 mode=bridge result=ok" \
        /var/log/xen/xen-hotplug.log
}
# expect_did DOMID DEVID ACTION (within 10 s)
expect_did() {
    wait_for 100 daemon_did "$@" && return 0
    note "hotplug log: $(grep "domain=$1 devid=$2 " /var/log/xen/xen-hotplug.log | tr '\n' ';')"
    fail "no '$3 result=ok' of vif$1.$2 by the daemon (pid $daemon_pid) in the hotplug log"
}

check_begin daemon-create
echo "run_hotplug_scripts=0" >> "$XLCONF"
/usr/lib/xen-vif/xen-vif daemon --verbose > "$DAEMON_LOG" 2>&1 &
daemon_pid=$!
wait_for 100 daemon_running || fail "xen-vif daemon is not running: $(cat "$DAEMON_LOG")"
test_bridge xenbr3 02:00:00:00:00:03 10.3.0.1/24
domu daemon-a "'bridge=xenbr0,mac=00:16:3e:00:00:1a,ip=10.0.0.8'" \
    "xvt.ip=10.0.0.8/24 xvt.ping=10.0.0.1 xvt.ip1=10.3.0.8/24 xvt.ping1=10.3.0.1"
id=
if expect "xl create (vif bridge=xenbr0, no hotplug script run by libxl)" xl_create daemon-a; then
    id=$(domid_of daemon-a)
    wait_for 300 hotplug_connected "$id" 0 || fail "hotplug-status of vif$id.0 is not connected"
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" "vif$id.0"
    expect_eq "vif$id.0" "$(link_summary vif$id.0)" "kind=- master=xenbr0 up=true mtu=1500 addrs="
    expect_contains "nf_tables tables (vif$id.0's filter)" "$(nft list tables)" "xen-vif-vif$id.0"
    wait_ping daemon-a eth0 10.0.0.1 90 || fail "the domU does not reach dom0 (10.0.0.1)"
    dom0_reaches 10.0.0.8 || fail "dom0 does not reach the domU (10.0.0.8)"
    expect_did "$id" 0 online
    expect_contains "what the daemon handled (xen-vif status)" "$(handled)" "vif$id.0 online ok"
fi
check_end

check_begin daemon-attach
if [ -n "$id" ] && expect "xl network-attach bridge=xenbr3" \
        xl_run network-attach daemon-a bridge=xenbr3 mac=00:16:3e:00:03:1a; then
    wait_for 300 hotplug_connected "$id" 1 || fail "hotplug-status of vif$id.1 is not connected"
    expect_did "$id" 1 online
    expect_eq "xenbr3's ports" "$(ports_of xenbr3)" "vif$id.1"
    expect_eq "vif$id.1" "$(link_summary vif$id.1)" "kind=- master=xenbr3 up=true mtu=1500 addrs="
    wait_ping daemon-a eth1 10.3.0.1 60 || fail "the domU does not reach dom0 on its new eth1"
fi
[ -n "$id" ] || fail "no domain (daemon-create failed)"
check_end

check_begin daemon-detach
if [ -n "$id" ] && expect "xl network-detach daemon-a 1" xl_run network-detach daemon-a 1; then
    vif_gone "$id" 1 "vif$id.1"
    expect_eq "xenbr3's ports" "$(ports_of xenbr3)" ""
    expect_eq "xenbr0's ports (eth0 stays)" "$(ports_of xenbr0)" "vif$id.0"
    expect_did "$id" 1 offline
fi
[ -n "$id" ] || fail "no domain (daemon-create failed)"
check_end

check_begin daemon-destroy
if [ -n "$id" ] && expect "xl destroy" xl_run destroy daemon-a; then
    domain_gone daemon-a || fail "daemon-a still exists"
    vif_gone "$id" 0 "vif$id.0"
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" ""
    expect_eq "vif links" "$(ls /sys/class/net | grep '^vif')" ""
    expect_eq "backend directories of daemon-a" \
        "$(xenstore-list /local/domain/0/backend/vif/$id 2>/dev/null)" ""
    wait_for 100 sh -c "! nft list tables | grep -q xen-vif-" ||
        fail "nf_tables tables of xen-vif left: $(nft list tables | grep xen-vif- | tr '\n' ';')"
    expect_did "$id" 0 offline
fi
[ -n "$id" ] || fail "no domain to destroy (daemon-create failed)"
# SIGTERM: the daemon stops (killed after 20 s if not, which fails the check).
kill -TERM "$daemon_pid" 2>/dev/null
(sleep 20; kill -KILL "$daemon_pid" 2>/dev/null) &
killer=$!
wait "$daemon_pid"
rc=$?
kill "$killer" 2>/dev/null
expect_eq "the daemon's exit status after SIGTERM" "$rc" 0
note "daemon log: $(tail -n 12 "$DAEMON_LOG" | tr '\n' ';')"
if [ -f /run/xvt/xl.conf.absent ]; then rm -f "$XLCONF"; else cp /run/xvt/xl.conf.saved "$XLCONF"; fi
check_end
ip link del xenbr3
