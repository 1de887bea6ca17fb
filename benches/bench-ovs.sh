#!/usr/bin/env bash
# vif-openvswitch: xen-vif against Debian's stock script, side by side in one run, in one
# network namespace with a private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace
# datapath) and one test xenstored. Every measured command runs directly inside the namespace
# with libxl's environment. Prints a Markdown report, also written to target/bench/ovs.md;
# BENCHMARKS.md records a run. Nothing here is asserted by a test.
# The floor is one ovs-vsctl process per change doing the same OVSDB work.
#   sudo benches/bench-ovs.sh              # 100 runs each
#   BENCH_RUNS=30 sudo benches/bench-ovs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
    XEN_VIF_EXTRA_PKGS="hyperfine strace openvswitch-switch" scripts/deps.sh
    stock=$(scripts/stock-scripts.sh)
    cargo build --release --workspace --quiet
    rel=$top/target/x86_64-unknown-linux-gnu/release
    ns=xen-vif-bench-ovs
    dir=$(mktemp -d /tmp/xen-vif-bench-ovs.XXXXXX)
    pids=()
    cleanup() {
        for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "$dir"
    }
    trap cleanup EXIT
    ip netns del "$ns" 2>/dev/null || true
    vm=/vm/5b1e0e4c-8c1f-4d0b-9b4e-000000000001
    be=/local/domain/0/backend/vif/1/0
    printf '%s\n' "$be/frontend=/local/domain/1/device/vif/0" "$be/frontend-id=1" \
        "$be/online=1" "$be/state=2" "$be/script=/etc/xen/scripts/vif-openvswitch" \
        "$be/mac=00:16:3e:00:00:01" "$be/bridge=ovsbr0.10:20:30" "$be/handle=0" "$be/type=vif" \
        "$be/hotplug-status=" "/local/domain/1/vm=$vm" "$vm/name=guest1" \
        "$vm/uuid=5b1e0e4c-8c1f-4d0b-9b4e-000000000001" > "$dir/xenstore.init"
    "$rel/test-xenstored" --socket "$dir/xs.sock" --init "$dir/xenstore.init" > "$dir/xs.out" &
    pids+=($!)
    for _ in $(seq 100); do grep -q ready "$dir/xs.out" 2>/dev/null && break; sleep 0.1; done
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add vif1.0 address fe:ff:ff:ff:ff:ff type veth peer name g1
    export OVS_RUNDIR=$dir OVS_DBDIR=$dir OVS_LOGDIR=$dir OVS_SYSCONFDIR=$dir
    ovsdb-tool create "$dir/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ip netns exec "$ns" ovsdb-server "$dir/conf.db" --remote="punix:$dir/db.sock" \
        --unixctl="$dir/ovsdb-server.ctl" --log-file="$dir/ovsdb-server.log" --no-chdir >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$dir/db.sock" ] && break; sleep 0.1; done
    ovs-vsctl --no-wait init
    ip netns exec "$ns" ovs-vswitchd "unix:$dir/db.sock" --unixctl="$dir/ovs-vswitchd.ctl" \
        --log-file="$dir/ovs-vswitchd.log" --no-chdir >/dev/null 2>&1 &
    pids+=($!)
    ovs-vsctl --timeout=20 add-br ovsbr0 -- set bridge ovsbr0 datapath_type=netdev
    ip -n "$ns" link set ovsbr0 up
    mkdir -p "$dir/xv" "$dir/etc-up" "$dir/etc-work"
    ln -s "$rel/xen-vif" "$dir/xv/vif-openvswitch"
    ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin XENSTORED_PATH="$dir/xs.sock" \
        OVS_RUNDIR="$dir" BENCH_RUNS="${BENCH_RUNS:-100}" \
        bash "$0" --inside "$dir" "$stock" "$rel/xen-vif"
    exit
fi

dir=$2 stock=$3 bin=$4
runs=$BENCH_RUNS
out=$top/target/bench; mkdir -p "$out"
# /etc under an overlay (this process's mount namespace only), so xen-vif's configuration can
# be switched without touching the host's.
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$dir/etc-up,workdir=$dir/etc-work" /etc
mkdir -p /etc/xen
export script=/etc/xen/scripts/vif-openvswitch XENBUS_TYPE=vif XENBUS_PATH=backend/vif/1/0 \
    XENBUS_BASE_PATH=backend netdev= vif=vif1.0

