# What libxl really passes a vif script (docs/contract.md §1), recorded by the TEST-ONLY wrapper
# /etc/xen/scripts/vif-record around xen-vif: argv, the environment libxl adds, cwd, stdin, uid.

# contract_call DIR ACTION DOMID: the recorded call matches the contract.
contract_call() {
    note "argv: $(tr '\n' ' ' < "$1/argv")"
    note "env: $(grep -E '^(script|XENBUS_[A-Z_]*|netdev|vif|INTERFACE|UDEV_CALL)=' "$1/env" | LC_ALL=C sort | tr '\n' ' ')"
    expect_eq "argv" "$(tr '\n' ' ' < "$1/argv")" "/etc/xen/scripts/vif-record $2 type_if=vif "
    expect_eq "libxl's variables" \
        "$(grep -E '^(script|XENBUS_[A-Z_]*|netdev|vif)=' "$1/env" | LC_ALL=C sort | tr '\n' ' ')" \
        "XENBUS_BASE_PATH=backend XENBUS_PATH=backend/vif/$3/0 XENBUS_TYPE=vif netdev= script=/etc/xen/scripts/vif-record vif=vif$3.0 "
    expect_eq "cwd" "$(cat "$1/cwd")" /
    expect_eq "stdin" "$(cat "$1/stdin")" /dev/null
    expect_eq "uid" "$(cat "$1/uid")" 0
    expect_eq "exit status" "$(cat "$1/exit")" 0
}

rm -rf /run/xvt/calls
domu contract-a "'bridge=xenbr0,script=vif-record,mac=00:16:3e:00:00:0e'" "xvt.ip=10.0.0.5/24 xvt.ping=10.0.0.1"
id=
# recorded ACTION: the first call of the script with ACTION, checked against the contract.
recorded() {
    _call=$(ls -d /run/xvt/calls/*-"$1" 2>/dev/null | head -n 1)
    if [ -n "$_call" ]; then
        contract_call "$_call" "$1" "$id"
    else
        fail "no $1 call recorded"
    fi
}

check_begin contract-online
if expect "xl create" xl_create contract-a; then
    id=$(domid_of contract-a)
    recorded online
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" "vif$id.0"
fi
check_end

check_begin contract-offline
if expect "xl destroy" xl_run destroy contract-a; then
    recorded offline
    expect_eq "xenbr0's ports" "$(ports_of xenbr0)" ""
fi
check_end
