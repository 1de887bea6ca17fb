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

# The VM tiers (tests/vm): what this host's kernel lacks, in Debian's kernel under QEMU; then
# real Xen 4.17 with xen-vif as dom0's vif scripts, driven by xl. Both print one line per check
# and `N passed, N failed`; both run even if the first fails.
echo "== kernel VM tier"
vm=0
XEN_VIF_SKIP_BUILD=1 scripts/test-vm.sh || vm=$?
echo "== Xen tier"
xen=0
XEN_VIF_SKIP_BUILD=1 scripts/test-xen.sh || xen=$?
[ "$vm" = 0 ] && [ "$xen" = 0 ]
