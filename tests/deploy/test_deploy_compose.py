"""docker-compose.yml: accepted by Compose (with and without the gpu profile) and wired
the way the service expects: SORA_* names that Settings knows, the model volume at
SORA_MODEL_REPOSITORY, a readiness healthcheck, a stop grace period longer than the
drain. There is no Docker engine on CI: `config` validates, nothing is built or run."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if it works, else Debian's `docker-compose` (v1)."""
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if r.returncode == 0:
            return ["docker", "compose"]
    exe = shutil.which("docker-compose")
    return [exe] if exe else None


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(value) * units[unit]
    return total


def assert_known_settings(env: dict[str, Any]) -> None:
    for key in env:
        if key.startswith("SORA_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a Sora setting"


@pytest.mark.parametrize("profile", [None, "gpu"])
def test_compose_accepts_the_file(profile: str | None, tmp_path: Path) -> None:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed "
                    "(apt-get install docker-compose)")
    args = [*cmd, "-f", str(ROOT / "docker-compose.yml")]
    if profile:
        args += ["--profile", profile]
    r = subprocess.run([*args, "config"], capture_output=True, text=True, timeout=60,
                       cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    resolved = yaml.safe_load(r.stdout)
    assert {"sora", "prometheus", "grafana"} <= set(resolved["services"])
    if profile == "gpu":
        assert "sora-gpu" in resolved["services"]


@pytest.mark.parametrize("name", ["sora", "sora-gpu"])
def test_sora_services_are_wired_to_the_settings(name: str) -> None:
    svc = compose()["services"][name]
    env = svc["environment"]
    assert_known_settings(env)
    assert f"{env.get('SORA_HTTP_PORT', 8000)}" == "8000"
    assert any(p.endswith(":8000") for p in svc["ports"])
    assert any(p.endswith(":50051") for p in svc["ports"])
    assert any(v.endswith(":" + env["SORA_MODEL_REPOSITORY"]) for v in svc["volumes"])
    assert "/health/ready" in " ".join(svc["healthcheck"]["test"])
    assert svc["restart"] == "unless-stopped"
    assert seconds(svc["stop_grace_period"]) > float(env["SORA_DRAIN_TIMEOUT_S"]) + 5


def test_gpu_variant_reserves_an_nvidia_device() -> None:
    svc = compose()["services"]["sora-gpu"]
    assert svc["profiles"] == ["gpu"]
    assert svc["environment"]["SORA_DEVICE"] == "cuda"
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "TORCH_INDEX_URL" in svc["build"]["args"]
    assert svc["image"].endswith("-gpu")
    assert "profiles" not in compose()["services"]["sora"]


def test_prometheus_scrapes_the_compose_services() -> None:
    services = compose()["services"]
    for mount in services["prometheus"]["volumes"]:
        src = mount.split(":")[0]
        if src.startswith("./"):
            assert (ROOT / src).is_file(), src
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "sora"]
    names = {n for sd in job["dns_sd_configs"] for n in sd["names"]}
    assert names == {"sora", "sora-gpu"} and names <= set(services)
    assert {sd["port"] for sd in job["dns_sd_configs"]} == {8000}
    assert job["metrics_path"] == "/metrics"


@pytest.mark.parametrize("name", ["sora", "sora-gpu"])
def test_compile_cache_is_a_named_volume(name: str) -> None:
    # A restart (or a rebuilt image) compiles from the kernels the last run built.
    spec = compose()
    svc = spec["services"][name]
    cache_dir = svc["environment"]["SORA_COMPILE_CACHE_DIR"]
    mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
    (target,) = [t for t in mounts if cache_dir.startswith(t.rstrip("/") + "/")]
    assert mounts[target] in spec["volumes"]  # named, so it outlives the container
    assert seconds(svc["healthcheck"]["start_period"]) <= 60  # compiling is not waited for
