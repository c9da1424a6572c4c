#!/usr/bin/env bash
# Runs tidepool's whole test suite: unit tests, and integration tests against throwaway
# PostgreSQL clusters started on free loopback ports (as the `postgres` user when run as root).
# Ends with one summary line over every test binary: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# tests/chaos.rs opens 5,000 connections at once; the soft limit may be as low as 1024.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --all-targets --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
passed=$(grep -Eo '^test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '; [0-9]+ failed' "$log" | awk '{s += $2} END {print s + 0}')
echo "tests: ${passed} passed, ${failed} failed"
exit "$status"
