#!/usr/bin/env bash
# The generated files the package ships, written by the binary itself so they always match
# its --help: target/assets/{xen-vif.8.gz, xen-vif.bash, _xen-vif, xen-vif.fish}.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/x86_64-unknown-linux-gnu/release/xen-vif}
out=target/assets
mkdir -p "$out"
"$bin" generate man | gzip -9n >"$out/xen-vif.8.gz"
"$bin" generate completions bash >"$out/xen-vif.bash"
"$bin" generate completions zsh >"$out/_xen-vif"
"$bin" generate completions fish >"$out/xen-vif.fish"
