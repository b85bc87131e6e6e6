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
build-dev: bootstrap  ## Rebuild the Rust extension after a change to the Rust workspace
	$(UV) sync --frozen --reinstall-package feature-kernels

.PHONY: proto
proto: install grpcurl  ## Regenerate the Python and Go code of proto/
	$(RUN) bash scripts/gen_proto.sh
	PATH="$$(go env GOPATH)/bin:$$PATH" $(RUN) bash clients/go/generate.sh

.PHONY: format
format: install  ## Format Python and Rust
	$(RUN) ruff format .
	$(RUN) ruff check --fix .
	cargo fmt --all

.PHONY: lint lint-python lint-rust
lint: lint-python lint-rust  ## ruff, mypy (strict), stubtest, cargo fmt --check, clippy -D warnings

lint-python: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) python -m mypy.stubtest feature_kernels._core --allowlist .mypy-stubtest-allowlist

lint-rust:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --quiet -- -D warnings
	@# the fuzz crate has its own lock file: a new dependency of the wire codec must land in it
	cargo metadata --locked --format-version 1 --manifest-path crates/wire/fuzz/Cargo.toml >/dev/null

.PHONY: rust-test
rust-test: lint-rust  ## Rust: fmt, clippy, the workspace's tests, the decoder fuzzed for 10 s
	cargo test --workspace --quiet
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=10

.PHONY: redis
redis:  ## Install redis-server (Debian package) if missing: the tests start their own
	@command -v redis-server >/dev/null || (apt-get update && apt-get install -y --no-install-recommends redis-server)

.PHONY: prometheus
prometheus:  ## Install prometheus + promtool and amtool (Debian packages) if missing: the monitoring tests use them
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v amtool >/dev/null || (apt-get update && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager)

.PHONY: test
test: contract redis prometheus grpcurl minio java  ## The whole suite: lint, the contract (buf), Rust tests, a bounded fuzz run, pytest (CI runs exactly this)
	@# the Rust checks (debug builds) run beside the extension's release build, whose last
	@# step (fat LTO, one codegen unit) keeps one core busy and leaves the other free
	$(MAKE) --no-print-directory -j2 --output-sync=target install rust-test
	$(MAKE) --no-print-directory lint-python
	PATH="$$(go env GOPATH)/bin:$$PATH" $(RUN) pytest

FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing
FUZZ_TARGET := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
.PHONY: fuzz
fuzz:  ## Fuzz the wire decoder for FUZZ_SECONDS (libFuzzer, as `cargo fuzz run decode` builds it)
	cd crates/wire/fuzz && RUSTFLAGS="$(FUZZ_FLAGS)" cargo build --quiet --release --locked \
		--target $(FUZZ_TARGET) --bin decode
	rm -rf var/fuzz && mkdir -p var/fuzz && cp -r crates/wire/fuzz/corpus/decode var/fuzz/corpus
	crates/wire/fuzz/target/$(FUZZ_TARGET)/release/decode -max_total_time=$(FUZZ_SECONDS) \
		-artifact_prefix=var/fuzz/ -print_final_stats=1 var/fuzz/corpus 2>&1 | tail -12

.PHONY: train
train: install  ## Train the default GMSC model and register it (sets champion if none)
	$(RUN) python -m training train

.PHONY: serve
serve: install  ## Train a default model if the registry has no champion, then serve gRPC + metrics
	$(RUN) python -m training ensure-champion
	$(RUN) python -m scoring_server

.PHONY: bench
bench: install redis tools  ## In-process micro-benchmarks; ghz side by side with MLServer; production scenarios against the tonic floor; rewrites benchmarks/RESULTS.md
	$(RUN) python -m training ensure-champion
	cargo build --quiet --release --locked -p altscore-loadgen
	$(RUN) python -m benchmarks.inprocess --write benchmarks/RESULTS.md
	PATH="$$(go env GOPATH)/bin:$$PATH" $(RUN) python -m benchmarks.grpc_load --write benchmarks/RESULTS.md

.PHONY: hostile
hostile: install  ## Hostile clients (idle connections, stalled bodies, PING / reset floods, held streams) against a real server; prints a table for benchmarks/RESULTS.md
	$(RUN) python -m training ensure-champion
	$(RUN) python -m benchmarks.hostile --write benchmarks/RESULTS.md

FUZZ_CASES ?= 100000
.PHONY: fuzz-grpc
fuzz-grpc: install  ## Fuzz every RPC of a real server over gRPC (hypothesis; FUZZ_CASES, 100,000): counts by status code, fails on INTERNAL / UNKNOWN / a crash; writes benchmarks/RESULTS.md
	$(RUN) python -m training ensure-champion
	$(RUN) python -m benchmarks.fuzz_grpc --cases $(FUZZ_CASES) --write benchmarks/RESULTS.md

