#!/bin/bash
# Builds echo-mpserv_*.deb with dpkg-buildpackage from a scratch copy of this
# tree (tracked files plus untracked ones git does not ignore), so neither
# the tree nor its parent directory gets build products.
#
# Usage: tests/build-deb.sh OUTDIR [VERSION]
#   VERSION  build as this version (a changelog entry is added to the copy),
#            for upgrade tests.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUTDIR [VERSION]" >&2; exit 2; }
out=$(realpath -m "$1")
version=${2:-}
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/echo-mpserv" "$out"
(cd "$src" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        xargs -0 cp --parents -t "$work/echo-mpserv")

if [ -n "$version" ]; then
        entry="echo-mpserv ($version) unstable; urgency=medium

  * Rebuild as $version for an upgrade test.

 -- echo-mpserv developers <echo-mpserv@example.org>  $(date -R)
"
        printf '%s\n' "$entry" | cat - "$src/debian/changelog" > "$work/echo-mpserv/debian/changelog"
fi

(cd "$work/echo-mpserv" && dpkg-buildpackage -us -uc -b >"$work/build.log" 2>&1) ||
        { tail -60 "$work/build.log"; exit 1; }
cp "$work"/*.deb "$out"/
ls "$out"/*.deb
