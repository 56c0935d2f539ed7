"""What a server says about compiling: /health/ready's `compile` field and the
`sora_model_compiled` gauge flip once the background compile swaps in (readiness does
not wait for it), and compile_cache_dir points inductor's cache at a directory."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from service.main import StartupError, use_compile_cache
from tests.model.test_compiled_model import needs_compiler
from tests.service.conftest import launch
from tests.service.support import HANG_S, HeldCompile


def compiled_gauge(url: str, model: str) -> str:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return next(line.split()[-1] for line in lines
                if line.startswith(f'sora_model_compiled{{model="{model}"}}'))


@needs_compiler
def test_ready_and_metrics_say_when_the_model_is_compiled(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = HeldCompile()
    held.install(monkeypatch)
    srv = launch(tiny_checkpoint, compile="background")
    try:
        engine = srv.registry.engines()[0]
        ready = httpx.get(srv.http_url + "/health/ready")
        assert ready.status_code == 200  # serving eagerly while it compiles
        assert ready.json() == {"status": "ready", "compile": {engine.name: "compiling"}}
        assert compiled_gauge(srv.http_url, engine.name) == "0.0"
        r = httpx.post(srv.http_url + "/v1/translate", timeout=30,
                       json={"text": "Hello world.", "target_lang": "de"})
        assert r.status_code == 200
        held.release.set()
        assert engine.compile_settled.wait(HANG_S)
        ready = httpx.get(srv.http_url + "/health/ready")
        assert ready.json() == {"status": "ready", "compile": {engine.name: "compiled"}}
        assert compiled_gauge(srv.http_url, engine.name) == "1.0"
        again = httpx.post(srv.http_url + "/v1/translate", timeout=30,
                           json={"text": "Hello world.", "target_lang": "de"})
        assert again.json()["results"] == r.json()["results"]  # eager == compiled
    finally:
        held.release.set()
        srv.stop()


def test_compile_cache_dir_is_created_and_given_to_inductor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)  # restored afterwards
    use_compile_cache(None)
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    use_compile_cache(tmp_path / "cache" / "inductor")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "inductor")
    assert (tmp_path / "cache" / "inductor").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(StartupError, match="compile_cache_dir"):
        use_compile_cache(tmp_path / "file" / "cache")

