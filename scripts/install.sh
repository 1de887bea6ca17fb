#!/usr/bin/env bash
# Install xen-vif and point Xen's vif script names at it, keeping the stock scripts to restore.
#
#   scripts/install.sh [BINARY]        (default: the static release build)
#   DESTDIR=/some/root scripts/install.sh   installs under that root instead of /
#
# Puts the binary at /usr/libexec/xen-vif/xen-vif (plus /usr/sbin/xen-vif and one link per
# script name there), the udev rules, the systemd units (not enabled), the man page and
# completions, then replaces
# /etc/xen/scripts/{vif-bridge,vif-route,vif-nat,vif-openvswitch,vif-setup,network-bridge,network-route,network-nat,network-prebuilt} by links to
# it, moving each stock script to /var/lib/xen-vif/stock/. Everything it creates is listed in
# /var/lib/xen-vif/installed, which scripts/uninstall.sh (also installed as
# /usr/libexec/xen-vif/uninstall.sh) reads to restore the host exactly. Running it again is
# safe: it changes nothing that is already in place, and takes a stock script that came back
# (a xen-utils-common upgrade) as the new one to restore.
# For Debian, prefer the package (dpkg-divert keeps Xen's package upgrades right).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$repo/target/x86_64-unknown-linux-gnu/release/xen-vif}
bin=$(realpath -e "$bin" 2>/dev/null) || { echo "install: no binary ${1:-at $bin} (run: cargo build --release)" >&2; exit 1; }
root=${DESTDIR:-}
root=${root%/}
if [ -n "$root" ]; then
    mkdir -p "$root"
    root=$(realpath -e "$root")
fi

libexec=/usr/libexec/xen-vif
state=/var/lib/xen-vif
manifest=$state/installed
stock=$state/stock
names=(vif-bridge vif-route vif-nat vif-openvswitch vif-setup network-bridge network-route network-nat network-prebuilt)

die() { echo "install: $*" >&2; exit 1; }

"$bin" --version >/dev/null || die "$bin does not run"
if [ -z "$root" ] && dpkg-query -W -f='${Status}' xen-vif 2>/dev/null | grep -q "ok installed"; then
    die "the xen-vif package is installed; manage it with apt/dpkg instead"
fi

# The manifest: one "kind path" line per thing created, in creation order.
pending=()
record() {
    if [ -f "$root$manifest" ]; then
        grep -qxF "$*" "$root$manifest" || echo "$*" >>"$root$manifest"
    else
        pending+=("$*")
    fi
}
recorded() { [ -f "$root$manifest" ] && awk -v p="$1" '$2 == p { f = 1 } END { exit !f }' "$root$manifest"; }

# mkdir -p that records each directory it creates, so uninstall can remove exactly those.
make_dir() {
    local d=$1 parts=() p
    while [ ! -d "$root$d" ]; do parts=("$d" "${parts[@]}"); d=$(dirname "$d"); done
    for p in "${parts[@]}"; do
        mkdir -m 755 "$root$p"
        record "dir $p"
    done
}

put_file() { # SOURCE DEST MODE
    local src=$1 dest=$2 mode=$3 tmp
    if [ -e "$root$dest" ] || [ -L "$root$dest" ]; then
        recorded "$dest" || die "$dest exists and was not installed by xen-vif; move it away first"
        cmp -s "$src" "$root$dest" && [ "$(stat -c %a "$root$dest")" = "$mode" ] && return 0
    fi
    make_dir "$(dirname "$dest")"
    tmp=$root$dest.xen-vif-new
    install -m "$mode" "$src" "$tmp"
    mv -f "$tmp" "$root$dest"
    record "file $dest"
}

put_link() { # TARGET DEST
    local target=$1 dest=$2
    if [ -e "$root$dest" ] || [ -L "$root$dest" ]; then
        [ "$(readlink "$root$dest")" = "$target" ] && { record "link $dest"; return 0; }
        recorded "$dest" || die "$dest exists and was not installed by xen-vif; move it away first"
    fi
    make_dir "$(dirname "$dest")"
    ln -sfn "$target" "$root$dest"
    record "link $dest"
}

# Xen's script name → our binary; the stock script (if any) moves to the stock directory.
take_over() { # NAME
    local name=$1 dest=/etc/xen/scripts/$1
    if [ "$(readlink "$root$dest" 2>/dev/null)" = "$libexec/xen-vif" ]; then
        recorded "$dest" || die "$dest points at xen-vif but is not in the manifest"
        return 0
    fi
    make_dir /etc/xen/scripts
    if [ -e "$root$dest" ] || [ -L "$root$dest" ]; then
        [ -f "$root$stock/$name" ] && echo "install: $dest came back; keeping it as the new stock script" >&2
        mv -f "$root$dest" "$root$stock/$name"
        sed -i "\\|^script $dest |d" "$root$manifest"
        record "script $dest stock"
    else
        recorded "$dest" || record "script $dest absent"
    fi
    ln -s "$libexec/xen-vif" "$root$dest"
}

make_dir "$stock"
[ -f "$root$manifest" ] || : >"$root$manifest"
for line in "${pending[@]}"; do record "$line"; done

put_file "$bin" "$libexec/xen-vif" 755
put_file "$repo/scripts/uninstall.sh" "$libexec/uninstall.sh" 755
for n in "${names[@]}"; do put_link xen-vif "$libexec/$n"; done
put_link ../libexec/xen-vif/xen-vif /usr/sbin/xen-vif
put_file "$repo/udev/xen-vif.rules" /etc/udev/rules.d/80-xen-vif.rules 644
# The daemon and the boot-time host network; neither is enabled (README says when to).
put_file "$repo/systemd/xen-vif.service" /etc/systemd/system/xen-vif.service 644
put_file "$repo/systemd/xen-vif-network.service" /etc/systemd/system/xen-vif-network.service 644

gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bin" generate man | gzip -9n >"$gen/xen-vif.8.gz"
"$bin" generate completions bash >"$gen/bash"
"$bin" generate completions zsh >"$gen/zsh"
"$bin" generate completions fish >"$gen/fish"
put_file "$gen/xen-vif.8.gz" /usr/share/man/man8/xen-vif.8.gz 644
put_file "$gen/bash" /usr/share/bash-completion/completions/xen-vif 644
put_file "$gen/zsh" /usr/share/zsh/vendor-completions/_xen-vif 644
put_file "$gen/fish" /usr/share/fish/vendor_completions.d/xen-vif.fish 644

for n in "${names[@]}"; do take_over "$n"; done

if [ -z "$root" ] && command -v udevadm >/dev/null; then
    udevadm control --reload 2>/dev/null || true
fi
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload 2>/dev/null || true
fi
echo "install: xen-vif $("$bin" --version | cut -d' ' -f2) in ${root:-/} ($(wc -l <"$root$manifest") entries in $manifest)"
