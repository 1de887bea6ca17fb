#!/usr/bin/env bash
# What the anti-spoofing filter costs: an online+offline cycle with the filter, with
# `antispoof = false`, and with a baseline binary (main's), side by side; the 1000th filtered
# vif's online against the first's, for this tree and the baseline; UDP packets per second
# between two guest namespaces through a filtered and an unfiltered vif. Prints Markdown (also written to
# target/bench/antispoof.md); BENCHMARKS.md records a run. Nothing here is asserted by a test.
#   sudo benches/antispoof.sh                      # a few minutes
#   BENCH_RUNS=100 BENCH_VIFS=300 sudo benches/antispoof.sh
# BENCH_BASELINE=/path/to/xen-vif compares with that binary instead of building main's.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
    XEN_VIF_EXTRA_PKGS="hyperfine python3" scripts/deps.sh
    cargo build --release --workspace --quiet
    rel=$top/target/x86_64-unknown-linux-gnu/release
    dir=$(mktemp -d /tmp/xen-vif-nftbench.XXXXXX)
    base=${BENCH_BASELINE:-}
    if [ -z "$base" ]; then
        # main's binary, built from git (the checkout is not touched).
        mkdir -p "$dir/main"
        git archive main | tar -x -C "$dir/main"
        (cd "$dir/main" && CARGO_TARGET_DIR=$top/target/bench-main cargo build --release --quiet --bin xen-vif)
        base=$top/target/bench-main/x86_64-unknown-linux-gnu/release/xen-vif
    fi
    nvifs=${BENCH_VIFS:-1000}
    ns=xen-vif-nftbench
    cleanup() {
        kill "${xs_pid:-}" 2>/dev/null || true
        for n in "$ns" "$ns-a" "$ns-b" "$ns-guests" "$ns-more"; do ip netns del "$n" 2>/dev/null || true; done
        rm -rf "$dir"
    }
    trap cleanup EXIT
    for n in "$ns" "$ns-a" "$ns-b" "$ns-guests" "$ns-more"; do ip netns del "$n" 2>/dev/null || true; done
    for d in $(seq 1 "$nvifs"); do
        be=/local/domain/0/backend/vif/$d/0
        printf '%s\n' "$be/frontend=/local/domain/$d/device/vif/0" "$be/frontend-id=$d" \
            "$be/online=1" "$be/state=2" "$be/script=/etc/xen/scripts/vif-bridge" \
            "$be/mac=00:16:3e:00:$(printf %02x:%02x $((d / 256)) $((d % 256)))" \
            "$be/bridge=xenbr0" "$be/handle=0" "$be/type=vif" "$be/hotplug-status=" \
            "$be/ip=10.9.$((d / 250)).$((d % 250 + 2)) 2001:db8::$(printf %x "$d")"
    done > "$dir/xenstore.init"
    "$rel/test-xenstored" --socket "$dir/xs.sock" --init "$dir/xenstore.init" > "$dir/xs.out" &
    xs_pid=$!
    for _ in $(seq 100); do grep -q ready "$dir/xs.out" 2>/dev/null && break; sleep 0.1; done
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add xenbr0 address 02:00:00:00:00:01 type bridge
    ip -n "$ns" link set xenbr0 up
    # The guests' ends live in a namespace of their own, as a guest's interface lives in its
    # domain: dom0's namespace holds the vifs and the bridge, the device count of a real host
    # with that many guests (the kernel's netdev hook set-up walks every device, BENCHMARKS.md).
    ip netns add "$ns-guests"
    for d in $(seq 1 "$nvifs"); do echo "link add vif$d.0 address fe:ff:ff:ff:ff:ff type veth peer name g$d netns $ns-guests"; done > "$dir/links.batch"
    ip -n "$ns" -batch "$dir/links.batch"
    # Two guests with loopback only and their veth end: vif1.0 <-> a, vif2.0 <-> b.
    for g in a b; do
        ip netns add "$ns-$g"
        ip -n "$ns-$g" link set lo up
    done
    ip -n "$ns-guests" link set g1 netns "$ns-a"
    ip -n "$ns-guests" link set g2 netns "$ns-b"
    ip -n "$ns-a" link set g1 address 00:16:3e:00:00:01 up
    ip -n "$ns-b" link set g2 address 00:16:3e:00:00:02 up
    ip -n "$ns-a" addr add 10.9.0.3/16 dev g1
    ip -n "$ns-b" addr add 10.9.0.4/16 dev g2
    mkdir -p "$dir/xv" "$dir/base" "$dir/etc-up" "$dir/etc-work"
    ln -s "$rel/xen-vif" "$dir/xv/vif-bridge"
    ln -s "$base" "$dir/base/vif-bridge"
    # Measure from inside the namespace, with only libxl's environment, /etc under an overlay
    # so the configuration can be switched without touching the host's.
    ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin XENSTORED_PATH="$dir/xs.sock" \
        BENCH_RUNS="${BENCH_RUNS:-300}" NS="$ns" bash "$0" --inside "$dir" "$nvifs"
    exit
