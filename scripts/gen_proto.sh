#!/usr/bin/env bash
# Regenerates every gRPC Python stub from its .proto (the source of truth):
#   proto/sora/v1/sora.proto               -> proto/sora/v1/sora_pb2{,_grpc}.py{,i}
#   proto/inference/grpc_service.proto     -> proto/inference/grpc_service_pb2{,_grpc}.py{,i}
# Usage:
#   scripts/gen_proto.sh            writes the stubs next to the .proto files
#   scripts/gen_proto.sh OUT_DIR    writes OUT_DIR/sora/v1/..., OUT_DIR/inference/...
#                                   (tests/test_proto_stale.py)
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
  proto/sora/v1/sora.proto proto/inference/grpc_service.proto
# protoc writes `from sora.v1 import sora_pb2`, which only works with proto/ on sys.path;
# a package-relative import works wherever the `proto` package is installed.
sed -i 's/^from sora\.v1 import sora_pb2 as /from . import sora_pb2 as /' \
  "$out/sora/v1/sora_pb2_grpc.py"
sed -i 's/^from inference import grpc_service_pb2 as /from . import grpc_service_pb2 as /' \
  "$out/inference/grpc_service_pb2_grpc.py"
# The `inference.*` names are also defined by other copies of the protocol's .proto
# (tritonclient's stubs, imported by the tests and by any process that embeds a
# client), and protobuf refuses a second definition of a name in one descriptor pool.
# Our stubs therefore build their messages in a pool of their own, exported as POOL
# (server reflection serves from it).
sed -i 's/^DESCRIPTOR = _descriptor_pool\.Default()\.AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  "$out/inference/grpc_service_pb2.py"
grep -q '^POOL = ' "$out/inference/grpc_service_pb2.py" \
  || { echo "gen_proto.sh: could not give grpc_service_pb2 its own descriptor pool" >&2; exit 1; }
