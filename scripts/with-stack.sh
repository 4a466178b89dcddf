#!/usr/bin/env bash
# Runs a command with the local stack up. A stack that was down is started first and stopped again afterwards,
# also when the command fails; a stack that was up is left as it was.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
if ! bash scripts/stack.sh status; then started=1; fi
cleanup() {
  if [[ $started == 1 ]]; then bash scripts/stack.sh down; fi
}
trap cleanup EXIT
if [[ $started == 1 ]]; then bash scripts/stack.sh up; fi
"$@"
