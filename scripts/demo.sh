#!/usr/bin/env bash
# `make demo`: installs what is missing, starts the local stack (and stops it again if it was down), builds the
# functions and runs shadow-fleet's story on the stack (devstack/src/demo.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh
cargo build --quiet --bins -p shadow-history -p shadow-push -p devstack -p shadow-fleet-cli
bash scripts/with-stack.sh ./target/debug/fleet-local demo
