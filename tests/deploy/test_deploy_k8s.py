"""deploy/k8s: every manifest parses, every kustomization references files that exist,
and the objects agree with the service: ports 8000/50051, the health endpoints, a
grace period longer than preStop + drain, SORA_* keys that Settings knows, an HPA on a
metric the adapter serves. Where kubectl is installed, the overlays are also rendered
with `kubectl kustomize` and checked as a cluster would receive them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = ("cpu", "gpu")
KUBECTL = shutil.which("kubectl")


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def base_object(kind: str, name: str = "sora") -> dict[str, Any]:
    for res in yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"]:
        for doc in load(BASE / res):
            if doc["kind"] == kind and doc["metadata"]["name"] == name:
                return doc
    raise AssertionError(f"no {kind}/{name} in the base")


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k: v for k, v in pairs}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return c


def render(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed: structural checks only")
    r = subprocess.run([KUBECTL, "kustomize", str(K8S / "overlays" / overlay)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


# -- structure -------------------------------------------------------------------------

def test_every_manifest_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        for doc in load(path):
            assert isinstance(doc, dict), path


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.parent.relative_to(K8S)))
def test_kustomization_references_exist(path: Path) -> None:
    k = yaml.safe_load(path.read_text())
    here = path.parent
    for res in k.get("resources", []):
        target = (here / res).resolve()
        assert target.is_file() or (target / "kustomization.yaml").is_file(), res
    for patch in k.get("patches", []):
        patch_path = here / patch["path"]
        assert patch_path.is_file(), patch["path"]
        for doc in load(patch_path):  # a patch must name an object the base has
            base_object(doc["kind"], doc["metadata"]["name"])
    for gen in k.get("configMapGenerator", []):
        for env in gen.get("envs", []):
            assert (here / env).is_file(), env
        if gen.get("behavior") == "merge":
            base = yaml.safe_load((BASE / "kustomization.yaml").read_text())
            assert gen["name"] in {g["name"] for g in base["configMapGenerator"]}


def test_every_configured_setting_exists() -> None:
    keys = set(env_file(BASE / "sora.env"))
    for overlay in OVERLAYS:
        k = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
        for gen in k.get("configMapGenerator", []):
            keys |= {lit.split("=", 1)[0] for lit in gen.get("literals", [])}
    keys |= {e["name"] for e in container(base_object("Deployment")).get("env", [])}
    for key in keys:
        if key.startswith("SORA_"):
            assert key[5:].lower() in Settings.model_fields, f"{key} is not a Sora setting"


# -- the base objects ------------------------------------------------------------------

def test_deployment_ports_probes_and_shutdown() -> None:
    dep = base_object("Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}
    assert c["startupProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in ("http", 8000)

    settings = env_file(BASE / "sora.env")
    assert settings["SORA_HTTP_PORT"] == "8000" and settings["SORA_GRPC_PORT"] == "50051"
    drain = float(settings["SORA_DRAIN_TIMEOUT_S"])
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain
    assert c["envFrom"][0]["configMapRef"]["name"] == "sora-config"

    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind])
    # The image's user (Dockerfile: useradd --uid 10001).
    assert pod["securityContext"]["runAsUser"] == 10001
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8000"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_exposes_http_and_grpc() -> None:
    ports = {p["name"]: p for p in base_object("Service")["spec"]["ports"]}
    assert ports["http"]["port"] == 8000 and ports["http"]["targetPort"] == "http"
    assert ports["grpc"]["port"] == 50051 and ports["grpc"]["targetPort"] == "grpc"
    assert ports["grpc"]["appProtocol"] == "grpc"


def test_hpa_scales_on_queue_with_cpu_fallback() -> None:
    hpa = base_object("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "sora"}
    kinds = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert kinds["Pods"]["pods"]["metric"]["name"] == "sora_waiting_requests"
    assert kinds["Resource"]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 1


def test_pdb() -> None:
    pdb = base_object("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert "maxUnavailable" in pdb["spec"] or "minAvailable" in pdb["spec"]


def test_gpu_overlay_patch() -> None:
    (patch,) = load(K8S / "overlays" / "gpu" / "deployment-patch.yaml")
    pod = patch["spec"]["template"]["spec"]
    assert container(patch)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    k = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert "SORA_DEVICE=cuda" in k["configMapGenerator"][0]["literals"]
    assert k["images"][0]["newTag"].endswith("-gpu")


# -- rendered (kubectl kustomize) ------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_consistently(overlay: str) -> None:
    objs = render(overlay)
    dep = objs[("Deployment", "sora")]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    assert objs[("Service", "sora")]["spec"]["selector"].items() <= pod_labels.items()
    assert objs[("PodDisruptionBudget", "sora")]["spec"]["selector"]["matchLabels"] == selector

    (config_map,) = [o for (kind, _), o in objs.items() if kind == "ConfigMap"]
    c = container(dep)
    assert c["envFrom"][0]["configMapRef"]["name"] == config_map["metadata"]["name"]
    device = config_map["data"]["SORA_DEVICE"]
    if overlay == "gpu":
        assert device == "cuda"
        assert c["image"].endswith("-gpu")
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert dep["spec"]["template"]["spec"]["tolerations"]
    else:
        assert device == "cpu"
        assert not c["image"].endswith("-gpu")
        assert "nvidia.com/gpu" not in c["resources"]["limits"]
    # Patches replace lists: the probes and ports must survive them.
    assert {p["containerPort"] for p in c["ports"]} == {8000, 50051}
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"


def test_compile_cache_dir_is_on_a_writable_volume() -> None:
    # The root filesystem is read-only: inductor's cache must be a mounted volume, and the
    # startup probe no longer waits for compiling (it runs after ready).
    c = container(base_object("Deployment"))
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    cache_dir = env_file(BASE / "sora.env")["SORA_COMPILE_CACHE_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    (path,) = [p for p in mounts if cache_dir.startswith(p.rstrip("/") + "/")]
    volumes = {v["name"] for v in base_object("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert mounts[path] == "compile-cache" and "compile-cache" in volumes
    probe = c["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= 120
