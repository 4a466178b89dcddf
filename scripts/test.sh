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
echo "== make build-check (sam build with SAM_BUILD_MODE=debug: both functions cross-compiled for arm64)"
make --no-print-directory build-check
echo "== cargo build (the function binaries the integration tests run)"
cargo build --workspace --bins --quiet
echo "== cargo nextest (the function binaries' AWS calls recorded into .local/iam-calls)"
# The emulators check no IAM: record every call the binaries make, then hold them against template.yaml.
# nextest runs every test in its own process, binaries side by side (.config/nextest.toml); the tests' names are
# unique per process (devstack/src/stack.rs) and the recording appends whole lines, so they share the stack.
iam_calls=$PWD/.local/iam-calls
rm -rf "$iam_calls"
mkdir -p "$iam_calls"
log=$(mktemp)
status=0
FLEET_IAM_RECORD=$iam_calls cargo nextest run --workspace --profile make-test 2>&1 | tee "$log" || status=$?
# Where the time went: each test binary's tests, summed (they overlap, so the sum exceeds the wall clock). A result
# line is `PASS [   0.011s] (  1/169) <binary id> <test>`; the final summary repeats failures, so it is not read.
awk '/^ *Summary \[/ { summary = 1 }
     !summary && /^ *(PASS|FAIL|TIMEOUT) +\[/ {
       rest = $0; sub(/^ *[A-Z]+ +\[ */, "", rest); t = rest; sub(/s\].*/, "", t)
       sub(/^[^)]*\) +/, "", rest); split(rest, f, " "); bin[f[1]] += t; n[f[1]]++ }
     END { for (b in bin) printf "  %-40s %4d tests %8.1f s\n", b, n[b], bin[b] }' "$log" | sort -k4 -rn
# One closing line for the whole run.
awk '/^ *Summary \[/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p = $i; if ($(i+1) ~ /^failed/) f = $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
[[ $status == 0 ]] || exit "$status"
echo "== iam-check (the recorded calls against the functions' policies in template.yaml)"
cargo run --quiet -p iam-check -- "$iam_calls" template.yaml
