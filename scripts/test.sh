#!/usr/bin/env bash
# `make test`: every check. The integration tests run against the local stack, which scripts/with-stack.sh starts
# when it is down and stops again afterwards, also when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} != --checks ]]; then
  bash scripts/tools.sh
  exec bash scripts/with-stack.sh bash scripts/test.sh --checks
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== make lint-template (cfn-lint, sam validate --lint)"
make --no-print-directory lint-template
echo "== make build (sam build: release arm64 binaries into .aws-sam/build)"
make --no-print-directory build
echo "== cargo build (the function binaries the integration tests run)"
cargo build --workspace --bins --quiet
echo "== cargo test (the function binaries' AWS calls recorded into .local/iam-calls)"
# The emulators check no IAM: record every call the binaries make, then hold them against template.yaml.
iam_calls=$PWD/.local/iam-calls
rm -rf "$iam_calls"
mkdir -p "$iam_calls"
log=$(mktemp)
FLEET_IAM_RECORD=$iam_calls cargo test --workspace --quiet 2>&1 | tee "$log"
# One closing line for the whole run: the sum of every test binary's result.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
echo "== iam-check (the recorded calls against the functions' policies in template.yaml)"
cargo run --quiet -p fleet-tests --bin iam-check -- "$iam_calls" template.yaml
