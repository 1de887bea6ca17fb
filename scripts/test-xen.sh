#!/usr/bin/env bash
# The real Xen tier: Xen 4.17 with a Debian dom0 under QEMU (TCG), xen-vif installed in dom0 as
# Xen's vif scripts, driven by the real `xl` (tests/vm/xen). dom0's root is a debootstrap image
# packed as an uncompressed cpio, cached under /var/tmp keyed by package versions; the binary
# under test, the checks and the domU's initramfs travel in a small cpio appended per run.
# Usage: scripts/test-xen.sh   (root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vm-lib.sh
[ "$(id -u)" = 0 ] || vm_die "run as root"

vm_host_deps debootstrap
[ "${XEN_VIF_SKIP_BUILD:-}" = 1 ] || cargo build --release --workspace --locked --quiet
scripts/check-static.sh "$REL/xen-vif" >/dev/null

dom0_modules=(xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc xen-netback bridge 8021q dummy)
domu_modules=(xen-netfront)
dom0_pkgs=kmod,iproute2,iputils-ping,procps,jq,xen-utils-4.17,xenstore-utils,xen-hypervisor-4.17-amd64
kpkg=$(vm_kernel_pkg)
[ -n "$kpkg" ] || vm_die "cannot tell which kernel linux-image-amd64 depends on"
kdir=$(vm_unpack "$kpkg")
kver=$(ls "$kdir/lib/modules")
bbdir=$(vm_unpack busybox-static)
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
# What decides the image: the packages' versions and this recipe.
recipe=$(echo "${dom0_modules[*]} ${domu_modules[*]} $dom0_pkgs" | md5sum | cut -c1-8)
key="${kpkg}_$(vm_pkg_version "$kpkg")-xen_$(vm_pkg_version xen-utils-4.17)"
key+="-bb_$(vm_pkg_version busybox-static)-$recipe"
img=$VM_CACHE/xen-tier/${key//:/%}

build_image() {
    local root=$img/root
    rm -rf "$img"
    mkdir -p "$img"
    vm_log "debootstrap of dom0 ($codename, $dom0_pkgs)"
    debootstrap --variant=minbase --include="$dom0_pkgs" "$codename" "$root" \
        "$(vm_debian_uri "$codename")" > "$img/debootstrap.log" 2>&1 ||
        { tail -n 20 "$img/debootstrap.log" >&2; vm_die "debootstrap failed (log: $img/debootstrap.log)"; }
    zcat "$root"/boot/xen-4.17-amd64.gz > "$img/xen"
    cp "$kdir/boot/vmlinuz-$kver" "$img/vmlinuz"
    # dom0's kernel modules (with their dependencies) and a modules.dep for modprobe.
    vm_modules "$kdir" "$kver" "$root" "${dom0_modules[@]}" >/dev/null
    cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$root/lib/modules/$kver/"
    depmod -b "$root" "$kver"
    # The domU: the same kernel, busybox and netfront; its /init comes with each run.
    mkdir -p "$root/var/lib/xvt/domu/bin" "$root/var/lib/xvt/domu/etc"
    cp "$kdir/boot/vmlinuz-$kver" "$root/var/lib/xvt/vmlinuz"
    cp "$bbdir/bin/busybox" "$root/var/lib/xvt/domu/bin/busybox"
    vm_modules "$kdir" "$kver" "$root/var/lib/xvt/domu" "${domu_modules[@]}" \
        > "$root/var/lib/xvt/domu/etc/vm-modules"
    # Smaller is faster to load under TCG: no docs, locales, apt lists or caches.
    rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/boot/*
    vm_cpio "$root" "$img/dom0.cpio.tmp"
    mv "$img/dom0.cpio.tmp" "$img/dom0.cpio"
    rm -rf "$root"
}
if [ ! -f "$img/dom0.cpio" ]; then
    start=$SECONDS
    build_image
    vm_log "dom0 image built in $((SECONDS - start)) s: $(du -h "$img/dom0.cpio" | cut -f1)"
fi
