# shadow-fleet. `make demo` and `make test` are all a newcomer needs; both install what is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help tools stack-up stack-down demo test bench fmt lint build build-check build-tools lint-template

help:
	@echo "make demo        start the local AWS stack and run shadow-fleet's story on it"
	@echo "make test        every check (fmt, clippy, unit and integration tests) on the local stack"
	@echo "make stack-up    start DynamoDB Local, moto, the MQTT broker and the local Lambda on 127.0.0.1 (settings in .local/stack.env)"
	@echo "make stack-down  stop them"
	@echo "make bench       release binaries vs the Python/boto3 peers: cold start, memory, push and history throughput, a rollout at scale, costs"
	@echo "make tools       install the pinned local tools into .tools/"
	@echo "make build       sam build: release arm64 binaries of both functions into .aws-sam/build (cargo-lambda, zig)"
	@echo "make build-check the same sam build with SAM_BUILD_MODE=debug: proves it in a third of the time (make test)"
	@echo "make lint-template  cfn-lint, sam validate --lint and checkov on template.yaml (offline)"

tools:
	@bash scripts/tools.sh

stack-up:
	@bash scripts/stack.sh up

stack-down:
	@bash scripts/stack.sh down

demo:
	@bash scripts/demo.sh

test:
	@bash scripts/test.sh

bench:
	@bash scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

# sam build runs `cargo lambda build --release --arm64` per function; cargo-lambda cross-compiles with zig, which
# .tools/venv holds as the ziglang package: a `zig` wrapper on PATH lets cargo-lambda find it.
# AWS_LC_SYS_NO_JITTER_ENTROPY=1: aws-lc's jitter entropy adds 10-50 ms to every cold start.
# build-check (make test) is the same sam build with SAM_BUILD_MODE=debug, which SAM hands to its Rust builder: the
# same template, CodeUri, cargo-lambda and zig cross-compile of both functions, without the release profile's fat LTO
# and single codegen unit (about 400 s on 2 cores). The deploy workflow runs the real `make build`. Its output goes to
# .aws-sam/build-check, so that a `sam deploy` after `make test` never ships a debug build from .aws-sam/build.
SAM_BUILD = PATH="$(CURDIR)/.tools/bin:$(CURDIR)/.tools/venv/bin:$$PATH" SAM_CLI_TELEMETRY=0 AWS_LC_SYS_NO_JITTER_ENTROPY=1
build: build-tools
	$(SAM_BUILD) sam build

build-check: build-tools
	$(SAM_BUILD) SAM_BUILD_MODE=debug sam build --build-dir .aws-sam/build-check
	@for f in ShadowHistoryFunction ShadowPushFunction; do \
	  [[ $$(od -An -tx1 -j18 -N2 .aws-sam/build-check/$$f/bootstrap 2>/dev/null | tr -d ' ') == b700 ]] || \
	    { echo "build-check: .aws-sam/build-check/$$f/bootstrap is missing or not an arm64 executable" >&2; exit 1; }; \
	done

build-tools:
	@bash scripts/tools.sh
	@if [[ ! -x .tools/bin/zig ]]; then \
	  mkdir -p .tools/bin && \
	  printf '#!/bin/sh\nexec "$$(dirname "$$0")/../venv/bin/python" -m ziglang "$$@"\n' >.tools/bin/zig && \
	  chmod +x .tools/bin/zig; \
	fi
	@if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then \
	  rustup target add aarch64-unknown-linux-gnu; \
	fi

# All run offline: cfn-lint and sam validate --lint need no AWS account (the region is only a default).
# checkov (.tools/checkov-venv) reads the template as SAM with --framework cloudformation (AWS::Serverless::Function,
# Globals); its `serverless` framework is the Serverless Framework's serverless.yml and scans nothing here. It drops
# every resource whose Condition is false with the parameters' defaults, so it scans two copies of template.yaml, line
# for line the same, that switch the optional resources on: RecordDeletes=true (its default), with QueuedIngestion false and true.
# Offline: no API key and --skip-download/BC_SKIP_MAPPING (nothing sent to or fetched from Prisma Cloud), no PyPI
# update check. It fails on any failed check and on a parse error; each suppression is in the template with its reason.
CHECKOV := BC_API_KEY= BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE CKV_PARSE_ERROR_FAIL=TRUE \
  .tools/checkov-venv/bin/checkov --framework cloudformation --skip-download --compact --quiet
lint-template:
	@bash scripts/tools.sh
	.tools/venv/bin/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 AWS_REGION=$${AWS_REGION:-ap-northeast-1} .tools/venv/bin/sam validate --lint
	@mkdir -p .local/checkov/direct .local/checkov/queued
	@cp template.yaml .local/checkov/direct/template.yaml
	@sed -E '/^  QueuedIngestion:$$/,/^    Default:/ s/"false"$$/"true"/' template.yaml >.local/checkov/queued/template.yaml
	@[[ $$(grep -A2 '^  RecordDeletes:$$' template.yaml | grep -c 'Default: "true"') == 1 && \
	    $$(diff template.yaml .local/checkov/queued/template.yaml | grep -c '^>') == 1 ]] || \
	  { echo 'lint-template: RecordDeletes must default to "true" and QueuedIngestion have a Default: "false" to switch' >&2; exit 1; }
	$(CHECKOV) -f .local/checkov/direct/template.yaml -f .local/checkov/queued/template.yaml