bench_pair() { # name, online command, offline command
    local name=$1 on=$2 off=$3
    $on >/dev/null 2>&1 || true
    hyperfine -N --warmup 5 -r "$runs" --prepare "$off" "$on" --export-json "$out/$name-on.json" >/dev/null
    $off >/dev/null 2>&1 || true
    hyperfine -N --warmup 5 -r "$runs" --prepare "$on" "$off" --export-json "$out/$name-off.json" >/dev/null
    $off >/dev/null 2>&1 || true
}
echo "bench: vif-openvswitch cycles ($runs runs each)..." >&2
bench_pair stock-ovs "$stock/vif-openvswitch online type_if=vif" "$stock/vif-openvswitch offline type_if=vif"
bench_pair xen-vif-ovs "$dir/xv/vif-openvswitch online type_if=vif" "$dir/xv/vif-openvswitch offline type_if=vif"
# Like for like: Debian's stock scripts filter nothing (handle_iptable is disabled there), and
# a filter's removal costs an RCU grace period when the process's netfilter socket closes.
echo "antispoof = false" > /etc/xen/xen-vif.toml
bench_pair xen-vif-ovs-nofilter "$dir/xv/vif-openvswitch online type_if=vif" "$dir/xv/vif-openvswitch offline type_if=vif"
rm /etc/xen/xen-vif.toml
# The floor: the same OVSDB changes by one ovs-vsctl each, no link changes, no xenstore.
bench_pair floor-ovs "ovs-vsctl --timeout=30 -- --if-exists del-port vif1.0 -- add-port ovsbr0 vif1.0 tag=10 trunks=20,30" \
    "ovs-vsctl --timeout=30 --if-exists del-port vif1.0"

procs() { # successful execve calls: the script itself and everything it starts
    strace -f -qq -e trace=execve -e signal=none -o "$dir/trace" "$@" >/dev/null 2>&1 || true
    grep -c ') = 0$' "$dir/trace"
}
declare -A P
for impl in stock xv; do
    d=$stock; [ $impl = xv ] && d=$dir/xv
    P[$impl-online]=$(procs "$d/vif-openvswitch" online type_if=vif)
    P[$impl-offline]=$(procs "$d/vif-openvswitch" offline type_if=vif)
done

python3 - "$out" "$runs" <<'EOPY' > "$out/ovs.md"
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
def t(name):
    r = json.load(open(f"{out}/{name}.json"))["results"][0]
    return r["median"] * 1000, r["stddev"] * 1000
cyc = {}
print(f"### vif-openvswitch: online + offline (median of {runs} runs each, ms)\n")
print("| implementation | online | offline | cycle | σ online / offline |\n|---|---|---|---|---|")
for name in ["stock-ovs", "xen-vif-ovs", "xen-vif-ovs-nofilter", "floor-ovs"]:
    on, off = t(name + "-on"), t(name + "-off")
    cyc[name] = on[0] + off[0]
    label = {"xen-vif-ovs": "xen-vif-ovs, filter on",
             "xen-vif-ovs-nofilter": "xen-vif-ovs, `antispoof = false`"}.get(name, name)
    print(f"| {label} | {on[0]:.2f} | {off[0]:.2f} | {cyc[name]:.2f} | {on[1]:.2f} / {off[1]:.2f} |")
for name, what in [("xen-vif-ovs", "filter on"), ("xen-vif-ovs-nofilter", "`antispoof = false`, as stock filters nothing")]:
    print(f"\n- {what}: stock / xen-vif = **{cyc['stock-ovs'] / cyc[name]:.1f}x**; "
          f"xen-vif / floor (one ovs-vsctl per change) = **{cyc[name] / cyc['floor-ovs']:.2f}x**")
EOPY
{
echo
echo "| command | stock processes | xen-vif processes |"
echo "|---|---|---|"
for c in online offline; do echo "| $c | ${P[stock-$c]} | ${P[xv-$c]} |"; done
echo
echo "(processes: successful execve calls, the script itself included.) Every implementation waits,"
echo "as \`ovs-vsctl\` without \`--no-wait\` does, until ovs-vswitchd has applied each change."
echo
echo "Machine: $(nproc) cores, kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME"),"
echo "Open vSwitch $(ovs-vswitchd --version | awk 'NR == 1 {print $NF}'), userspace datapath; $(date -u +%Y-%m-%d)."
} >> "$out/ovs.md"
cat "$out/ovs.md"
