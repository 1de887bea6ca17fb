# The hypervisor and the toolstack are up: everything after this drives the real xl.
check_begin xen-dom0
if expect "xl info" xl_run info; then
    expect_eq "Xen version" "$(echo "$XL_OUT" | sed -n 's/^xen_major *: //p').$(echo "$XL_OUT" | sed -n 's/^xen_minor *: //p')" 4.17
fi
expect_eq "domain 0" "$(domid_of Domain-0)" 0
expect_eq "vif-bridge is xen-vif" "$(readlink -f /etc/xen/scripts/vif-bridge)" /usr/lib/xen-vif/xen-vif
check_end
