#!/usr/bin/env bash
# `make bench`: release builds, the local stack (started and stopped again when it was down), then fleet-bench.
# It prints ours / the peer's / the ratio per figure and writes bench/results/latest.json. Asserts nothing about time.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh bench
echo "== cargo build --release (shadow-history, shadow-push, shadow-fleet, fleet-bench)"
cargo build --release --quiet -p shadow-history -p shadow-push -p shadow-fleet-cli -p fleet-bench
bash scripts/with-stack.sh ./target/release/fleet-bench "$@"
