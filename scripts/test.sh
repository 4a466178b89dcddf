#!/usr/bin/env bash
# `make test`: every check. The integration tests run against the local stack, which scripts/with-stack.sh starts
# when it is down and stops again afterwards, also when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ${1:-} != --checks ]]; then
  export MAKE_TEST_STARTED=$(date +%s)
  bash scripts/tools.sh
  exec bash scripts/with-stack.sh bash scripts/test.sh --checks
fi

# Where the time goes: each step's seconds, printed as a table at the end (docs/tests.md).
timings=$(mktemp)
step_name="tools, the stack's start and its first (debug) build"
step_started=${MAKE_TEST_STARTED:-$(date +%s)}
step() { # name: ends the step before, prints the header of this one
  local now
  now=$(date +%s)
  printf '%s\t%d\n' "$step_name" $((now - step_started)) >>"$timings"
  step_name=$1
  step_started=$now
  echo "== $1"
}
report_timings() {
  printf '%s\t%d\n' "$step_name" $(($(date +%s) - step_started)) >>"$timings"
  echo "== where the time went (s; the stack's stop is not counted)"
  awk -F'\t' '{ printf "  %-100s %5d\n", $1, $2; total += $2 } END { printf "  %-100s %5d\n", "total", total }' "$timings"
  rm -f "$timings"
}
trap report_timings EXIT

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
step "make lint-template (cfn-lint, sam validate --lint, checkov)"
make --no-print-directory lint-template
step "make build-check (sam build with SAM_BUILD_MODE=debug: both functions cross-compiled for arm64)"
make --no-print-directory build-check
step "cargo build (the function binaries the integration tests run)"
cargo build --workspace --bins --quiet
step "cargo nextest (the function binaries' and the CLI's AWS calls recorded into .local/iam-calls)"
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
step "iam-check (the recorded calls against the functions' and the operators' policies in template.yaml)"
cargo run --quiet -p iam-check -- "$iam_calls" template.yaml
