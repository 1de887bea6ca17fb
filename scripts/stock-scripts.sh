#!/usr/bin/env bash
# Print the directory holding Debian's stock Xen hotplug scripts (package xen-utils-common),
# fetched and unpacked once into a cache keyed by the package version; install the tools
# they run (xenstore-utils, bridge-utils, net-tools). Used by the conformance tests and the
# benchmark. XEN_VIF_STOCK_SCRIPTS=/path overrides (e.g. another Xen release's scripts).
set -euo pipefail
if [ -n "${XEN_VIF_STOCK_SCRIPTS:-}" ]; then echo "$XEN_VIF_STOCK_SCRIPTS"; exit 0; fi
need=()
for p in xenstore-utils bridge-utils net-tools bsdutils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
ver=$(apt-cache policy xen-utils-common 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then
    apt-get update -qq >&2
    ver=$(apt-cache policy xen-utils-common | awk '/Candidate:/ {print $2}')
fi
cache=/var/tmp/xen-vif-stock/$ver
if [ ! -x "$cache/etc/xen/scripts/vif-bridge" ]; then
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download "xen-utils-common=$ver" >&2)
    mkdir -p "$cache"
    dpkg-deb -x "$tmp"/xen-utils-common_*.deb "$cache"
    rm -rf "$tmp"
fi
# The stock scripts append their stderr here and fail without it.
mkdir -p /var/log/xen
echo "$cache/etc/xen/scripts"
