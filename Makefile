# shadow-fleet. `make demo` and `make test` are all a newcomer needs; both install what is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help tools stack-up stack-down demo test fmt lint

help:
	@echo "make demo        start the local AWS stack and run shadow-fleet's story on it"
	@echo "make test        every check (fmt, clippy, unit and integration tests) on the local stack"
	@echo "make stack-up    start DynamoDB Local and moto on 127.0.0.1 (settings in .local/stack.env)"
	@echo "make stack-down  stop them"
	@echo "make tools       install the pinned local tools into .tools/"

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

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings
