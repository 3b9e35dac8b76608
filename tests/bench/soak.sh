#!/usr/bin/env bash
# Soak: runs the kill -9 loop (13 SIGKILLs over 40 images against a slow, faulty fake API),
# the many-process tests (200 images over three processes; SIGKILL and SIGSTOP takeover) and
# the disk-full tests again and again, each time with a new random seed, and counts the runs
# that broke a promise (a file lost or duplicated, a half-built folder, an answer paid twice).
#
#   tests/bench/soak.sh [ROUNDS]      (default 20; about 20 s a round on 2 cores)
#
# A failing round keeps its logs in $REMIXD_IT_LOG_DIR (default /tmp/remixd-soak/ROUND).
set -uo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-20}
cargo test --test it --no-run --quiet 2>/dev/null
passed=0
failed=0
start=$(date +%s)
for round in $(seq 1 "$rounds"); do
    logs=${REMIXD_IT_LOG_DIR:-/tmp/remixd-soak}/$round
    mkdir -p "$logs"
    seed=$(( $(date +%s%N) % 1000000007 ))
    if REMIXD_CRASH_SEED=$seed REMIXD_IT_LOG_DIR=$logs \
        cargo test --quiet --test it -- crash:: many:: disk:: >"$logs/test.log" 2>&1; then
        passed=$((passed + 1))
        rm -rf "$logs"
    else
        failed=$((failed + 1))
        echo "round $round (seed $seed) failed; logs in $logs"
    fi
done
echo "soak: $rounds rounds in $(( $(date +%s) - start ))s: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
