#!/usr/bin/env bash
# Generate the Python code of proto/ into OUT (default scoring_server/grpc/_proto), with .pyi stubs.
# Imports between generated files are made package-relative (as MLServer does).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-scoring_server/grpc/_proto}"
GOOGLE_PROTOS="$(python -c 'import google.rpc.status_pb2 as m, pathlib; print(pathlib.Path(m.__file__).parents[2])')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python -m grpc_tools.protoc -I proto -I "$GOOGLE_PROTOS" \
  --python_out="$tmp" --pyi_out="$tmp" --grpc_python_out="$tmp" \
  proto/credit/scoring/v1/scoring.proto
mkdir -p "$OUT"
for f in scoring_pb2.py scoring_pb2.pyi scoring_pb2_grpc.py; do
  sed -e 's/^from credit\.scoring\.v1 import scoring_pb2/from . import scoring_pb2/' \
    "$tmp/credit/scoring/v1/$f" > "$OUT/$f"
done
printf '"""Generated from proto/credit/scoring/v1/scoring.proto by scripts/gen_proto.sh. Do not edit."""\n' > "$OUT/__init__.py"
