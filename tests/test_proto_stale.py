"""The committed gRPC stubs are exactly what scripts/gen_proto.sh makes from the .proto
files (sora.v1 and the Open Inference Protocol's `inference` package).

When this fails, run `scripts/gen_proto.sh` and commit the regenerated files. The
generated code records the grpcio-tools version, so regenerate with the version the
dev extra installs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBS = (
    "sora/v1/sora_pb2.py", "sora/v1/sora_pb2.pyi", "sora/v1/sora_pb2_grpc.py",
    "inference/grpc_service_pb2.py", "inference/grpc_service_pb2.pyi",
    "inference/grpc_service_pb2_grpc.py",
)


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) is not installed")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable},
    )
    stale = [
        name for name in STUBS
        if (tmp_path / name).read_text() != (ROOT / "proto" / name).read_text()
    ]
    assert not stale, f"stale gRPC stubs {stale}: run scripts/gen_proto.sh and commit them"


def test_oip_stubs_coexist_with_other_copies_of_the_protocol() -> None:
    """Our `inference.*` messages live in their own descriptor pool, so a process may
    also import another copy of the protocol's stubs (tritonclient's) in any order."""
    pytest.importorskip("tritonclient.grpc")
    code = (
        "from proto.inference import grpc_service_pb2 as ours\n"
        "from tritonclient.grpc import service_pb2 as theirs\n"
        "r = ours.ModelInferRequest(model_name='m', raw_input_contents=[b'x'])\n"
        "assert theirs.ModelInferRequest.FromString(r.SerializeToString()).model_name == 'm'\n"
    )
    for source in (code, "import tritonclient.grpc\n" + code):
        subprocess.run([sys.executable, "-c", source], check=True, cwd=ROOT)
