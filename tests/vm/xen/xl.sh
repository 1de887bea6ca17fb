# dom0 helpers for the Xen tier: domU configs, the real `xl`, the domUs' consoles.

# domu NAME VIF-LIST EXTRA: write /run/xvt/NAME.cfg, a PV busybox domU. VIF-LIST is xl.cfg's
# vif list body, e.g. "'bridge=xenbr0,mac=00:16:3e:00:00:02'"; EXTRA goes to its kernel command
# line (tests/vm/xen/domu-init reads xvt.* from it).
domu() {
    cat > "/run/xvt/$1.cfg" <<EOC
name = "$1"
type = "pv"
kernel = "/var/lib/xvt/vmlinuz"
ramdisk = "/xvt/domu.cpio"
memory = 128
vcpus = 1
extra = "console=hvc0 quiet $3"
vif = [ $2 ]
on_poweroff = "destroy"
on_crash = "destroy"
EOC
}

# driver_domain NAME EXTRA: write /run/xvt/NAME.cfg, a PV driver domain (tests/vm/xen/driver-init:
# netback, a bridge, `xen-vif daemon`); EXTRA goes to its kernel command line. `driver_domain`
# gives it its own `libxl` directory in xenstore, as a domain serving others' devices needs.
driver_domain() {
    cat > "/run/xvt/$1.cfg" <<EOC
name = "$1"
type = "pv"
kernel = "/var/lib/xvt/vmlinuz"
ramdisk = "/xvt/drv.cpio"
memory = 160
vcpus = 1
driver_domain = 1
extra = "console=hvc0 quiet $2"
on_poweroff = "destroy"
on_crash = "destroy"
EOC
}

# xl_run CMD...: the real xl, time-limited; its output (stdout+stderr) in $XL_OUT. Into a file,
# not a pipe: `xl create` leaves a monitor process behind that keeps its stdout open.
xl_run() {
    note "+ xl $* (at $(cut -d' ' -f1 /proc/uptime) s)"
    timeout -k 10 120 xl "$@" > /run/xvt/xl.out 2>&1
    _rc=$?
    XL_OUT=$(cat /run/xvt/xl.out)
    [ "$_rc" = 0 ] || note "xl $* (exit $_rc): $(echo "$XL_OUT" | tail -n 15)"
    return $_rc
}

xl_create() { xl_run create "/run/xvt/$1.cfg"; }

domid_of() { xl domid "$1" 2>/dev/null; }

domain_gone() { ! xl domid "$1" >/dev/null 2>&1; }

console_of() { echo "/var/log/xen/console/guest-$1.log"; }

# wait_console NAME TEXT SECONDS: the domU printed a line containing TEXT.
wait_console() {
    _i=0
    while [ $_i -lt $(($3 * 5)) ]; do
        grep -q "$2" "$(console_of "$1")" 2>/dev/null && return 0
        sleep 0.2
        _i=$((_i + 1))
    done
    note "console of $1: $(tail -n 20 "$(console_of "$1")" 2>/dev/null | tr -d '\r')"
    return 1
}

# wait_ping NAME DEV ADDR SECONDS: the domU reported its ping of ADDR over DEV, and it was ok.
wait_ping() {
    wait_console "$1" "DOMU $2 ping $3 " "$4" || return 1
    grep -q "DOMU $2 ping $3 ok" "$(console_of "$1")" && return 0
    note "console of $1: $(tail -n 20 "$(console_of "$1")" 2>/dev/null | tr -d '\r')"
    return 1
}

dom0_reaches() {
    for _try in 1 2 3 4 5; do
        ping -c 1 -W 1 "$1" >/dev/null 2>&1 && return 0
    done
    return 1
}

# vif_gone ID DEVID NAME: netback's device and the backend directory are gone, within 30 s
# (after `xl shutdown` the background xl tears the device down on its own time).
vif_gone() {
    wait_for 300 sh -c "! ip link show dev $3 && ! xenstore-ls $(backend_of "$1" "$2")" ||
        fail "$3 or its backend $(backend_of "$1" "$2") still there"
}

# The backend directory of a domain's vif DEVID in dom0's xenstore.
backend_of() { echo "/local/domain/0/backend/vif/$1/$2"; }

xs_read() { xenstore-read "$1" 2>/dev/null; }

# Bridge ports, sorted, space-separated.
ports_of() {
    ls /sys/class/net/"$1"/brif 2>/dev/null | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'
}

# A bridge built by the test (a fixed MAC: an empty bridge's MAC changes with its ports, which
# would hide real differences in snapshots).
# test_bridge NAME MAC ADDR|- [BRIDGE OPTIONS...]
test_bridge() {
    _b=$1 _mac=$2 _addr=$3
    shift 3
    setup ip link add "$_b" address "$_mac" type bridge "$@"
    [ "$_addr" = - ] || setup ip addr add "$_addr" dev "$_b"
    setup ip link set "$_b" up
}
