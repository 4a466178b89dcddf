#!/usr/bin/env bash
# `make test`: every check, against the local stack. Starts the stack when it is down, and then stops it again,
# also when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/tools.sh
started=0
if ! bash scripts/stack.sh status; then
  started=1
fi
cleanup() {
  if [[ $started == 1 ]]; then bash scripts/stack.sh down; fi
}
trap cleanup EXIT
if [[ $started == 1 ]]; then bash scripts/stack.sh up; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo build (the function binaries the integration tests run)"
cargo build --workspace --bins --quiet
echo "== cargo test"
cargo test --workspace --quiet