fi

dir=$2 nvifs=$3
runs=$BENCH_RUNS
out=$top/target/bench; mkdir -p "$out"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$dir/etc-up,workdir=$dir/etc-work" /etc
mkdir -p /etc/xen
filter() { echo "antispoof = $1" > /etc/xen/xen-vif.toml; }
export script=/etc/xen/scripts/vif-bridge XENBUS_TYPE=vif XENBUS_PATH=backend/vif/1/0 \
    XENBUS_BASE_PATH=backend netdev= vif=vif1.0

cycle() { # name, directory
    local name=$1 d=$2
    "$d/vif-bridge" online type_if=vif >/dev/null
    hyperfine -N --warmup 10 -r "$runs" --prepare "$d/vif-bridge offline type_if=vif" \
        "$d/vif-bridge online type_if=vif" --export-json "$out/nft-$name-on.json" >/dev/null
    hyperfine -N --warmup 10 -r "$runs" --prepare "$d/vif-bridge online type_if=vif" \
        "$d/vif-bridge offline type_if=vif" --export-json "$out/nft-$name-off.json" >/dev/null
    "$d/vif-bridge" offline type_if=vif >/dev/null
}
echo "bench: one vif, filter on / off / the baseline's, filter on ($runs runs each)..." >&2
filter true; cycle filter "$dir/xv"
filter false; cycle nofilter "$dir/xv"
filter true; cycle main "$dir/base"
filter true; cycle filter2 "$dir/xv"

echo "bench: vif1.0 as the 1st and as the ${nvifs}th vif, filtered and not..." >&2
# The same with the filter off separates what the filter adds at scale from what the bridge
# with its ports and the other devices add anyway; the baseline binary, filter on, is the
# design it is compared with (main's: one table shared by every vif).
declare -A layout
for f in false true base; do
    d=$dir/xv
    [ $f = base ] && d=$dir/base
    filter "$([ $f = false ] && echo false || echo true)"
    cycle "first-$f" "$d"
    python3 "$top/benches/drive.py" "$d/vif-bridge" online "$nvifs" 16 >/dev/null
    # Where the filters are: one table xen-vif-<vif> per vif, or chains in one table xen-vif.
    # Tables asked for by name only: nft 1.0.6 lists 1000 tables (`list tables`, `list
    # ruleset`) in minutes of CPU, quadratically; one table by name takes milliseconds.
    if [ $f != false ]; then
        if nft list table netdev xen-vif >/dev/null 2>&1; then
            layout[$f]="one table, $(nft list table netdev xen-vif | grep -c '^	chain ') chains"
        else
            n=0
            for v in 1 "$nvifs"; do
                nft list table netdev "xen-vif-vif$v.0" >/dev/null 2>&1 && n=$((n + 1))
            done
            layout[$f]="one table per vif (the 1st's and the ${nvifs}th's: $n of 2 there)"
        fi
    fi
    cycle "last-$f" "$d"
    python3 "$top/benches/drive.py" "$d/vif-bridge" offline "$nvifs" 16 >/dev/null
done
chains="this tree: ${layout[true]}; baseline: ${layout[base]}"

echo "bench: what the 1st vif's filtered online pays for ${nvifs} more devices, or tables..." >&2
# Each alone, no other vif up: the kernel registers a netdev hook by walking every device of
# the namespace, and finds a table by name by walking every table (each message of the
# online's one batch names the vif's table). Empty tables of another name stand in for the
# other vifs' tables; veths whose peers live elsewhere for their devices.
filter true
online_only() { # name
    hyperfine -N --warmup 10 -r "$runs" --prepare "$dir/xv/vif-bridge offline type_if=vif" \
        "$dir/xv/vif-bridge online type_if=vif" --export-json "$out/nft-grow-$1.json" >/dev/null
}
per_vif() { # one line for each of 1..nvifs: the text with every N replaced by the number
    for i in $(seq 1 "$nvifs"); do echo "${1//N/$i}"; done
}
online_only none
ip netns add "$NS-more"
per_vif "link add moreN type veth peer name pN netns $NS-more" | ip -batch -
online_only devices
per_vif "link del moreN" | ip -batch -
ip netns del "$NS-more"
per_vif "add table netdev otherN" | nft -f -
online_only tables
per_vif "delete table netdev otherN" | nft -f -
"$dir/xv/vif-bridge" offline type_if=vif >/dev/null

