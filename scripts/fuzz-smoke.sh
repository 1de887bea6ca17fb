#!/usr/bin/env bash
# A bounded fuzzing run of every parser target (FUZZ_SECONDS each, default 20). Any crash
# fails; libFuzzer leaves the input in fuzz/artifacts/<target>/ — add it to the target's unit
# tests as a regression test. cargo-fuzz needs nightly flags: RUSTC_BOOTSTRAP lets the stable
# toolchain accept them; no sanitizer (-s none): the code is safe Rust, we look for panics.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
for t in vlan_spec guest_addrs invocation; do
    work=$(mktemp -d)
    echo "fuzz: $t for ${secs}s"
    if ! cargo fuzz run -s none "$t" "$work" "seeds/$t" -- -max_total_time="$secs" > "$work.log" 2>&1; then
        tail -30 "$work.log"
        echo "fuzz: $t FAILED (the input is in fuzz/artifacts/$t)"
        exit 1
    fi
    grep -E '^Done' "$work.log" || true
    rm -rf "$work" "$work.log"
done
