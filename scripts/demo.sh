#!/usr/bin/env bash
# `make demo`: installs what is missing, starts the local stack (and stops it again if it was down), builds the
# functions and runs shadow-fleet's story on the stack.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh
started=0
if ! bash scripts/stack.sh status; then started=1; fi
cleanup() {
  if [[ $started == 1 ]]; then bash scripts/stack.sh down; fi
}
trap cleanup EXIT
if [[ $started == 1 ]]; then bash scripts/stack.sh up; fi

cargo build --quiet --bins -p shadow-history -p shadow-push -p fleet-tests
set -a; . .local/stack.env; set +a
./target/debug/fleet-local demo
