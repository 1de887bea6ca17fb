#!/usr/bin/env bash
# The main job without Xen: a network namespace as dom0, the test xenstored as xenstore, a veth
# standing in for netback's vif5.0. Builds the static binary, then runs it exactly as libxl
# does (vif-bridge online / offline) and shows the vif attached to and removed from xenbr0.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates a network namespace)" >&2; exit 1; }
command -v ip >/dev/null || scripts/deps.sh

cargo build --release --workspace --quiet
rel=$PWD/target/x86_64-unknown-linux-gnu/release
ns=xen-vif-demo
dir=$(mktemp -d /tmp/xen-vif-demo.XXXXXX)
cleanup() {
    [ -n "${xs_pid:-}" ] && kill "$xs_pid" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
ip netns del "$ns" 2>/dev/null || true

# What libxl writes before it runs the script (docs/contract.md §2).
be=/local/domain/0/backend/vif/5/0
cat > "$dir/xenstore.init" <<EOI
$be/frontend=/local/domain/5/device/vif/0
$be/frontend-id=5
$be/online=1
$be/state=2
$be/script=/etc/xen/scripts/vif-bridge
$be/mac=00:16:3e:5d:00:01
$be/bridge=xenbr0
$be/handle=0
$be/type=vif
$be/hotplug-status=
EOI
"$rel/test-xenstored" --socket "$dir/xenstored.sock" --init "$dir/xenstore.init" >"$dir/xs.out" &
xs_pid=$!
for _ in $(seq 50); do grep -q ready "$dir/xs.out" 2>/dev/null && break; sleep 0.1; done
export XENSTORED_PATH=$dir/xenstored.sock

ip netns add "$ns"
ip -n "$ns" link add xenbr0 type bridge
ip -n "$ns" link set xenbr0 up
ip -n "$ns" link add vif5.0 type veth peer name guest-eth0   # netback's vif5.0
ln -s "$rel/xen-vif" "$dir/vif-bridge"

run() { echo "+ $*"; ip netns exec "$ns" "$@"; }
# libxl's call: argv and environment exactly as `xl create` passes them.
hotplug() {
    echo "+ vif-bridge $1 type_if=vif   (XENBUS_PATH=backend/vif/5/0 vif=vif5.0)"
    ip netns exec "$ns" env -i XENSTORED_PATH="$XENSTORED_PATH" script=/etc/xen/scripts/vif-bridge \
        XENBUS_TYPE=vif XENBUS_PATH=backend/vif/5/0 XENBUS_BASE_PATH=backend netdev= vif=vif5.0 \
        "$dir/vif-bridge" "$1" type_if=vif
}

echo "== before: vif5.0 exists, down, on no bridge"
run ip -br link show vif5.0
echo
echo "== online (xl create)"
hotplug online
run ip -br link show master xenbr0
run "$rel/xen-vif" status
echo
echo "== offline (xl destroy)"
hotplug offline
echo "+ ip -br link show master xenbr0   (no ports left)"
ip -n "$ns" -br link show master xenbr0
run ip -br link show vif5.0
echo
echo "demo: vif5.0 was attached to xenbr0 and removed again; nothing of it is left on the bridge."
