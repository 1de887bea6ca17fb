#!/usr/bin/env bash
# The binary must run on any x86_64 dom0: no dynamic loader, no shared libraries.
set -euo pipefail
bin=${1:?usage: check-static.sh BINARY}
if file "$bin" | grep -q "dynamically linked"; then
    echo "FAIL: $bin is dynamically linked" >&2; exit 1
fi
out=$(ldd "$bin" 2>&1 || true)
case "$out" in
    *"not a dynamic executable"*|*"statically linked"*) ;;
    *) echo "FAIL: ldd $bin: $out" >&2; exit 1 ;;
esac
size=$(stat -c %s "$bin")
echo "static: $bin ($size bytes): $out"