echo "bench: UDP through vif1.0 -> xenbr0 -> vif2.0..." >&2
pps() { # seconds -> packets/s received by guest b
    local before after
    before=$(ip netns exec "$NS-b" cat /sys/class/net/g2/statistics/rx_packets)
    ip netns exec "$NS-a" python3 - "$1" <<'EOPY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# Unconnected: b's port unreachable answers must not stop the sender.
dst, payload = ("10.9.0.4", 9), b"x" * 18
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(1000):
        s.sendto(payload, dst)
EOPY
    after=$(ip netns exec "$NS-b" cat /sys/class/net/g2/statistics/rx_packets)
    echo $(( (after - before) / $1 ))
}
export XENBUS_PATH=backend/vif/2/0 vif=vif2.0
"$dir/xv/vif-bridge" online type_if=vif >/dev/null
export XENBUS_PATH=backend/vif/1/0 vif=vif1.0
declare -a on off
for i in 1 2 3 4 5; do
    filter true; "$dir/xv/vif-bridge" online type_if=vif >/dev/null
    on+=("$(pps 3)")
    filter false; "$dir/xv/vif-bridge" online type_if=vif >/dev/null
    off+=("$(pps 3)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }

python3 - "$out" "$runs" "$nvifs" "$chains" "$(median "${on[@]}")" "$(median "${off[@]}")" \
    "${on[*]}" "${off[*]}" <<'EOPY' | tee "$out/antispoof.md"
import json, sys
out, runs, nvifs, chains, pon, poff, ron, roff = sys.argv[1:9]
def t(name):
    r = json.load(open(f"{out}/nft-{name}.json"))["results"][0]
    return r["median"] * 1000
row = lambda label, n: f"| {label} | {t(n+'-on'):.3f} | {t(n+'-off'):.3f} | {t(n+'-on') + t(n+'-off'):.3f} |"
print(f"### One vif, vif-bridge online + offline (median of {runs} runs each, ms)\n")
print("| binary / setting | online | offline | cycle |\n|---|---|---|---|")
for label, n in [("xen-vif, filter on", "filter"), ("xen-vif, `antispoof = false`", "nofilter"),
                 ("baseline, filter on", "main"), ("xen-vif, filter on (again)", "filter2")]:
    print(row(label, n))
cyc = lambda n: t(n + "-on") + t(n + "-off")
f = (cyc("filter") + cyc("filter2")) / 2
print(f"\nAdded by the filter per cycle: **{f - cyc('nofilter'):.3f} ms** against `antispoof = false` "
      f"(target: at most 0.2 ms); this tree against the baseline: **{f - cyc('main'):+.3f} ms**.\n")
print(f"### The first and the {nvifs}th vif (filtered, {nvifs} vifs up: {chains})\n")
print("| | online | offline | online, last / first |\n|---|---|---|---|")
for f, label in [("true", "filtered"), ("base", "filtered by the baseline"), ("false", "not filtered")]:
    print(f"| vif1.0 {label}, no other vif | {t('first-'+f+'-on'):.3f} | {t('first-'+f+'-off'):.3f} | |")
    print(f"| vif1.0 {label}, beside {int(nvifs) - 1} others | {t('last-'+f+'-on'):.3f} | "
          f"{t('last-'+f+'-off'):.3f} | **{t('last-'+f+'-on') / t('first-'+f+'-on'):.3f}** |")
print("\n(target: the filtered ratio within 1.10)\n")
print(f"What grows, each alone (vif1.0 filtered, no other vif up; median of {runs}, ms):\n")
print("| beside | online | against none |\n|---|---|---|")
for n, label in [("none", "nothing"), ("devices", f"{nvifs} more devices"),
                 ("tables", f"{nvifs} empty netdev tables")]:
    print(f"| {label} | {t('grow-'+n):.3f} | {t('grow-'+n) - t('grow-none'):+.3f} |")
print()
print("### UDP, guest a → vif1.0 → xenbr0 → vif2.0 → guest b (18-byte payloads, 3 s, median of 5)\n")
print("| vif1.0 | packets/s received by b | runs |\n|---|---|---|")
print(f"| filtered | {pon} | {ron} |\n| not filtered | {poff} | {roff} |")
print(f"\nFiltered / unfiltered: **{int(pon) / int(poff):.3f}** (target: at least 0.95).")
EOPY
