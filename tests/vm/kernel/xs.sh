# The test xenstored as the VM's xenstore, and xen-vif run exactly as libxl runs a vif script
# (argv `online|offline type_if=vif`, libxl's environment, cwd /, stdin /dev/null).

XS_SOCK=/run/xenstored.sock
XS_TRAFFIC=/run/xenstored.traffic
XS_PID=

# The daemon's tree is built with xs_reset and xs_add, then started with xs_start (not in a
# pipeline: the daemon's pid must stay in this shell). xs_one KEY=VALUE... does all three for
# vif5.0.
xs_reset() { : > /run/xenstore.init; }
xs_add() { xs_backend "$@" >> /run/xenstore.init; }
xs_one() {
    xs_reset
    xs_add 5 0 "$@"
    xs_start
}

xs_start() {
    xs_stop
    : > "$XS_TRAFFIC"
    # The last daemon's "ready" must not be read as this one's.
    rm -f /run/xenstored.out
    test-xenstored --socket "$XS_SOCK" --init /run/xenstore.init --traffic "$XS_TRAFFIC" \
        > /run/xenstored.out 2>&1 &
    XS_PID=$!
    wait_for 50 grep -q ready /run/xenstored.out || fail "test-xenstored did not start: $(cat /run/xenstored.out)"
}

xs_stop() {
    if [ -n "$XS_PID" ]; then
        kill "$XS_PID" 2>/dev/null
        wait "$XS_PID" 2>/dev/null
        XS_PID=
    fi
}

# The MAC libxl gives a guest's vif (the backend's `mac`): unique per domain and device. The
# guest's end of a stand-in veth must carry it, or the anti-spoofing filter drops its frames.
guest_mac() {
    printf '00:16:3e:00:%02x:%02x' "$1" "$2"
}

# Backend keys as libxl writes them before running the script (tests/support/mod.rs backend()),
# plus KEY=VALUE arguments.
xs_backend() {
    _d=$1 _n=$2
    shift 2
    _be=/local/domain/0/backend/vif/$_d/$_n
    cat <<EOI
$_be/frontend=/local/domain/$_d/device/vif/$_n
$_be/frontend-id=$_d
$_be/online=1
$_be/state=2
$_be/script=/etc/xen/scripts/vif-bridge
$_be/mac=$(guest_mac "$_d" "$_n")
$_be/handle=$_n
$_be/type=vif
$_be/hotplug-status=
/local/domain/$_d/device/vif/$_n/backend-id=0
EOI
    for _kv in "$@"; do
        echo "$_be/$_kv"
    done
}

# The last value xen-vif wrote to a backend key (from the daemon's traffic log).
xs_written() {
    awk -v p="WRITE /local/domain/0/backend/vif/$1/$2/$3" '
        index($0, p) == 1 && (length($0) == length(p) || substr($0, length(p) + 1, 1) == " ") {
            v = substr($0, length(p) + 2)
        }
        END { print v }' "$XS_TRAFFIC"
}

# hotplug SCRIPT ACTION DOMID DEVID [NETDEV]: stdout+stderr in $HP_OUT, status returned.
hotplug() {
    HP_OUT=$(cd / && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin XENSTORED_PATH="$XS_SOCK" \
        script="/etc/xen/scripts/$1" XENBUS_TYPE=vif XENBUS_PATH="backend/vif/$3/$4" \
        XENBUS_BASE_PATH=backend netdev="${5:-}" vif="vif$3.$4" \
        "/etc/xen/scripts/$1" "$2" type_if=vif < /dev/null 2>&1)
    _rc=$?
    [ -z "$HP_OUT" ] || note "$1 $2 (exit $_rc): $HP_OUT"
    return $_rc
}

# A network script (network-bridge / network-route) as xend ran it: argv words, inherited env.
netscript() {
    _s=$1
    shift
    HP_OUT=$(cd / && "/etc/xen/scripts/$_s" "$@" < /dev/null 2>&1)
    _rc=$?
    [ -z "$HP_OUT" ] || note "$_s $* (exit $_rc): $HP_OUT"
    return $_rc
}