SOAK_SECONDS ?= 600
.PHONY: soak
soak: install tools  ## Soak: SOAK_SECONDS (600) at ~70 % of peak unary load (ghz): RSS every 10 s, p99 per minute, errors; writes benchmarks/RESULTS.md
	$(RUN) python -m training ensure-champion
	PATH="$$(go env GOPATH)/bin:$$PATH" $(RUN) python -m benchmarks.soak --seconds $(SOAK_SECONDS) --write benchmarks/RESULTS.md

GRPCURL_VERSION := v1.9.3
HEALTH_PROBE_VERSION := v0.4.61
GHZ_VERSION := v0.120.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.0
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
BUF_VERSION := v1.75.0
.PHONY: grpcurl
grpcurl:  ## Install grpcurl and the Go protoc plugins with `go install` (pinned): the tests use them
	@test -x "$$(go env GOPATH)/bin/grpcurl" || go install github.com/fullstorydev/grpcurl/cmd/grpcurl@$(GRPCURL_VERSION)
	@test -x "$$(go env GOPATH)/bin/protoc-gen-go" || go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@test -x "$$(go env GOPATH)/bin/protoc-gen-go-grpc" || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

.PHONY: buf
buf:  ## Install buf with `go install` (pinned): `make contract` runs it
	@test "$$("$$(go env GOPATH)/bin/buf" --version 2>/dev/null)" = "$(BUF_VERSION:v%=%)" || go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)

# The last release of proto/ (an annotated tag) and the commit it names: `buf breaking` checks
# against the tag, or against that commit in a clone that did not fetch tags.
PROTO_RELEASE := proto/v1.0.0
PROTO_RELEASE_COMMIT := 1582204604e735b9327d7e08c83684c4762426cf
.PHONY: contract
contract: buf  ## buf lint (buf.yaml: STANDARD + COMMENTS), buf format, buf breaking against the last proto release tag
	@BUF="$$(go env GOPATH)/bin/buf"; set -e; \
	"$$BUF" lint; \
	"$$BUF" format --diff --exit-code --path proto/credit; \
	if git rev-parse -q --verify "refs/tags/$(PROTO_RELEASE)" >/dev/null; then \
		test "$$(git rev-parse "$(PROTO_RELEASE)^{commit}")" = "$(PROTO_RELEASE_COMMIT)" \
			|| { echo "tag $(PROTO_RELEASE) does not name $(PROTO_RELEASE_COMMIT): fix PROTO_RELEASE_COMMIT"; exit 1; }; \
		against=".git#tag=$(PROTO_RELEASE),subdir=proto"; \
	elif git cat-file -e "$(PROTO_RELEASE_COMMIT)^{commit}" 2>/dev/null; then \
		echo "tag $(PROTO_RELEASE) not in this clone: buf breaking against its commit"; \
		against=".git#ref=$(PROTO_RELEASE_COMMIT),subdir=proto"; \
	else \
		echo "neither tag $(PROTO_RELEASE) nor commit $(PROTO_RELEASE_COMMIT) here: git fetch --tags (a full clone)"; exit 1; \
	fi; \
	"$$BUF" breaking proto --against "$$against"; \
	echo "contract: buf lint, format and breaking (against $(PROTO_RELEASE)) clean"

.PHONY: java
java:  ## Install Maven (Debian package) if missing, fetch the Java contract client's dependencies and build it (clients/java): the tests run it
	@command -v mvn >/dev/null || (apt-get update && apt-get install -y --no-install-recommends maven)
	mvn -q -B -Dstyle.color=never -f clients/java compile exec:help

.PHONY: minio
minio:  ## Install the MinIO server with `go install` (pinned): the object-store archive test runs it
	@test -x "$$(go env GOPATH)/bin/minio" || go install github.com/minio/minio@$(MINIO_VERSION)

.PHONY: tools
tools: grpcurl  ## Install grpcurl, grpc-health-probe and ghz with `go install` (pinned) into $(shell go env GOPATH 2>/dev/null)/bin
	go install github.com/grpc-ecosystem/grpc-health-probe@$(HEALTH_PROBE_VERSION)
	go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

.PHONY: clean
clean:  ## Remove local state (MLflow store, compiled models) and build output
	rm -rf var target crates/wire/fuzz/target .mypy_cache .ruff_cache .pytest_cache
