#!/bin/bash
# Runs the whole echo-mpserv test suite on a Debian 12 machine, as root.
# Installs every package it needs from Debian, then builds and tests three
# ways: a plain -Werror build, ASan+UBSan, and valgrind.
#
# Usage: tests/run-all.sh            (from anywhere; uses ./build-ci*)
# Exit status: 0 when everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
        gcc meson ninja-build pkg-config libsystemd-dev libconfig-dev   # build
        scdoc                                                           # man pages
        python3 valgrind util-linux procps mandoc groff-base systemd    # tests
)

step() { printf '\n=== %s\n' "$*"; }

install_packages() {
        local missing=()
        for p in "$@"; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        if [ ${#missing[@]} -gt 0 ]; then
                step "installing ${missing[*]}"
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        fi
}

# A fresh build directory for each configuration: results never depend on
# what an earlier run left behind.
build_and_test() {
        local dir=$1; shift
        step "build $dir ($*)"
        rm -rf "$dir"
        meson setup "$dir" -Dwerror=true "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
        meson compile -C "$dir"
        step "test $dir"
        meson test -C "$dir" --print-errorlogs --num-processes 2
        # The figures the tests print (zombies, CPU at EMFILE, drain counts, ...).
        grep -hE '^   [^ ].*[0-9]' "$dir/meson-logs/testlog.txt" | grep -v '^   ok (' | sed 's/^   /  /' || true
}

if [ "$(id -u)" != 0 ]; then
        echo "run-all.sh: run as root (it installs packages and tests privilege drops)" >&2
        exit 1
fi

install_packages "${packages[@]}"
build_and_test build-ci
build_and_test build-ci-asan -Db_sanitize=address,undefined
build_and_test build-ci-valgrind -Dvalgrind=true
step "all tests passed"
