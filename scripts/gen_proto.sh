#!/usr/bin/env bash
# Regenerates the gRPC Python stubs from proto/sora/v1/sora.proto (the source of truth).
#   scripts/gen_proto.sh            writes proto/sora/v1/sora_pb2{,_grpc}.py{,i}
#   scripts/gen_proto.sh OUT_DIR    writes OUT_DIR/sora/v1/... (tests/test_proto_stale.py)
# PYTHON picks the interpreter (default: .venv/bin/python, else python3); it needs
# grpcio-tools (the dev extra). Commit the regenerated stubs with the .proto change.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-proto}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
mkdir -p "$out"
"$python" -m grpc_tools.protoc -I proto \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  proto/sora/v1/sora.proto
# protoc writes `from sora.v1 import sora_pb2`, which only works with proto/ on sys.path;
# a package-relative import works wherever the `proto` package is installed.
sed -i 's/^from sora\.v1 import sora_pb2 as /from . import sora_pb2 as /' \
  "$out/sora/v1/sora_pb2_grpc.py"
