#!/usr/bin/env bash
# xen-vif against the stock Debian scripts and the `ip -batch` floor, in one network namespace
# against one test xenstored. Every measured command runs directly inside the namespace with
# libxl's environment (no wrapper process is timed). Prints a Markdown report, also written to
# target/bench/report.md; BENCHMARKS.md records a run. Nothing here is asserted by a test.
#   sudo benches/bench.sh                               # full run, a few minutes
#   BENCH_RUNS=50 BENCH_VIFS=200 sudo benches/bench.sh  # quicker
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" = 0 ] || { echo "bench: run as root" >&2; exit 1; }
    XEN_VIF_EXTRA_PKGS="hyperfine time strace python3" scripts/deps.sh
    stock=$(scripts/stock-scripts.sh)
    cargo build --release --workspace --quiet
    rel=$top/target/x86_64-unknown-linux-gnu/release
    nvifs=${BENCH_VIFS:-1000}
    ns=xen-vif-bench
    dir=$(mktemp -d /tmp/xen-vif-bench.XXXXXX)
    cleanup() { kill "${xs_pid:-}" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$dir"; }
    trap cleanup EXIT
    ip netns del "$ns" 2>/dev/null || true
    # One backend per vif as libxl writes it: domains 1..N, device 0. vif1.0 is the cycle vif.
# Each vif is a veth with netback's address (fe:ff:ff:ff:ff:ff), down, as libxl finds it.
    for d in $(seq 1 "$nvifs"); do
        be=/local/domain/0/backend/vif/$d/0
        printf '%s\n' "$be/frontend=/local/domain/$d/device/vif/0" "$be/frontend-id=$d" \
            "$be/online=1" "$be/state=2" "$be/script=/etc/xen/scripts/vif-bridge" \
            "$be/mac=00:16:3e:00:00:01" "$be/bridge=xenbr0" "$be/handle=0" "$be/type=vif" \
            "$be/hotplug-status=" "$be/ip=10.9.$((d / 250)).$((d % 250 + 2))" "$be/gatewaydev=gw0"
    done > "$dir/xenstore.init"
    "$rel/test-xenstored" --socket "$dir/xs.sock" --init "$dir/xenstore.init" > "$dir/xs.out" &
    xs_pid=$!
    for _ in $(seq 100); do grep -q ready "$dir/xs.out" 2>/dev/null && break; sleep 0.1; done
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add xenbr0 address 02:00:00:00:00:01 type bridge
    ip -n "$ns" link set xenbr0 up
    ip -n "$ns" link add gw0 type bridge
    ip -n "$ns" addr add 10.9.0.1/16 dev gw0
    ip -n "$ns" link set gw0 up
    for d in $(seq 1 "$nvifs"); do echo "link add vif$d.0 address fe:ff:ff:ff:ff:ff type veth peer name g$d"; done > "$dir/links.batch"
    ip -n "$ns" -batch "$dir/links.batch"
    mkdir -p "$dir/xv"
    for s in vif-bridge vif-route; do ln -s "$rel/xen-vif" "$dir/xv/$s"; done
    # Measure from inside the namespace, with only libxl's environment.
    ip netns exec "$ns" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin XENSTORED_PATH="$dir/xs.sock" \
        BENCH_RUNS="${BENCH_RUNS:-300}" bash "$0" --inside "$dir" "$stock" "$nvifs" "$rel/xen-vif"
    exit
fi

dir=$2 stock=$3 nvifs=$4 bin=$5
runs=$BENCH_RUNS
out=$top/target/bench; mkdir -p "$out"
export script=/etc/xen/scripts/vif-bridge XENBUS_TYPE=vif XENBUS_PATH=backend/vif/1/0 \
    XENBUS_BASE_PATH=backend netdev=gw0 vif=vif1.0
# The same kernel work done by one `ip -batch` process: the floor.
printf 'link set vif1.0 down\nlink set vif1.0 address fe:ff:ff:ff:ff:ff\naddress flush dev vif1.0\nlink set vif1.0 mtu 1500\nlink set vif1.0 master xenbr0\nlink set vif1.0 up\n' > "$dir/bridge-on.batch"
printf 'link set vif1.0 down\nlink set vif1.0 nomaster\n' > "$dir/bridge-off.batch"
printf 'address add 10.9.0.1/32 dev vif1.0\nlink set vif1.0 up\nroute add 10.9.0.3 dev vif1.0 src 10.9.0.1 metric 2\n' > "$dir/route-on.batch"
printf 'route del 10.9.0.3 dev vif1.0 src 10.9.0.1 metric 2\naddress del 10.9.0.1/32 dev vif1.0\nlink set vif1.0 down\n' > "$dir/route-off.batch"

bench_pair() { # name, online command, offline command
    local name=$1 on=$2 off=$3
    # Each measured run starts from the state its --prepare leaves. Start online so the first
    # prepared offline has something to remove, and go offline between the two halves (stock
    # vif-route fails when brought online twice: `ip route add` finds its own route).
    $on >/dev/null 2>&1 || true
    hyperfine -N --warmup 10 -r "$runs" --prepare "$off" "$on" --export-json "$out/$name-on.json" >/dev/null
    $off >/dev/null 2>&1 || true
    hyperfine -N --warmup 10 -r "$runs" --prepare "$on" "$off" --export-json "$out/$name-off.json" >/dev/null
    $off >/dev/null 2>&1 || true
}
echo "bench: cycles ($runs runs each)..." >&2
bench_pair stock-bridge "$stock/vif-bridge online type_if=vif" "$stock/vif-bridge offline type_if=vif"
bench_pair xen-vif-bridge "$dir/xv/vif-bridge online type_if=vif" "$dir/xv/vif-bridge offline type_if=vif"
bench_pair floor-bridge "ip -batch $dir/bridge-on.batch" "ip -batch $dir/bridge-off.batch"
export script=/etc/xen/scripts/vif-route
bench_pair stock-route "$stock/vif-route online type_if=vif" "$stock/vif-route offline type_if=vif"
bench_pair xen-vif-route "$dir/xv/vif-route online type_if=vif" "$dir/xv/vif-route offline type_if=vif"
bench_pair floor-route "ip -batch $dir/route-on.batch" "ip -batch $dir/route-off.batch"

# What any process costs here: the floor under every per-call figure.
hyperfine -N --warmup 10 -r "$runs" /bin/true --export-json "$out/true.json" >/dev/null
hyperfine -N --warmup 10 -r "$runs" "$dir/xv/vif-bridge add type_if=vif" --export-json "$out/noop.json" >/dev/null

echo "bench: processes, syscalls, memory..." >&2
procs() { # successful execve calls: the script itself and everything it starts
    strace -f -qq -e trace=execve -e signal=none -o "$dir/trace" "$@" >/dev/null 2>&1 || true
    grep -c ') = 0$' "$dir/trace"
}
syscalls() {
    strace -f -c -o "$dir/count" "$@" >/dev/null 2>&1 || true
    awk '$NF == "total" {print $4}' "$dir/count"
}
declare -A P S
for impl in stock xv; do
    d=$stock; [ $impl = xv ] && d=$dir/xv
    for s in vif-bridge vif-route; do
        export script=/etc/xen/scripts/$s
        for c in online offline; do
            [ $c = offline ] && "$d/$s" online type_if=vif >/dev/null 2>&1
            P[$impl-$s-$c]=$(procs "$d/$s" $c type_if=vif)
            [ $c = online ] && "$d/$s" offline type_if=vif >/dev/null 2>&1
            [ $c = offline ] && "$d/$s" online type_if=vif >/dev/null 2>&1
            S[$impl-$s-$c]=$(syscalls "$d/$s" $c type_if=vif)
            "$d/$s" offline type_if=vif >/dev/null 2>&1 || true
        done
    done
done
export script=/etc/xen/scripts/vif-bridge
rss=$(/usr/bin/time -f %M "$dir/xv/vif-bridge" online type_if=vif 2>&1 >/dev/null | tail -1)
"$dir/xv/vif-bridge" offline type_if=vif

echo "bench: $nvifs vifs on one bridge..." >&2
scale() { # dir parallelism command -> milliseconds; benches/drive.py starts each call
    local d=$1 par=$2 c=$3 out
    out=$(python3 "$top/benches/drive.py" "$d/vif-bridge" "$c" "$nvifs" "$par")
    [ "${out#* }" = 0 ] || echo "bench: ${out#* } of $nvifs $c calls failed" >&2
    echo "${out%% *}"
}
declare -A T A R
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
# xen-vif's runs take seconds: each figure is the median of three (all three are shown), run
# in turn with the driver's own cost, the same calls doing nothing (an ignored combination).
# The stock runs take minutes and are run once.
for impl in xv stock; do
    d=$stock; [ $impl = xv ] && d=$dir/xv
    reps=1; [ $impl = xv ] && reps=3
    for par in 1 16; do
        on=() off=() noop=()
        for _ in $(seq $reps); do
            [ $impl = xv ] && [ $par = 1 ] && noop+=("$(scale "$d" 1 add)")
            on+=("$(scale "$d" "$par" online)")
            A[$impl-$par]=$(ip -br link show master xenbr0 | wc -l)
            off+=("$(scale "$d" "$par" offline)")
        done
        if [ $reps = 3 ]; then
            T[$impl-$par-on]=$(median3 "${on[@]}") T[$impl-$par-off]=$(median3 "${off[@]}")
            R[$impl-$par-on]="${on[*]}" R[$impl-$par-off]="${off[*]}"
        else
            T[$impl-$par-on]=${on[0]} T[$impl-$par-off]=${off[0]}
        fi
        [ ${#noop[@]} = 3 ] && { T[noop-1]=$(median3 "${noop[@]}"); R[noop-1]="${noop[*]}"; }
    done
done

python3 - "$out" "$runs" <<'EOPY' > "$out/report.md"
import json, sys
out, runs = sys.argv[1], int(sys.argv[2])
def t(name):
    r = json.load(open(f"{out}/{name}.json"))["results"][0]
    return r["median"] * 1000, r["stddev"] * 1000
rows, cyc = [], {}
for name in ["stock-bridge", "xen-vif-bridge", "floor-bridge", "stock-route", "xen-vif-route", "floor-route"]:
    on, off = t(name + "-on"), t(name + "-off")
    cyc[name] = on[0] + off[0]
    rows.append(f"| {name} | {on[0]:.2f} | {off[0]:.2f} | {cyc[name]:.2f} | {on[1]:.2f} / {off[1]:.2f} |")
print(f"## One vif: online + offline (median of {runs} runs each, ms)\n")
print("| implementation | online | offline | cycle | σ online / offline |\n|---|---|---|---|---|")
print("\n".join(rows))
print()
print(f"\nProcess start alone: `/bin/true` {t('true')[0]:.2f} ms; xen-vif doing nothing "
      f"(`vif-bridge add type_if=vif`, an ignored combination) {t('noop')[0]:.2f} ms.\n")
for mode in ["bridge", "route"]:
    print(f"- {mode}: stock / xen-vif = **{cyc['stock-'+mode]/cyc['xen-vif-'+mode]:.1f}x**; "
          f"xen-vif / `ip -batch` floor = **{cyc['xen-vif-'+mode]/cyc['floor-'+mode]:.2f}x**")
EOPY
{
echo
echo "## Processes exec'd and syscalls per invocation"
echo
echo "| script | command | stock processes | xen-vif processes | stock syscalls | xen-vif syscalls |"
echo "|---|---|---|---|---|---|"
for s in vif-bridge vif-route; do for c in online offline; do
    echo "| $s | $c | ${P[stock-$s-$c]} | ${P[xv-$s-$c]} | ${S[stock-$s-$c]} | ${S[xv-$s-$c]} |"
done; done
echo
echo "(processes: successful execve calls, the script itself included)"
echo
echo "## Scale: $nvifs vifs on one bridge (vif-bridge, wall time)"
echo
echo "| implementation | at a time | online, all | per vif | attached | offline, all |"
echo "|---|---|---|---|---|---|"
for impl in xv stock; do for par in 1 16; do
    on=${T[$impl-$par-on]}
    printf '| %s | %s | %d ms | %s ms | %s/%s | %d ms |\n' "$([ $impl = xv ] && echo xen-vif || echo stock)" \
        "$par" "$on" "$(awk -v a="$on" -v n="$nvifs" 'BEGIN {printf "%.2f", a / n}')" \
        "${A[$impl-$par]}" "$nvifs" "${T[$impl-$par-off]}"
done; done
echo
echo "xen-vif's three runs (ms): one at a time online ${R[xv-1-on]}, offline ${R[xv-1-off]};" \
    "16 at a time online ${R[xv-16-on]}, offline ${R[xv-16-off]}."
echo
echo "Each call is started by benches/drive.py (posix_spawn, as a toolstack forks and execs)." \
    "The same $nvifs calls doing nothing (xen-vif's ignored \`add type_if=vif\`) took" \
    "${T[noop-1]} ms (runs: ${R[noop-1]}): what starting $nvifs processes costs here."
echo
echo "## Size and memory"
echo
echo "- static binary: $(stat -c %s "$bin") bytes ($(numfmt --to=iec "$(stat -c %s "$bin")"))"
echo "- peak RSS of \`vif-bridge online\`: $rss KiB"
echo
echo "Machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)," \
    "$(. /etc/os-release; echo "$PRETTY_NAME"); $(date -u +%Y-%m-%d)."
} >> "$out/report.md"
cat "$out/report.md"
