#!/usr/bin/env bash
# Runs tidepool's whole test suite: unit tests, and integration tests against throwaway
# PostgreSQL clusters started on free loopback ports (as the `postgres` user when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --all-targets "$@"
