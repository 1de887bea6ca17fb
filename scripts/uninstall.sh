#!/usr/bin/env bash
# Undo scripts/install.sh exactly: put each stock Xen script back where it was (the same file,
# moved back), and remove every file, link and directory the install created, nothing else.
#
#   scripts/uninstall.sh                      (also installed as /usr/libexec/xen-vif/uninstall.sh)
#   DESTDIR=/some/root scripts/uninstall.sh
#
# Reads /var/lib/xen-vif/installed and walks it backwards. A script name that no longer points
# at xen-vif (changed by hand since) is left alone, with its stock copy kept and a warning.
# Without a manifest there is nothing to undo: exit 0.
set -euo pipefail

root=${DESTDIR:-}
root=${root%/}
libexec=/usr/libexec/xen-vif
state=/var/lib/xen-vif
manifest=$state/installed
stock=$state/stock

if [ ! -f "$root$manifest" ]; then
    echo "uninstall: nothing installed in ${root:-/} (no $manifest)"
    exit 0
fi
mapfile -t entries < <(tac "$root$manifest")
rm -f "$root$manifest"

kept=0
for entry in "${entries[@]}"; do
    read -r kind path what <<<"$entry"
    p=$root$path
    case $kind in
    script)
        if [ "$(readlink "$p" 2>/dev/null)" != "$libexec/xen-vif" ]; then
            if [ -e "$p" ] || [ -L "$p" ]; then
                echo "uninstall: $path was changed since the install; left as is" >&2
                if [ "$what" = stock ]; then
                    echo "uninstall: its stock script stays in $stock/" >&2
                    kept=1
                fi
                continue
            fi
        fi
        rm -f "$p"
        if [ "$what" = stock ]; then
            mv "$root$stock/$(basename "$path")" "$p"
        fi
        ;;
    file) rm -f "$p" ;;
    link) if [ -L "$p" ]; then rm -f "$p"; fi ;;
    dir) rmdir "$p" 2>/dev/null || { [ -d "$p" ] && echo "uninstall: $path is not empty; left" >&2; } ;;
    *) echo "uninstall: unknown manifest entry: $entry" >&2 ;;
    esac
done

if [ -z "$root" ] && command -v udevadm >/dev/null; then
    udevadm control --reload 2>/dev/null || true
fi
if [ "$kept" = 1 ]; then
    echo "uninstall: done, except for the scripts changed by hand (see above)"
else
    echo "uninstall: xen-vif removed from ${root:-/}; stock scripts restored"
fi
