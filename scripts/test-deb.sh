#!/usr/bin/env bash
# Build the .deb (cargo-deb) and prove it in throwaway dpkg roots (`dpkg --root`, maintainer
# scripts run chrootless with DPKG_ROOT, as dpkg does for such roots): the files it installs,
# the diversions of Xen's script names, a xen-utils-common upgrade landing behind the
# diversion, and removal putting the stock scripts back byte for byte.
#
# The stock scripts come from Debian's real xen-utils-common, repacked without its maintainer
# scripts and dependencies (they would act on this host, not on the throwaway root).
# Run as root (dpkg). Prints one "ok"/"FAIL" line per check and "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
check() { # DESCRIPTION COMMAND...
    local what=$1
    shift
    if "$@"; then
        echo "ok   $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        failed=$((failed + 1))
    fi
}

work=target/deb-test
mkdir -p "$work"
work=$(realpath "$work")

echo "== build the package"
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
cargo build --release --locked
bin=target/x86_64-unknown-linux-gnu/release/xen-vif
scripts/gen-assets.sh "$bin"
deb=$work/xen-vif.deb
cargo deb --no-build --target x86_64-unknown-linux-gnu --output "$deb" >/dev/null

echo "== stock xen-utils-common (Debian's, repacked without maintainer scripts)"
xuc=$(ls "$work"/xen-utils-common_*.deb 2>/dev/null | head -1 || true)
if [ -z "$xuc" ]; then
    (cd "$work" && { apt-get download xen-utils-common >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get download xen-utils-common >/dev/null; }; })
    xuc=$(ls "$work"/xen-utils-common_*.deb | head -1)
fi
# stand-in VERSION-SUFFIX EXTRA-LINE: the real package's files, conffiles and version (+suffix),
# with EXTRA-LINE appended to vif-bridge (to tell an upgrade's file from the first one).
stand_in() {
    local d=$work/xuc-$1
    rm -rf "$d"
    dpkg-deb -R "$xuc" "$d"
    rm -f "$d"/DEBIAN/{preinst,postinst,prerm,postrm}
    sed -i -e '/^Depends:/d' -e "s/^Version: .*/&$1/" "$d/DEBIAN/control"
    [ -z "$2" ] || echo "$2" >>"$d/etc/xen/scripts/vif-bridge"
    (cd "$d" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort |
        xargs md5sum >DEBIAN/md5sums)
    dpkg-deb --root-owner-group -b "$d" "$work/xuc$1.deb" >/dev/null
    echo "$work/xuc$1.deb"
}
xuc1=$(stand_in "" "")
xuc2=$(stand_in "+upgrade1" "# upgraded by the test")

new_root() {
    local r
    r=$(mktemp -d "$work/root.XXXXXX")
    mkdir -p "$r/var/lib/dpkg/info" "$r/var/lib/dpkg/updates" "$r/var/lib/dpkg/triggers"
    : >"$r/var/lib/dpkg/status"
    echo "$r"
}
dpkg_in() { # ROOT ARGS...
    local r=$1
    shift
    # --force-depends: the roots have no dpkg of their own to satisfy xen-vif's Depends on it.
    dpkg --root="$r" --force-script-chrootless --force-depends --log=/dev/null "$@" >/dev/null
}

names="vif-bridge vif-route vif-nat vif-openvswitch vif-setup network-bridge network-route network-nat network-prebuilt"
stock="vif-bridge vif-route vif-openvswitch vif-setup"
hashes() { # ROOT SUFFIX → "name sha256" for the stock scripts at /etc/xen/scripts/NAME+SUFFIX
    for n in $stock; do echo "$n $(sha256sum <"$1/etc/xen/scripts/$n$2" | cut -d' ' -f1)"; done
}
packaged() { # DEB → the same for the package's own files
    local x
    x=$(mktemp -d "$work/x.XXXXXX")
    dpkg-deb -x "$1" "$x"
    hashes "$x" ""
    rm -rf "$x"
}
links_to_xen_vif() {
    for n in $names; do
        [ "$(readlink "$1/etc/xen/scripts/$n")" = /usr/libexec/xen-vif/xen-vif ] || return 1
    done
}
diversions() { dpkg-divert --root="$1" --list | sort; }
expected_diversions() {
    for n in $names; do
        echo "diversion of /etc/xen/scripts/$n to /etc/xen/scripts/$n.distrib by xen-vif"
    done | sort
}
no_xen_vif_files() {
    [ ! -e "$1/usr/libexec/xen-vif" ] && [ ! -L "$1/usr/sbin/xen-vif" ] &&
        [ ! -e "$1/lib/udev/rules.d/80-xen-vif.rules" ] && [ ! -e "$1/usr/share/man/man8/xen-vif.8.gz" ] &&
        [ ! -e "$1/lib/systemd/system/xen-vif.service" ]
}
same() { [ "$1" = "$2" ] || { diff <(echo "$1") <(echo "$2") >&2; return 1; }; }

