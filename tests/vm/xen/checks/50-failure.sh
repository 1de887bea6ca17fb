# A failing online through xl: bridge=nosuch. xl must fail and print xen-vif's hotplug-error,
# the domain must be gone, and the offline libxl runs next must succeed. The TEST-ONLY wrapper
# /etc/xen/scripts/vif-record records each call (argv, environment, exit status).

check_begin failure-nosuch
rm -rf /run/xvt/calls
domu fail-a "'bridge=nosuch,script=vif-record,mac=00:16:3e:00:00:0f'" "xvt.ip=10.0.0.9/24"
expect_fail "xl create (bridge=nosuch)" xl_create fail-a
online=$(ls -d /run/xvt/calls/*-online 2>/dev/null | head -n 1)
offline=$(ls -d /run/xvt/calls/*-offline 2>/dev/null | head -n 1)
if [ -z "$online" ]; then
    fail "libxl did not run the script's online"
else
    expect_eq "online's exit status" "$(cat "$online/exit")" 1
    err=$(cat "$online/hotplug-error")
    note "hotplug-error: $err"
    expect_contains "hotplug-error" "$err" "bridge nosuch does not exist"
    expect_contains "xl create's output" "$XL_OUT" "$err"
fi
domain_gone fail-a || fail "fail-a still exists after the failed create"
if [ -z "$offline" ]; then
    fail "libxl did not run the script's offline after the failure"
else
    expect_eq "the follow-up offline's exit status" "$(cat "$offline/exit")" 0
fi
check_end
