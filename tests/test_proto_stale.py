"""The committed gRPC stubs are exactly what scripts/gen_proto.sh makes from the .proto.

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
STUBS = ("sora_pb2.py", "sora_pb2.pyi", "sora_pb2_grpc.py")


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (the dev extra) is not installed")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True, capture_output=True, env={**os.environ, "PYTHON": sys.executable},
    )
    stale = [
        name for name in STUBS
        if (tmp_path / "sora" / "v1" / name).read_text()
        != (ROOT / "proto" / "sora" / "v1" / name).read_text()
    ]
    assert not stale, f"stale gRPC stubs {stale}: run scripts/gen_proto.sh and commit them"