echo "== lintian (Debian's policy checker): no error or warning, overrides only with a reason"
if ! command -v lintian >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lintian >/dev/null
fi
lint=$(lintian --show-overrides "$deb" 2>&1 || true)
[ -z "$lint" ] || echo "$lint"
check "lintian: no errors or warnings" sh -c "! echo \"\$1\" | grep -q '^[EW]: '" _ "$lint"
check "lintian: the static binary is the only override" \
    same "$(echo "$lint" | grep '^O: ' | sed 's/^O: xen-vif: //')" \
    "statically-linked-binary [usr/libexec/xen-vif/xen-vif]"
check "lintian: every override says why" sh -c \
    "dpkg-deb --fsys-tarfile '$deb' | tar -xOf - ./usr/share/lintian/overrides/xen-vif | grep -B1 '^xen-vif:' | head -1 | grep -q '^#'"
check "machine-readable copyright" sh -c \
    "dpkg-deb --fsys-tarfile '$deb' | tar -xOf - ./usr/share/doc/xen-vif/copyright | head -1 | grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/'"

echo "== Xen first, then xen-vif; a xen-utils-common upgrade; removal"
r=$(new_root)
dpkg_in "$r" -i "$xuc1"
before=$(hashes "$r" "")
check "stock scripts installed from xen-utils-common" same "$before" "$(packaged "$xuc1")"
dpkg_in "$r" -i "$deb"
check "binary installed byte for byte" cmp -s "$bin" "$r/usr/libexec/xen-vif/xen-vif"
check "/usr/sbin/xen-vif runs" test "$("$r/usr/sbin/xen-vif" --version)" = "xen-vif $(cargo pkgid | sed 's/.*[#@]//')"
check "personality links in /usr/libexec/xen-vif" test "$(readlink "$r/usr/libexec/xen-vif/vif-setup")" = xen-vif
check "udev rules" cmp -s udev/xen-vif.rules "$r/lib/udev/rules.d/80-xen-vif.rules"
check "systemd units" sh -c "cmp -s systemd/xen-vif.service '$r/lib/systemd/system/xen-vif.service' && cmp -s systemd/xen-vif-network.service '$r/lib/systemd/system/xen-vif-network.service'"
check "units not enabled by the package" test ! -e "$r/etc/systemd/system/multi-user.target.wants/xen-vif.service" -a ! -e "$r/etc/systemd/system/multi-user.target.wants/xen-vif-network.service"
check "man page" sh -c "zcat '$r/usr/share/man/man8/xen-vif.8.gz' | grep -q 'check\\\\-config'"
check "bash completion" grep -q check-config "$r/usr/share/bash-completion/completions/xen-vif"
check "zsh and fish completions" test -s "$r/usr/share/zsh/vendor-completions/_xen-vif" -a -s "$r/usr/share/fish/vendor_completions.d/xen-vif.fish"
check "Xen's script names link to xen-vif" links_to_xen_vif "$r"
check "five diversions by xen-vif" same "$(diversions "$r")" "$(expected_diversions)"
check "stock scripts kept as NAME.distrib" same "$(hashes "$r" .distrib)" "$before"
dpkg_in "$r" -i "$xuc2"
check "xen-utils-common upgrade: links untouched" links_to_xen_vif "$r"
check "xen-utils-common upgrade: new stock behind the diversion" same "$(hashes "$r" .distrib)" "$(packaged "$xuc2")"
dpkg_in "$r" -i "$deb"
check "reinstall (upgrade path) keeps links and diversions" sh -c "$(declare -f links_to_xen_vif); links_to_xen_vif '$r'"
dpkg_in "$r" -r xen-vif
check "removal: stock scripts back, byte for byte" same "$(hashes "$r" "")" "$(packaged "$xuc2")"
check "removal: no diversions left" same "$(diversions "$r")" ""
check "removal: no .distrib left" sh -c "! ls '$r'/etc/xen/scripts/*.distrib 2>/dev/null"
check "removal: network-bridge/route gone (Xen has none)" test ! -e "$r/etc/xen/scripts/network-bridge" -a ! -L "$r/etc/xen/scripts/network-route"
check "removal: package files gone" no_xen_vif_files "$r"
check "xen-utils-common verifies clean" test -z "$(dpkg --root="$r" --verify xen-utils-common)"
dpkg_in "$r" --purge xen-vif
check "purged" sh -c "! dpkg --root='$r' -s xen-vif >/dev/null 2>&1"
rm -rf "$r"

echo "== xen-vif first, then Xen"
r=$(new_root)
dpkg_in "$r" -i "$deb"
check "links made without Xen installed" links_to_xen_vif "$r"
dpkg_in "$r" -i "$xuc1"
check "Xen installed later lands behind the diversions" same "$(hashes "$r" .distrib)" "$(packaged "$xuc1")"
check "links still in place" links_to_xen_vif "$r"
dpkg_in "$r" -r xen-vif
check "removal: stock scripts in place" same "$(hashes "$r" "")" "$(packaged "$xuc1")"
check "removal: no diversions left" same "$(diversions "$r")" ""
dpkg_in "$r" --purge xen-utils-common
check "xen-utils-common purged: no /etc/xen left" test ! -e "$r/etc/xen"
dpkg_in "$r" -i "$deb"
dpkg_in "$r" --purge xen-vif
check "without Xen, removal leaves no /etc/xen" test ! -e "$r/etc/xen"
rm -rf "$r"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
