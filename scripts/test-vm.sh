#!/usr/bin/env bash
# The kernel VM tier: what this host's kernel lacks (dummy links, 802.1q, bridge VLAN
# filtering, Open vSwitch's kernel datapath) proven in Debian's own kernel under QEMU (TCG). The initramfs holds busybox, the
# host's ip/bridge/jq/nft with their libraries, the static xen-vif and test-xenstored, and the
# guest checks of tests/vm/kernel; the guest prints one line per check on its serial console.
# Kernel, busybox and the base image are cached under /var/tmp keyed by package versions.
# Usage: scripts/test-vm.sh   (root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vm-lib.sh
[ "$(id -u)" = 0 ] || vm_die "run as root"

vm_host_deps
[ "${XEN_VIF_SKIP_BUILD:-}" = 1 ] || cargo build --release --workspace --locked --quiet
for b in xen-vif test-xenstored; do scripts/check-static.sh "$REL/$b" >/dev/null; done

# nf_tables: every online installs the anti-spoofing chain (it fails closed without it);
# nft_chain_nat and nft_masq (with nf_nat and nf_conntrack): network-nat's masquerading;
# nf_conntrack_netlink: offline forgets a guest's connections over ctnetlink.
modules=(veth bridge 8021q dummy openvswitch nf_tables nft_chain_nat nft_masq nf_conntrack_netlink)
ovs=(/usr/sbin/ovsdb-server /usr/sbin/ovs-vswitchd /usr/bin/ovsdb-tool /usr/bin/ovs-vsctl)
kpkg=$(vm_kernel_pkg)
[ -n "$kpkg" ] || vm_die "cannot tell which kernel linux-image-amd64 depends on"
kdir=$(vm_unpack "$kpkg")
kver=$(ls "$kdir/lib/modules")
bbdir=$(vm_unpack busybox-static)
key="${kpkg}_$(vm_pkg_version "$kpkg")-bb_$(vm_pkg_version busybox-static)"
key+="-ip_$(dpkg-query -W -f='${Version}' iproute2)-jq_$(dpkg-query -W -f='${Version}' jq)"
key+="-ovs_$(dpkg-query -W -f='${Version}' openvswitch-switch)"
key+="-nft_$(dpkg-query -W -f='${Version}' nftables)"
key+="-$(echo "${modules[*]}" | md5sum | cut -c1-8)"
base=$VM_CACHE/kernel-tier/${key//:/%}
if [ ! -f "$base/base.cpio" ]; then
    vm_log "building the base image ($key)"
    rm -rf "$base"
    mkdir -p "$base/root/bin" "$base/root/etc"
    cp "$bbdir/bin/busybox" "$base/root/bin/busybox"
    vm_modules "$kdir" "$kver" "$base/root" "${modules[@]}" > "$base/root/etc/vm-modules"
    # nft: the NAT check reads rulesets and counts what its "outside" namespace receives.
    vm_copy_with_libs "$base/root" /usr/sbin/ip /usr/sbin/bridge /usr/bin/jq /usr/sbin/nft "${ovs[@]}"
    mkdir -p "$base/root/usr/share/openvswitch"
    cp /usr/share/openvswitch/vswitch.ovsschema "$base/root/usr/share/openvswitch/"
    cp "$kdir/boot/vmlinuz-$kver" "$base/vmlinuz"
    vm_cpio "$base/root" "$base/base.cpio.tmp"
    mv "$base/base.cpio.tmp" "$base/base.cpio"
    rm -rf "$base/root"
    vm_prune "$VM_CACHE/kernel-tier" "$base"
fi

# This run: the binaries under test and the checks, appended to the cached base image.
run=$(mktemp -d /tmp/xen-vif-vm.XXXXXX)
trap 'rm -rf "$run"' EXIT
r=$run/root
mkdir -p "$r/vm" "$r/etc/xen/scripts" "$r/usr/lib/xen-vif" "$r/usr/bin"
cp "$REL/xen-vif" "$r/usr/lib/xen-vif/xen-vif"
cp "$REL/test-xenstored" "$r/usr/bin/test-xenstored"
for s in vif-bridge vif-route vif-nat vif-openvswitch vif-setup network-bridge network-route network-nat; do
    ln -s /usr/lib/xen-vif/xen-vif "$r/etc/xen/scripts/$s"
done
install -m 755 tests/vm/kernel/init "$r/init"
cp tests/vm/lib.sh tests/vm/kernel/xs.sh "$r/vm/"
cp -r tests/vm/kernel/checks "$r/vm/checks"
vm_cpio "$r" "$run/run.cpio"
cat "$base/base.cpio" "$run/run.cpio" > "$run/initrd"
# XEN_VIF_VM_OVERLAY=DIR: files that replace the image's (e.g. a stand-in script to debug a check).
if [ -n "${XEN_VIF_VM_OVERLAY:-}" ]; then
    vm_cpio "$XEN_VIF_VM_OVERLAY" "$run/overlay.cpio"
    cat "$run/overlay.cpio" >> "$run/initrd"
fi

vm_log "booting $kpkg ($kver) under QEMU TCG"
start=$SECONDS
rc=0
vm_boot "${XEN_VIF_VM_TIMEOUT:-300}" "$run/console.log" "Kernel panic" -m 512 -kernel "$base/vmlinuz" \
    -initrd "$run/initrd" -append "console=ttyS0 panic=-1 quiet" || rc=$?
vm_log "guest ran $((SECONDS - start)) s (QEMU status $rc)"
vm_report "$run/console.log" "$rc" tests/vm/kernel/CHECKS vm || exit 1
