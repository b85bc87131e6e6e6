#!/usr/bin/env bash
# Generate the Go code of proto/ into OUT (default gen/go), with protoc-gen-go and
# protoc-gen-go-grpc (`go install`, pinned in the Makefile) run by grpcio-tools' protoc.
# PYTHON: the interpreter with grpcio-tools (default: `python` on PATH).
set -euo pipefail
cd "$(dirname "$0")"
OUT="${1:-gen/go}"
BIN="$(go env GOPATH)/bin"
mkdir -p "$OUT"
"${PYTHON:-python}" -m grpc_tools.protoc -I ../../proto \
  --plugin=protoc-gen-go="$BIN/protoc-gen-go" --plugin=protoc-gen-go-grpc="$BIN/protoc-gen-go-grpc" \
  --go_out="$OUT" --go_opt=module=github.com/altscore/altscore/gen/go \
  --go-grpc_out="$OUT" --go-grpc_opt=module=github.com/altscore/altscore/gen/go \
  credit/scoring/v1/scoring.proto
