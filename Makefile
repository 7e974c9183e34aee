# Lambent: `make dev` serves everything locally; `make test` checks everything.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.requirements-installed
DEPLOY_STAMP := $(VENV)/.deploy-tools-installed

.PHONY: dev test venv fmt lint unit bench lambda clean

## The local AWS emulator and the template linter, pinned (infra/local/requirements.txt).
$(STAMP): infra/local/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements.txt
	touch $@

venv: $(STAMP)

## Serve the whole backend on http://127.0.0.1:3000 (PORT to change) and print a walkthrough.
dev: venv
	cargo build --quiet -p lambent-local --bin lambent-dev
	./target/debug/lambent-dev

## Everything: formatting, lints, unit and integration tests, template lint.
test: venv fmt lint unit

fmt:
	cargo fmt --all -- --check

lint: venv
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

# The closing line sums every test binary's result (cargo ends on an empty harness otherwise).
unit: venv
	cargo build --quiet -p lambent-functions --bin run-job
	cargo test --workspace --quiet 2>&1 | awk '{ print } /^test result:/ { passed += $$4; failed += $$6 } \
		END { printf "\n%d passed, %d failed\n", passed, failed }'

## Figures side by side with their peers (see README).
BENCH_STAMP := $(VENV)/.bench-peers-installed
$(BENCH_STAMP): infra/bench/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/bench/requirements.txt
	touch $@

bench: lambda $(BENCH_STAMP)
	cargo build --release --quiet -p lambent-local --bin lambent-dev
	$(VENV)/bin/python infra/bench/run.py

## Release builds of every function for Lambda (target/lambda/<name>/bootstrap).
$(DEPLOY_STAMP): infra/deploy-requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/deploy-requirements.txt
	touch $@

lambda: $(DEPLOY_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --package lambent-functions

clean:
	cargo clean
	rm -rf $(VENV)
