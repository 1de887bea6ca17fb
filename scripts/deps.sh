#!/usr/bin/env bash
# Install what the test tiers need on a fresh Debian 12 machine (idempotent; root).
set -euo pipefail
pkgs=(iproute2 iputils-ping procps file strace)
# tests/nat.rs runs dnsmasq on the host side and busybox's udhcpc in the guest (the DHCP
# wiring); it reads network-nat's ruleset with nft (installed below).
pkgs+=(dnsmasq-base busybox)
# Conformance tier (tests/conformance.rs): what Debian's stock vif scripts run.
pkgs+=(xenstore-utils bridge-utils net-tools bsdutils mount)
# The anti-spoofing and NAT tests look with nft and conntrack; xen-vif uses neither.
pkgs+=(nftables conntrack)
# Open vSwitch mode (tests/openvswitch.rs): a private ovsdb-server + ovs-vswitchd per test.
pkgs+=(openvswitch-switch)
# The VM tiers (scripts/test-vm.sh, scripts/test-xen.sh); they add qemu-system-x86 from
# backports themselves (scripts/vm-lib.sh).
pkgs+=(cpio jq kmod debootstrap)
# tests/install.rs: the systemd units checked with the real `systemd-analyze verify`.
pkgs+=(systemd)
# Each tier adds what it needs here, so a clean clone can run every test.
pkgs+=(${XEN_VIF_EXTRA_PKGS:-})
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The stock scripts themselves, unpacked from Debian's package into a cache (not installed).
"$(dirname "$0")/stock-scripts.sh" >/dev/null
