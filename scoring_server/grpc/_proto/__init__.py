"""Generated from proto/credit/scoring/v1/scoring.proto by scripts/gen_proto.sh. Do not edit."""
