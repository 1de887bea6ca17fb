# A driver domain through the real xl: a PV domU with `driver_domain = 1` runs netback, a
# bridge (xenbr9, 10.9.9.1/24) and `xen-vif daemon` (tests/vm/xen/driver-init); a second domU's
# vif says `backend=` that domain, so libxl in dom0 writes the backend under the driver domain's
# /local/domain/<id>/backend/vif and runs no script: the driver domain's own agent (xl devd
# normally, xen-vif's daemon here) brings the vif up and down and, once it is closed, removes
# the backend directory (dom0's libxl waits for that). What happens inside the driver domain
# is read from its console (`DRV ...` lines).

DRV=xvt-drv
drv_console() { tr -d '\r' < "$(console_of $DRV)"; }
# drv_count TEXT: how many console lines of the driver domain contain TEXT (a grep pattern).
drv_count() { drv_console | grep -c "^DRV $1" || true; }
# The driver domain reported xenbr9 without ports once more than $emptied times.
drv_emptied() { [ "$(drv_count "ports xenbr9=\[\]")" -gt "$emptied" ]; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

check_begin driverdom-create
driver_domain $DRV "xvt.bridge=xenbr9 xvt.addr=10.9.9.1/24"
drvid=
if expect "xl create (driver_domain = 1)" xl_create $DRV; then
    drvid=$(domid_of $DRV)
    wait_console $DRV "DRV daemon: .*started" 120 ||
        fail "xen-vif daemon did not start in the driver domain"
    wait_console $DRV "DRV ports xenbr9=\[\]" 30 || fail "no xenbr9 in the driver domain"
    expect_eq "insmod failures in the driver domain" "$(drv_console | grep '^DRV insmod' |
        grep -v crc32c-intel)" ""
fi
check_end

check_begin driverdom-guest
gid= be=
domu drv-guest "'backend=$DRV,bridge=xenbr9,ip=10.9.9.2,mac=00:16:3e:00:09:92'" \
    "xvt.ip=10.9.9.2/24 xvt.ping=10.9.9.1"
if [ -n "$drvid" ] && expect "xl create (vif backend=$DRV)" xl_create drv-guest; then
    gid=$(domid_of drv-guest)
    be=/local/domain/$drvid/backend/vif/$gid/0
    expect_eq "the frontend's backend" "$(xs_read /local/domain/$gid/device/vif/0/backend)" "$be"
    wait_for 300 sh -c "[ \"\$(xenstore-read $be/hotplug-status 2>/dev/null)\" = connected ]" ||
        fail "hotplug-status of $be is not connected: '$(xs_read "$be/hotplug-status")'"
    wait_console $DRV "DRV ports xenbr9=\[vif$gid.0\]" 30 ||
        fail "vif$gid.0 is not a port of xenbr9 in the driver domain"
    wait_console $DRV "DRV log: .*domain=$gid devid=0 device=vif$gid.0 online mode=bridge result=ok" 10 ||
        fail "no 'online result=ok' of vif$gid.0 in the driver domain's hotplug log"
    expect_eq "vif$gid.0 in dom0" "$(link_summary vif$gid.0)" absent
    wait_ping drv-guest eth0 10.9.9.1 90 || fail "the guest does not reach the driver domain (10.9.9.1)"
fi
[ -n "$drvid" ] || fail "no driver domain (driverdom-create failed)"
check_end

check_begin driverdom-destroy
if [ -n "$gid" ]; then
    emptied=$(drv_count "ports xenbr9=\[\]")
    t0=$(uptime_s)
    if expect "xl destroy drv-guest" xl_run destroy drv-guest; then
        took=$(echo "$t0 $(uptime_s)" | awk '{ printf "%d", $2 - $1 }')
        note "xl destroy took $took s"
        domain_gone drv-guest || fail "drv-guest still exists"
        wait_console $DRV "DRV log: .*domain=$gid devid=0 device=vif$gid.0 offline mode=bridge result=ok" 30 ||
            fail "no 'offline result=ok' of vif$gid.0 in the driver domain's hotplug log"
        wait_for 100 drv_emptied ||
            fail "vif$gid.0 still a port of xenbr9 in the driver domain"
        wait_for 100 sh -c "! xenstore-ls $be" || fail "the backend directory $be is still there"
        # libxl waits LIBXL_DESTROY_TIMEOUT (10 s) for the driver domain to remove the backend,
        # then removes it itself and says so.
        case "$XL_OUT" in *"timed out"*) fail "xl destroy: $(echo "$XL_OUT" | grep 'timed out')" ;; esac
        [ "$took" -lt 10 ] || fail "xl destroy took $took s (libxl waited for the backend's removal)"
    fi
fi
if [ -n "$drvid" ] && expect "xl destroy $DRV" xl_run destroy $DRV; then
    domain_gone $DRV || fail "$DRV still exists"
fi
note "driver domain: $(drv_console | grep '^DRV' | tail -n 25 | tr '\n' ';')"
[ -n "$gid" ] || fail "no guest (driverdom-guest failed)"
check_end
