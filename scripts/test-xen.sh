#!/usr/bin/env bash
# The real Xen tier: Xen 4.17 with a Debian dom0 under QEMU (TCG), xen-vif installed in dom0 as
# Xen's vif scripts, driven by the real `xl` (tests/vm/xen); Open vSwitch from the host
# (scripts/deps.sh installs openvswitch-switch). dom0's root is a debootstrap image
# packed as an uncompressed cpio, cached under /var/tmp keyed by package versions; the binary
# under test, the checks and the domU's initramfs travel in a small cpio appended per run.
# Usage: scripts/test-xen.sh   (root; installs what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/vm-lib.sh
[ "$(id -u)" = 0 ] || vm_die "run as root"

vm_host_deps
[ "${XEN_VIF_SKIP_BUILD:-}" = 1 ] || cargo build --release --workspace --locked --quiet
scripts/check-static.sh "$REL/xen-vif" >/dev/null

# veth and the nf_tables NAT modules (with nf_conntrack and nf_nat): checks/80-nat.sh;
# nf_conntrack_netlink: offline forgets a guest's connections over ctnetlink (as on any dom0,
# where the kernel loads it on first use).
dom0_modules=(xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc xen-netback bridge 8021q dummy nf_tables
    veth nft_chain_nat nft_masq nf_conntrack_netlink)
domu_modules=(xen-netfront)
# The driver domain (checks/95-driver-domain.sh): netback, its bridge and the vif filter.
drv_modules=(xen-netback bridge nf_tables)
# nftables: the checks read the rulesets (and the NAT check's outside counts with it).
dom0_pkgs=kmod,iproute2,iputils-ping,procps,jq,nftables,xen-utils-4.17,xenstore-utils,xen-hypervisor-4.17-amd64
kpkg=$(vm_kernel_pkg)
[ -n "$kpkg" ] || vm_die "cannot tell which kernel linux-image-amd64 depends on"
kdir=$(vm_unpack "$kpkg")
kver=$(ls "$kdir/lib/modules")
bbdir=$(vm_unpack busybox-static)
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
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
    # The domUs' kernel: the same one (their small initramfs comes with each run).
    mkdir -p "$root/var/lib/xvt"
    cp "$kdir/boot/vmlinuz-$kver" "$root/var/lib/xvt/vmlinuz"
    # Smaller is faster to load under TCG: no docs, locales, apt lists or caches.
    rm -rf "$root"/usr/share/{doc,man,info,locale} "$root"/var/lib/apt/lists/* \
        "$root"/var/cache/apt/* "$root"/var/cache/debconf/*-old "$root"/boot/*
    vm_cpio "$root" "$img/dom0.cpio.tmp"
    mv "$img/dom0.cpio.tmp" "$img/dom0.cpio"
    rm -rf "$root"
}
# What decides the image: the packages' versions and the recipe above.
recipe=$(echo "${dom0_modules[*]} $dom0_pkgs $(declare -f build_image)" | md5sum | cut -c1-8)
key="${kpkg}_$(vm_pkg_version "$kpkg")-xen_$(vm_suite_version xen-utils-4.17 "$codename")-$recipe"
img=$VM_CACHE/xen-tier/${key//:/%}
if [ ! -f "$img/dom0.cpio" ]; then
    start=$SECONDS
    build_image
    vm_log "dom0 image built in $((SECONDS - start)) s: $(du -h "$img/dom0.cpio" | cut -f1)"
    vm_prune "$VM_CACHE/xen-tier" "$img"
fi

# This run: xen-vif, the checks and the initramfs of the test domUs and of the driver domain,
# appended to the cached dom0 image.
run=$(mktemp -d /tmp/xen-vif-xen.XXXXXX)
trap 'rm -rf "$run"' EXIT
d=$run/domu
mkdir -p "$d/bin" "$d/sbin" "$d/etc" "$d/proc" "$d/sys" "$d/dev" "$d/tmp"
cp "$bbdir/bin/busybox" "$d/bin/busybox"
vm_modules "$kdir" "$kver" "$d" "${domu_modules[@]}" > "$d/etc/vm-modules"
install -m 755 tests/vm/xen/domu-init "$d/init"
printf '#!/bin/busybox sh\n# xl shutdown: the kernel runs /sbin/poweroff; init is a script.\nexec /bin/busybox poweroff -f\n' > "$d/sbin/poweroff"
chmod 755 "$d/sbin/poweroff"
# The driver domain's: the same busybox, netback instead of netfront, and xen-vif.
v=$run/drv
cp -a "$d" "$v"
rm -rf "$v/lib" "$v/init"
vm_modules "$kdir" "$kver" "$v" "${drv_modules[@]}" > "$v/etc/vm-modules"
install -m 755 tests/vm/xen/driver-init "$v/init"
install -D -m 755 "$REL/xen-vif" "$v/usr/lib/xen-vif/xen-vif"
r=$run/root
mkdir -p "$r/xvt" "$r/usr/lib/xen-vif"
vm_cpio "$d" "$r/xvt/domu.cpio"
vm_cpio "$v" "$r/xvt/drv.cpio"
cp "$REL/xen-vif" "$r/usr/lib/xen-vif/xen-vif"
install -m 755 tests/vm/xen/init "$r/xvt-init"
install -m 755 tests/vm/xen/vif-record tests/vm/xen/vif-vlan "$r/xvt/"
cp tests/vm/lib.sh "$r/xvt/lib.sh"
cp tests/vm/xen/xl.sh "$r/xvt/xl.sh"
cp -r tests/vm/xen/checks "$r/xvt/checks"
# Open vSwitch for checks/70-openvswitch.sh: the host's daemons with their own libraries and
# loader under /xvt/ovs (dom0's cached image stays as it is), and the kernel's openvswitch module
# with its dependencies (load order in /xvt/ovs/modules).
o=$r/xvt/ovs
mkdir -p "$o/bin" "$o/lib"
for p in /usr/sbin/ovsdb-server /usr/sbin/ovs-vswitchd /usr/bin/ovsdb-tool /usr/bin/ovs-vsctl; do
    cp -L "$p" "$o/bin/"
    for lib in $(ldd "$p" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
        cp -L "$lib" "$o/lib/"
    done
done
cp /usr/share/openvswitch/vswitch.ovsschema "$o/"
vm_modules "$kdir" "$kver" "$o/mod" openvswitch > "$o/modules"
vm_cpio "$r" "$run/run.cpio"
cat "$img/dom0.cpio" "$run/run.cpio" > "$run/initrd"

vm_log "booting Xen 4.17 + dom0 ($kver) under QEMU TCG"
start=$SECONDS
rc=0
# Modules in -initrd are comma-separated, their arguments after a space.
# Under TCG, `-cpu max` let dom0's libc take code paths QEMU emulates wrongly (an xl segfault
# was seen); the plain x86-64 model ran clean in repeated runs.
export XEN_VIF_QEMU_CPU=${XEN_VIF_QEMU_CPU:-qemu64}
vm_boot "${XEN_VIF_XEN_TIMEOUT:-900}" "$run/console.log" "Dom0 crashed|Dom0 halted|Kernel panic" -m 2048 -kernel "$img/xen" \
    -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 noreboot" \
    -initrd "$img/vmlinuz console=hvc0 earlyprintk=xen rdinit=/xvt-init quiet${XEN_VIF_XEN_CHECKS:+ xvt.checks=$XEN_VIF_XEN_CHECKS},$run/initrd" || rc=$?
vm_log "Xen ran $((SECONDS - start)) s (QEMU status $rc)"
vm_report "$run/console.log" "$rc" tests/vm/xen/CHECKS xen || exit 1
