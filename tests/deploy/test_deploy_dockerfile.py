"""The Dockerfile, read as text (CI has no Docker engine to build it): multi-stage,
non-root, serving dependencies only, the default checkpoint in, the ports, a readiness
HEALTHCHECK, an exec-form CMD so `sora` gets SIGTERM, and a .dockerignore that keeps
the build context to what the image needs.

`instructions()` and `pip_installs()` are also what test_deploy_image.py mirrors."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import tomllib

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def arg_defaults(path: Path = DOCKERFILE) -> dict[str, str]:
    defaults = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name] = value
    return defaults


def pip_installs(path: Path = DOCKERFILE) -> list[list[str]]:
    """The arguments after `pip install` of every RUN in the builder stage, with ARG
    defaults substituted and quotes removed."""
    args = arg_defaults(path)
    found = []
    for word, rest in instructions(path):
        if word != "RUN":
            continue
        for command in re.split(r"&&|;", rest):
            tokens = command.split()
            if tokens[:2] == ["pip", "install"]:
                words = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], t).strip("\"'")
                         for t in tokens[2:]]
                found.append(words)
    return found


def stages() -> list[str]:
    return [rest for word, rest in instructions() if word == "FROM"]


def test_multi_stage_on_python_slim() -> None:
    froms = stages()
    assert len(froms) >= 3
    assert arg_defaults()["BASE_IMAGE"] == "python:3.11-slim"
    assert froms[-1].endswith("AS runtime")
    assert "COPY --from=builder /opt/venv /opt/venv" in DOCKERFILE.read_text()


def test_installs_torch_then_the_serve_extra_only() -> None:
    installs = pip_installs()
    torch_args = installs[0]
    assert torch_args[-1] == "torch==" + arg_defaults()["TORCH_VERSION"]
    assert "--index-url" in torch_args
    assert arg_defaults()["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert installs[1] == [".[serve]"]
    assert len(installs) == 2, installs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "train" in extras  # exists, and is what the image must not install
    assert not any("train" in a or "dev" in a for a in installs[1])


def test_runtime_is_non_root_with_checkpoint_ports_healthcheck_and_exec_cmd() -> None:
    runtime = instructions()
    start = max(i for i, (w, r) in enumerate(runtime) if w == "FROM")
    runtime = runtime[start:]
    by_word: dict[str, list[str]] = {}
    for word, rest in runtime:
        by_word.setdefault(word, []).append(rest)

    (user,) = by_word["USER"]
    assert user.split(":")[0] not in ("root", "0")
    assert any("checkpoints/sora-default/" in c for c in by_word["COPY"])
    assert set(" ".join(by_word["EXPOSE"]).split()) == {"8000", "50051"}
    (health,) = by_word["HEALTHCHECK"]
    assert "/health/ready" in health and "urllib" in health and "curl" not in health
    (cmd,) = by_word["CMD"]
    assert json.loads(cmd) == ["sora", "serve"]  # exec form: sora is PID 1, gets SIGTERM


def test_env_names_are_settings() -> None:
    env = " ".join(r for w, r in instructions() if w == "ENV")
    names = re.findall(r"\b(SORA_\w+)=", env)
    assert {"SORA_MODEL_REPOSITORY", "SORA_HTTP_PORT", "SORA_GRPC_PORT"} <= set(names)
    for name in names:
        assert name[5:].lower() in Settings.model_fields, name
    # The repository the checkpoint is copied into is the one served.
    repo = re.search(r"SORA_MODEL_REPOSITORY=(\S+)", env)
    assert repo and "/models/sora-default/" in DOCKERFILE.read_text()
    assert repo.group(1) == "/models"


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes. (Enough of it for
    the simple patterns used here: a pattern also matches everything below it.)"""
    allowed = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/").removeprefix("**/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if line.lstrip("!").startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            allowed = negate
    return allowed


def test_dockerignore_keeps_the_context_to_sources_and_default_checkpoint() -> None:
    for path in ("pyproject.toml", "model/sora.py", "service/config.py", "cli/main.py",
                 "model/training/data/build.py", "proto/sora/v1/sora.proto",
                 "checkpoints/sora-default/model.safetensors"):
        assert dockerignore_allows(path), path
    for path in (".venv/bin/python", ".git/HEAD", "runs/x/log.txt", "data/raw/a.txt",
                 "tests/conftest.py", "checkpoints/other/model.safetensors",
                 "model/__pycache__/sora.cpython-311.pyc", ".pytest_cache/v/x",
                 "sora.egg-info/PKG-INFO"):
        assert not dockerignore_allows(path), path
    # Every package setuptools installs is in the context.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]["include"]
    for pattern in include:
        assert dockerignore_allows(pattern.rstrip("*") + "/__init__.py"), pattern


def test_compile_cache_dir_exists_for_the_user_and_start_period_is_short() -> None:
    # The server is ready before it compiles (compile=background): the health check's
    # start period covers loading only; inductor's cache has a directory sora can write.
    runtime = instructions()
    env = " ".join(r for w, r in runtime if w == "ENV")
    cache = re.search(r"SORA_COMPILE_CACHE_DIR=(\S+)", env)
    assert cache and cache.group(1).startswith("/var/cache/sora/")
    runs = " ".join(r for w, r in runtime if w == "RUN")
    assert f"mkdir -p {cache.group(1)}" in runs and "chown -R sora:sora /var/cache/sora" in runs
    (health,) = [r for w, r in runtime if w == "HEALTHCHECK"]
    period = re.search(r"--start-period=(\d+)s", health)
    assert period and int(period.group(1)) <= 60
