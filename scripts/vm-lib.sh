# Shared by scripts/test-vm.sh and scripts/test-xen.sh (sourced, not run): host packages, the
# QEMU from bookworm-backports, Debian packages unpacked into a cache under /var/tmp keyed by
# their versions, initramfs packing, and reading a guest's verdict from its serial console.
# shellcheck shell=bash

VM_CACHE=${XEN_VIF_VM_CACHE:-/var/tmp/xen-vif-vm}
REL=$PWD/target/x86_64-unknown-linux-gnu/release

vm_log() { echo "$(basename "$0"): $*" >&2; }
vm_die() { vm_log "$*"; exit 1; }

# Host packages the VM tiers need: scripts/deps.sh (cpio, jq, kmod, debootstrap) and QEMU.
vm_host_deps() {
    scripts/deps.sh
    vm_ensure_qemu
}

# The stable release's archive URI, read from the machine's own apt configuration (deb822 or
# one-line format), so no host name is written anywhere.
vm_debian_uri() {
    local codename=$1 uri
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri=$(awk -v c="$codename" '
            /^URIs:/ { u = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c) found = u }
            /^$/ { u = "" }
            END { print found }' /etc/apt/sources.list.d/debian.sources)
    fi
    if [ -z "${uri:-}" ] && [ -f /etc/apt/sources.list ]; then
        uri=$(awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }' /etc/apt/sources.list)
    fi
    [ -n "${uri:-}" ] || vm_die "no apt source for $codename in /etc/apt (needed for $codename-backports)"
    echo "$uri"
}

# qemu-system-x86 from bookworm-backports: the machine's qemu-utils already comes from there,
# and bookworm's own qemu-system-x86 conflicts with it.
vm_ensure_qemu() {
    command -v qemu-system-x86_64 >/dev/null && return 0
    local codename uri list=/etc/apt/sources.list.d/xen-vif-backports.sources
    codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
    if ! grep -rqs "$codename-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        uri=$(vm_debian_uri "$codename")
        vm_log "adding $codename-backports (from $uri) for qemu-system-x86"
        cat > "$list" <<EOF
Types: deb
URIs: $uri
Suites: $codename-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -t "$codename-backports" qemu-system-x86 >/dev/null
    command -v qemu-system-x86_64 >/dev/null || vm_die "qemu-system-x86_64 missing after install"
}

# apt-cache answers (~1 s each) remembered until the package lists change.
vm_apt_memo() {
    local stamp f
    stamp=$(stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null | md5sum | cut -c1-16)
    f=$VM_CACHE/apt-memo/$(echo "$stamp $*" | md5sum | cut -c1-16)
    if [ ! -s "$f" ]; then
        mkdir -p "$VM_CACHE/apt-memo"
        "$@" > "$f.tmp" 2>/dev/null || true
        mv "$f.tmp" "$f"
    fi
    cat "$f"
}

# The candidate version of a Debian package (apt-get update has run in vm_ensure_qemu or deps).
vm_pkg_version() {
    local v
    v=$(vm_apt_memo apt-cache policy "$1" | awk '/Candidate:/ { print $2 }')
    if [ -z "$v" ] || [ "$v" = "(none)" ]; then
        apt-get update -qq
        v=$(vm_apt_memo apt-cache policy "$1" | awk '/Candidate:/ { print $2 }')
    fi
    [ -n "$v" ] && [ "$v" != "(none)" ] || vm_die "no candidate version for Debian package $1"
    echo "$v"
}

# The version of a package in one suite (debootstrap installs from the release suite only).
vm_suite_version() {
    local v
    v=$(vm_apt_memo apt-cache madison "$1" | awk -F' [|] ' -v s="$2/main" 'index($3, " " s " ") { print $2; exit }')
    [ -n "$v" ] || vm_die "no version of Debian package $1 in $2"
    echo "$v"
}

