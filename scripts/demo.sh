#!/usr/bin/env bash
# Installs what is missing, builds tidepool, and starts the demo: a throwaway local PostgreSQL
# with tidepool in front of it. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo run --release -- demo "$@"
