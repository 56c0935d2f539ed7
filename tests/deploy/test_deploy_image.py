"""What the Docker image does, without Docker (CI has no engine): the Dockerfile's own
`pip install` lines, read from it, run in a fresh virtual environment over a copy of
the build context that .dockerignore allows; then `sora serve` from that installation
(not this checkout) must become ready, answer a translate request, pass the image's
HEALTHCHECK command, and exit 0 on SIGTERM.

Slow (installs torch and the serving stack into a new venv): pytest -m slow.
One deliberate difference: the torch line's `--index-url` (the PyTorch CPU index) is
dropped, so pip takes the same torch release from the index this machine is set up
with; the version pin is kept."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_deploy_dockerfile import dockerignore_allows, instructions, pip_installs

ROOT = Path(__file__).resolve().parents[2]
TRAINING_ONLY = ("sacrebleu", "rouge_score", "matplotlib", "lz4", "pytest")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def build_context(dest: Path) -> Path:
    """The files `COPY . /src` would see, less checkpoints/ (the Dockerfile's source
    stage removes it before the install)."""
    for path in sorted(ROOT.rglob("*")):
        rel = path.relative_to(ROOT).as_posix()
        if path.is_file() and not rel.startswith("checkpoints/") and dockerignore_allows(rel):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
    return dest


def mirror(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--index-url":
            skip = True
        else:
            out.append(a)
    return out


def run(cmd: list[str], cwd: Path, timeout: float = 900) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def test_image_install_serves_and_stops_cleanly(
    tmp_path: Path, tiny_checkpoint: Path, serve: Any
) -> None:
    installs = pip_installs()
    assert [a for a in installs[0] if a.startswith("torch==")], installs[0]
    assert installs[1] == [".[serve]"], installs

    context = build_context(tmp_path / "src")
    assert (context / "pyproject.toml").is_file() and not (context / "tests").exists()
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = venv / "bin" / "python"
    for args in installs:
        run([str(python), "-m", "pip", "install", "-q", *mirror(args)], cwd=context)

    # Serving only: nothing from the train or dev extras came along.
    probe = ("import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] "
             "if importlib.util.find_spec(m)]))")
    r = subprocess.run([str(python), "-c", probe, *TRAINING_ONLY], capture_output=True,
                       text=True, cwd=tmp_path, check=True)
    assert json.loads(r.stdout) == [], f"training/dev packages in the image: {r.stdout}"
    where = subprocess.run([str(python), "-c", "import service; print(service.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True)
    assert str(venv) in where.stdout, "service must come from the new venv, not the checkout"

    assert (venv / "bin" / "sora").is_file(), "the install made no `sora` entry point"

    # A model repository as the image lays it out: /models/NAME/ is a checkpoint.
    models = tmp_path / "models"
    shutil.copytree(tiny_checkpoint, models / "sora-default")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    server = serve.start(serve.executable(python), models, tmp_path / "serve.log",
                         cwd=run_dir, env={"SORA_LOG_FORMAT": "json"})
    try:
        response = httpx.post(f"{server.http_url}/v1/translate", timeout=60, json={
            "text": "Hello world, how are you today?", "target_lang": "de",
            "options": {"max_new_tokens": 4}})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "sora-default" and len(body["results"]) == 1

        # The image's HEALTHCHECK command, as written, passes against the server.
        (health,) = [rest for word, rest in instructions() if word == "HEALTHCHECK"]
        cmd = json.loads(health[health.index("CMD") + 3:].strip())
        assert cmd[0] == "python"
        port = server.http_url.rsplit(":", 1)[1]
        check = subprocess.run([str(python), *cmd[1:]], capture_output=True, text=True,
                               timeout=10, env={**os.environ, "SORA_HTTP_PORT": port})
        assert check.returncode == 0, check.stderr
    finally:
        code = serve.stop(server)
    assert code == 0, f"exit {code} after SIGTERM:\n{server.logs()}"
