#!/usr/bin/env bash
# Every test xen-vif has: unit and kernel tests (each in its own network namespace), with the
# static release binary checked first. Run as root. With CI=true a missing prerequisite fails.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

echo "== build (static release binaries)"
cargo build --release --workspace --locked
bin=target/x86_64-unknown-linux-gnu/release/xen-vif
scripts/check-static.sh "$bin"

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== unit and kernel tests"
cargo test --workspace --locked

echo "== kernel VM tier (Debian's kernel under QEMU: VLAN filtering, 802.1q trunks, dummy0)"
XEN_VIF_SKIP_BUILD=1 scripts/test-vm.sh

echo "== Xen tier (Xen 4.17 + Debian dom0 under QEMU, xen-vif as dom0's vif scripts, real xl)"
# One retry: this tier boots a hypervisor under software emulation, where a guest can miss a
# timing; a second failure fails CI. Both runs print every check.
XEN_VIF_SKIP_BUILD=1 scripts/test-xen.sh || {
    echo "Xen tier failed once; running it again"
    XEN_VIF_SKIP_BUILD=1 scripts/test-xen.sh
}

echo "== Debian package: build, install into throwaway dpkg roots, divert, remove"
scripts/test-deb.sh

echo "== fuzzing (bounded smoke run of every parser)"
scripts/fuzz-smoke.sh
