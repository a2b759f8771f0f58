#!/bin/bash
# Runs the whole echo-mpserv test suite on a Debian 12 machine, as root.
# Installs every package it needs from Debian, then builds and tests three
# ways (a plain -Werror build, ASan+UBSan, valgrind), runs the integration
# tests once more with every CPU kept busy by stress-ng, fuzzes the
# configuration loader for a minute (tests/fuzz/), builds the Debian
# package, runs lintian on it, and tests it end to end under a real systemd
# booted in namespaces (tests/e2e/).
#
# Usage: tests/run-all.sh            (from anywhere; uses ./build-ci*)
# Exit status: 0 when everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."
# The Python test library (harness, nspawn, ...), as meson also sets it.
export PYTHONPATH="$PWD/tests/lib${PYTHONPATH:+:$PYTHONPATH}"

packages=(
        gcc meson ninja-build pkg-config libsystemd-dev libconfig-dev   # build
        scdoc                                                           # man pages
        python3 valgrind util-linux procps mandoc groff-base systemd    # tests
        stress-ng                                                       # tests on a busy machine
        debhelper dpkg-dev fakeroot lintian                             # the package
        mmdebstrap iproute2 tar                                         # e2e under systemd
        clang libclang-rt-14-dev                                        # libFuzzer
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

# The integration tests again, on the plain build, with every CPU kept busy:
# tests must wait for events, never for fixed times a slow machine exceeds.
# ECHO_MPSERV_SLOW=3 stretches the tests' waits and time bounds (and meson's
# timeouts) by what the load costs: each test process then shares a CPU with
# a spinning stressor or two, about a third of the CPU it gets alone.
#
# With the scheduler's autogroups (Debian's default), every session shares
# the CPUs as one group, and each test daemon runs in a session of its own:
# stress-ng would then weigh no more than one daemon, and barely load the
# tests. The pass turns autogroups off while it runs, so each stressor
# competes with each test process, and puts the setting back after.
load_pid=
autogroup=/proc/sys/kernel/sched_autogroup_enabled
autogroup_was=
stop_load() {
        if [ -n "$load_pid" ]; then
                kill -TERM "$load_pid" 2>/dev/null || true
                wait "$load_pid" 2>/dev/null || true
                load_pid=
        fi
        if [ -n "$autogroup_was" ]; then
                echo "$autogroup_was" >"$autogroup" || true
                autogroup_was=
        fi
}

busy_pass() {
        local dir=build-ci cpus
        cpus=$(nproc)
        step "test $dir: integration tests with $cpus CPU(s) kept busy by stress-ng --cpu $cpus"
        trap stop_load EXIT
        trap 'exit 1' INT TERM HUP  # through the EXIT trap: the load never outlives the script
        if [ -w "$autogroup" ]; then
                autogroup_was=$(cat "$autogroup")
                echo 0 >"$autogroup"
        else
                echo "note: cannot turn off $autogroup; the load may reach the tests only in part"
        fi
        # --timeout: the load ends by itself should this script be killed.
        stress-ng --cpu "$cpus" --timeout 30m --metrics-brief &
        load_pid=$!
        cat /proc/loadavg
        local rc=0
        ECHO_MPSERV_SLOW=3 meson test -C "$dir" --suite integration --num-processes 2 \
                --timeout-multiplier 3 --logbase testlog-busy --print-errorlogs || rc=$?
        echo "load average at the end: $(cat /proc/loadavg)"
        stop_load
        trap - EXIT INT TERM HUP
        grep -hE '^   [^ ].*[0-9]' "$dir/meson-logs/testlog-busy.txt" | grep -v '^   ok (' | sed 's/^   /  /' || true
        return "$rc"
}

if [ "$(id -u)" != 0 ]; then
        echo "run-all.sh: run as root (it installs packages and tests privilege drops)" >&2
        exit 1
fi

package_and_e2e() {
        local out=build-ci-deb
        local version arch
        version=$(dpkg-parsechangelog -S Version)
        arch=$(dpkg --print-architecture)
        step "package: dpkg-buildpackage, twice (the second as a newer version for the upgrade test)"
        rm -rf "$out"
        tests/build-deb.sh "$out" >/dev/null
        tests/build-deb.sh "$out" "$version+ci1" >/dev/null
        ls "$out"/*.deb
        step "lintian --pedantic (as an unprivileged user: lintian warns when run as root)"
        chmod 755 "$out"; chmod 644 "$out"/*.deb
        # The package itself; the +ci1 rebuild exists only for the upgrade test.
        setpriv --reuid=nobody --regid=nogroup --clear-groups \
                lintian --pedantic --fail-on error,warning "$out/echo-mpserv_${version}_$arch.deb"
        step "e2e: the package under a real systemd 252 (tests/e2e/)"
        python3 tests/e2e/test_boot.py
        python3 tests/e2e/test_package.py "$out/echo-mpserv_${version}_$arch.deb" \
                "$out/echo-mpserv_$version+ci1_$arch.deb"
        python3 tests/e2e/test_log_budget.py "$out/echo-mpserv_${version}_$arch.deb"
        python3 tests/e2e/test_accept_yes.py "$out/echo-mpserv_${version}_$arch.deb"
        python3 tests/e2e/test_operator.py "$out/echo-mpserv_${version}_$arch.deb" \
                "$out/echo-mpserv_$version+ci1_$arch.deb"
}

fuzz() {
        step "fuzz: the configuration loader under libFuzzer (ASan+UBSan) for 60 s"
        rm -rf build-ci-fuzz
        FUZZ_BUILD_DIR=build-ci-fuzz tests/fuzz/run-config-fuzz.sh 60
        step "fuzz: replay the seed corpus"
        meson test -C build-ci-fuzz --suite fuzz --print-errorlogs
}

install_packages "${packages[@]}"
build_and_test build-ci
busy_pass
build_and_test build-ci-asan -Db_sanitize=address,undefined
build_and_test build-ci-valgrind -Dvalgrind=true
fuzz
package_and_e2e
step "all tests passed"
