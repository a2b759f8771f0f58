#!/bin/bash
# Builds the libFuzzer harness of the configuration loader with clang, ASan
# and UBSan, and fuzzes it for a bounded time from the seed corpus.
#
# Usage: tests/fuzz/run-config-fuzz.sh [SECONDS]     (default 60)
#
# Environment:
#   FUZZ_BUILD_DIR   build directory (default: build-fuzz at the top of the
#                    repository); set up with clang and -Dfuzz=true when it
#                    does not exist yet, and must be such a build if it does
#   FUZZ_MAX_LEN     largest input libFuzzer generates (default 16384)
#   FUZZ_KEEP_CORPUS a directory that receives the corpus grown by this run
#                    (default: none, the scratch corpus is deleted)
#
# Prints the figures libFuzzer reports (executions, executions per second,
# coverage, corpus size). Exits 0 when the run found nothing, 1 when it found
# a crash, a leak, undefined behaviour, a timeout or an out-of-memory input;
# the reproducer is kept under $FUZZ_BUILD_DIR/fuzz-artifacts/ and its path
# and bytes are printed. Replay it with: $FUZZ_BUILD_DIR/tests/fuzz/fuzz-config FILE
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
seconds=${1:-60}
build=$(realpath -m "${FUZZ_BUILD_DIR:-$root/build-fuzz}")  # absolute: the fuzzer runs in a scratch directory
max_len=${FUZZ_MAX_LEN:-16384}

case $seconds in
''|*[!0-9]*|0) echo "usage: $0 [SECONDS]  (a whole number of seconds, at least 1)" >&2; exit 2 ;;
esac

note() { printf '=== %s\n' "$*"; }

# clang and its runtime libraries (libFuzzer, ASan, UBSan) from Debian 12.
install_packages() {
        local missing=() p
        for p in clang libclang-rt-14-dev meson ninja-build pkg-config libsystemd-dev libconfig-dev; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
        done
        [ ${#missing[@]} -eq 0 ] && return 0
        if [ "$(id -u)" != 0 ]; then
                echo "run-config-fuzz.sh: missing packages: ${missing[*]} (install them, or run as root)" >&2
                exit 1
        fi
        note "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
                { apt-get update -qq &&
                  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; }
}

install_packages

if [ ! -e "$build/build.ninja" ]; then
        note "setting up $build (clang, -Dfuzz=true, ASan+UBSan)"
        setup_log=$(mktemp)
        if ! (cd "$root" && CC=clang meson setup "$build" -Dfuzz=true -Db_sanitize=address,undefined \
                        -Db_lundef=false) >"$setup_log" 2>&1; then
                cat "$setup_log" >&2
                rm -f "$setup_log"
                echo "run-config-fuzz.sh: meson setup failed (is option('fuzz') in meson_options.txt" \
                     "and subdir('fuzz') in tests/meson.build? see tests/fuzz/README.md)" >&2
                exit 1
        fi
        mv "$setup_log" "$build/fuzz-setup.log"
fi
if ! meson introspect "$build" --buildoptions 2>/dev/null | python3 -c '
import json, sys
opts = {o["name"]: o["value"] for o in json.load(sys.stdin)}
sys.exit(0 if opts.get("fuzz") is True else 1)'; then
        echo "run-config-fuzz.sh: $build is not a -Dfuzz=true build; remove it or set FUZZ_BUILD_DIR" >&2
        exit 1
fi
note "building fuzz-config in $build"
compile_log=$(mktemp)
meson compile -C "$build" tests/fuzz/fuzz-config >"$compile_log" 2>&1 ||
        { cat "$compile_log" >&2; rm -f "$compile_log"; echo "run-config-fuzz.sh: build failed" >&2; exit 1; }
rm -f "$compile_log"
fuzzer=$build/tests/fuzz/fuzz-config

artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/config-fuzz.XXXXXX")
fuzz_pid=
cleanup() {
        # timeout(1) passes the signal on to the fuzzer.
        if [ -n "$fuzz_pid" ]; then
                kill -TERM "$fuzz_pid" 2>/dev/null || true
                wait "$fuzz_pid" 2>/dev/null || true
        fi
        rm -rf "$scratch"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir "$scratch/corpus" "$scratch/cwd"
cp "$here"/corpus-config/* "$scratch/corpus/"
seeds=$(find "$scratch/corpus" -type f | wc -l)
started=$(date +%s)

note "fuzzing for $seconds s from $seeds seeds (max_len $max_len); log: $scratch/fuzz.log"
# Sanitizer findings must end the run so libFuzzer saves the input;
# lsan.supp names the one libconfig leak we cannot avoid.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
export LSAN_OPTIONS=suppressions=$here/lsan.supp:print_suppressions=0
set +e
# The harness must never open files, but if it did, relative paths land in
# an empty directory. timeout(1) bounds the run if libFuzzer itself hangs.
(cd "$scratch/cwd" && exec timeout --kill-after=10 $((seconds + 120)) "$fuzzer" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len="$max_len" \
        -error_exitcode=1 -timeout_exitcode=1 \
        -dict="$here/config.dict" -artifact_prefix="$artifacts/" -print_final_stats=1 \
        "$scratch/corpus" </dev/null >"$scratch/fuzz.log" 2>&1) &
fuzz_pid=$!
wait "$fuzz_pid"
status=$?
fuzz_pid=
set -e
elapsed=$(( $(date +%s) - started ))

log=$scratch/fuzz.log
last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
final_stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$last"; }
corpus_files=$(find "$scratch/corpus" -type f | wc -l)

note "results"
printf '  duration           %s s (asked for %s s)\n' "$elapsed" "$seconds"
printf '  executions         %s\n' "$(final_stat number_of_executed_units)"
printf '  executions/s       %s\n' "$(final_stat average_exec_per_sec)"
printf '  coverage           %s edges (cov), %s features (ft)\n' "$(field cov)" "$(field ft)"
printf '  corpus             %s inputs in memory (%s), %s files from %s seeds\n' \
        "$(field corp | cut -d/ -f1)" "$(field corp | cut -d/ -f2)" "$corpus_files" "$seeds"
printf '  new units          %s\n' "$(final_stat new_units_added)"
printf '  peak RSS           %s MB\n' "$(final_stat peak_rss_mb)"

if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then
        mkdir -p "$FUZZ_KEEP_CORPUS"
        cp -n "$scratch"/corpus/* "$FUZZ_KEEP_CORPUS"/
        note "corpus kept in $FUZZ_KEEP_CORPUS"
fi

# libFuzzer exits 0 only when the time ran out without a finding. Its own
# messages, not only the status, decide: a sanitizer report that did not
# stop the run must not pass either.
findings=$(grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|SUMMARY: ' "$log" || true)
if [ "$status" -eq 0 ] && [ -z "$findings" ]; then
        note "no findings"
        exit 0
fi

note "FINDING (libFuzzer exit status $status)"
# The report: from the first sanitizer or libFuzzer error to the end.
awk '/ERROR: |runtime error:|check failed|round trip failed|==[0-9]+== /{p=1} p' "$log" | head -n 80
written=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
if [ -n "$written" ] && [ -f "$written" ]; then
        note "reproducer: $written ($(wc -c <"$written") bytes)"
        od -A d -t x1 -v "$written" | head -n 40
        echo "replay: $fuzzer $written"
else
        echo "no reproducer was written (status $status); see the log above" >&2
fi
exit 1