# Debian's kernel image package (what linux-image-amd64 depends on), e.g. linux-image-6.1.0-41-amd64.
vm_kernel_pkg() {
    vm_apt_memo apt-cache depends linux-image-amd64 |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# Unpack a Debian package (not installed) into $VM_CACHE/pkg/<name>_<version>; prints the dir.
vm_unpack() {
    local pkg=$1 ver dir tmp old
    ver=$(vm_pkg_version "$pkg")
    dir=$VM_CACHE/pkg/${pkg}_${ver//:/%}
    if [ ! -f "$dir/.done" ]; then
        mkdir -p "$VM_CACHE/pkg"
        tmp=$(mktemp -d "$VM_CACHE/tmp.XXXXXX")
        (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg=$ver" >/dev/null) ||
            vm_die "apt-get download $pkg=$ver failed"
        rm -rf "$dir"
        mkdir -p "$dir"
        dpkg-deb -x "$tmp"/*.deb "$dir"
        rm -rf "$tmp"
        touch "$dir/.done"
        # Older versions of the same package are of no more use.
        for old in "$VM_CACHE/pkg/${pkg}"_*; do
            [ "$old" = "$dir" ] || rm -rf "$old"
        done
    fi
    echo "$dir"
}

# vm_prune DIR KEEP: remove the cached images in DIR other than KEEP (older package versions).
vm_prune() {
    local d
    for d in "$1"/*; do
        [ "$d" = "$2" ] || [ ! -d "$d" ] || { vm_log "removing the old cache $d"; rm -rf "$d"; }
    done
}

# Copy a host program and the shared libraries it needs (ldd) into an initramfs tree.
vm_copy_with_libs() {
    local root=$1 prog lib
    shift
    for prog in "$@"; do
        mkdir -p "$root$(dirname "$prog")"
        cp -L "$prog" "$root$prog"
        for lib in $(ldd "$prog" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
            [ -f "$root$lib" ] && continue
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
    done
}

# Kernel modules with their dependencies, in load order, from a kernel unpacked by vm_unpack:
# copies the .ko files into ROOT and prints their paths (relative to ROOT) one per line.
vm_modules() {
    local kroot=$1 kver=$2 root=$3 m path
    shift 3
    [ -f "$kroot/lib/modules/$kver/modules.dep" ] || depmod -b "$kroot" "$kver"
    for m in "$@"; do
        # insmod lines in dependency order; builtin modules print "builtin".
        modprobe -d "$kroot" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
    done | awk '!seen[$0]++' | while read -r path; do
        mkdir -p "$root$(dirname "${path#"$kroot"}")"
        cp "$path" "$root${path#"$kroot"}"
        echo "${path#"$kroot"}"
    done
}

# newc cpio of a directory (uncompressed: decompressing under TCG is slow).
vm_cpio() { (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) > "$2"; }

# vm_boot TIMEOUT LOG DEAD-REGEX QEMU-ARGS...: boot QEMU, the serial console going to LOG.
# Ends QEMU at TIMEOUT seconds, or soon after the console shows DEAD-REGEX (a guest that can no
# longer finish, e.g. Xen halted after dom0 crashed). Returns QEMU's status (124 = timeout).
vm_boot() {
    local timeout=$1 log=$2 dead=$3 pid rc=0 waited=0
    shift 3
    : > "$log"
    qemu-system-x86_64 -machine pc -accel "${XEN_VIF_QEMU_ACCEL:-tcg,thread=multi}" -cpu "${XEN_VIF_QEMU_CPU:-max}" -smp 2 -nographic \
        -no-reboot -nic none -serial "file:$log" -monitor none -display none -vga none "$@" \
        </dev/null >/dev/null 2>"$log.qemu" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$waited" -ge "$timeout" ]; then
            vm_log "timeout after $timeout s: stopping QEMU"
            kill "$pid"; wait "$pid" 2>/dev/null; return 124
        fi
        if grep -Eq "$dead" "$log"; then
            vm_log "the guest cannot finish ($(grep -Eo "$dead" "$log" | head -n 1)): stopping QEMU"
            sleep 2; kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 125
        fi
        sleep 1
        waited=$((waited + 1))
    done
    wait "$pid" || rc=$?
    return "$rc"
}

# Read the checks a guest printed on its console: lines `CHECK ok NAME` / `CHECK FAIL NAME: why`,
# and `CHECKS-DONE` at the end. Every name in EXPECTED must be reported ok. Prints one line per
# check and the final `N passed, N failed` line; returns non-zero on any failure.
vm_verdict() {
    local log=$1 boot_rc=$2 expected=$3 tier=$4
    local passed=0 failed=0 name status why
    # The console has \r\n line ends; a check line is `CHECK ok|FAIL NAME[: why]`.
    tr -d '\r' < "$log" | awk '$1 == "CHECK" && ($2 == "ok" || $2 == "FAIL") {
        name = $3; sub(/:$/, "", name); why = $0; sub(/^CHECK [^ ]+ [^ ]+ ?/, "", why)
        print $2 "\t" name "\t" why }' > "$log.checks"
    while read -r name; do
        [ -z "$name" ] && continue
        status=$(awk -F'\t' -v n="$name" '$2 == n { s = $1 } END { print s }' "$log.checks")
        why=$(awk -F'\t' -v n="$name" '$2 == n { w = $3 } END { print w }' "$log.checks")
        case "$status" in
            ok) echo "ok    $tier: $name"; passed=$((passed + 1)) ;;
            FAIL) echo "FAIL  $tier: $name: $why"; failed=$((failed + 1)) ;;
            *) echo "FAIL  $tier: $name: not reported"; failed=$((failed + 1)) ;;
        esac
    done <<< "$expected"
    # A check the guest reported that the list does not know is a failure too.
    while IFS=$'\t' read -r status name why; do
        grep -qxF "$name" <<< "$expected" && continue
        echo "FAIL  $tier: $name: reported ($status) but not in the list of checks"
        failed=$((failed + 1))
    done < "$log.checks"
    tr -d '\r' < "$log" > "$log.txt"
    if ! grep -qx CHECKS-DONE "$log.txt"; then
        echo "FAIL  $tier: the guest did not finish (QEMU status $boot_rc$([ "$boot_rc" = 124 ] && echo ", timeout")$([ "$boot_rc" = 125 ] && echo ", guest dead"))"
        failed=$((failed + 1))
    fi
    echo "$tier: $passed passed, $failed failed"
    [ "$failed" = 0 ]
}

# vm_report LOG BOOT-STATUS CHECKS-FILE TIER: keep the console if asked (XEN_VIF_VM_CONSOLE=FILE),
# print the verdict, and on failure the console's tail; non-zero on failure.
vm_report() {
    [ -z "${XEN_VIF_VM_CONSOLE:-}" ] || cp "$1" "$XEN_VIF_VM_CONSOLE"
    vm_verdict "$1" "$2" "$(grep -v '^#' "$3")" "$4" && return 0
    echo "---- $4 console (tail) ----"
    tail -n 100 "$1.txt"
    return 1
}
