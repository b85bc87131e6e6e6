# altscore: one entry point. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen

.PHONY: help
help:  ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "} {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: bootstrap
bootstrap:  ## Install uv (if missing) and check the Rust toolchain
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@command -v cargo >/dev/null 2>&1 || { echo "cargo (Rust) is required to build feature_kernels: install it with rustup"; exit 1; }

.PHONY: install
install: bootstrap  ## Install every dependency from uv.lock and build the Rust extension (release)
	$(UV) sync --frozen

.PHONY: build-dev
build-dev: bootstrap  ## Rebuild the Rust extension after a change to feature_kernels/src
	$(UV) sync --frozen --reinstall-package feature-kernels

.PHONY: proto
proto: install  ## Regenerate the Python code of proto/
	$(RUN) bash scripts/gen_proto.sh

.PHONY: format
format: install  ## Format Python and Rust
	$(RUN) ruff format .
	$(RUN) ruff check --fix .
	cd feature_kernels && cargo fmt

.PHONY: lint
lint: install  ## ruff, mypy (strict), cargo fmt --check, clippy -D warnings
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	cd feature_kernels && cargo fmt --check && cargo clippy --all-targets --quiet -- -D warnings

.PHONY: redis
redis:  ## Install redis-server (Debian package) if missing: the tests start their own
	@command -v redis-server >/dev/null || (apt-get update && apt-get install -y --no-install-recommends redis-server)

.PHONY: test
test: install lint redis  ## The whole suite: lint, Rust unit tests, pytest (CI runs exactly this)
	cd feature_kernels && cargo test --quiet
	$(RUN) pytest

.PHONY: train
train: install  ## Train the default GMSC model and register it (sets champion if none)
	$(RUN) python -m training train

.PHONY: serve
serve: install  ## Train a default model if the registry has no champion, then serve gRPC + metrics
	$(RUN) python -m training ensure-champion
	$(RUN) python -m scoring_server

.PHONY: bench
bench: install redis tools  ## In-process micro-benchmarks, Redis enrichment, ghz side by side with MLServer; rewrites benchmarks/RESULTS.md
	$(RUN) python -m training ensure-champion
	$(RUN) python -m benchmarks.inprocess --write benchmarks/RESULTS.md
	$(RUN) python -m benchmarks.enrichment --write benchmarks/RESULTS.md
	PATH="$$(go env GOPATH)/bin:$$PATH" $(RUN) python -m benchmarks.grpc_load --write benchmarks/RESULTS.md

GRPCURL_VERSION := v1.9.3
HEALTH_PROBE_VERSION := v0.4.61
GHZ_VERSION := v0.120.0
.PHONY: tools
tools:  ## Install grpcurl, grpc-health-probe and ghz with `go install` (pinned) into $(shell go env GOPATH 2>/dev/null)/bin
	go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	go install github.com/grpc-ecosystem/grpc-health-probe@$(HEALTH_PROBE_VERSION)
	go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

.PHONY: clean
clean:  ## Remove local state (MLflow store, compiled models) and build output
	rm -rf var feature_kernels/target .mypy_cache .ruff_cache .pytest_cache
