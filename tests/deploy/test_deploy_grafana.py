"""The Grafana provisioning and dashboard are well-formed and cover what issue #7 asks
for. (That every expression names real series is test_deploy_metric_names.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"


def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / "sora.json").read_text())


def panels(d: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def test_dashboard_parses_with_unique_ids_and_targets() -> None:
    d = dashboard()
    assert d["uid"] == "sora-overview" and d["title"] == "Sora"
    ps = panels(d)
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids))
    for p in ps:
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["expr"].strip(), p["title"]
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in panels(dashboard()):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_dashboard_covers_the_asked_views() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", []))
             for p in panels(dashboard())}
    everything = " ".join(exprs.values())
    assert "by (task, protocol)" in exprs["Throughput by task and protocol"]
    assert "histogram_quantile(0.99" in exprs["Request latency percentiles"]
    assert "sora_time_to_first_token_seconds_bucket" in exprs["Time to first token"]
    assert "sora_waiting_requests" in exprs["Queue length and running batch"]
    assert "sora_batch_size" in exprs["Batch size"]
    assert "sora_generated_tokens_total" in exprs["Tokens / s"]
    assert "by (reason)" in exprs["Errors by reason"]
    assert "$__rate_interval" in everything


def test_provisioning_points_at_the_compose_mounts() -> None:
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert dashboard()["templating"]["list"][0]["current"]["value"] == source["uid"]

    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "sora.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
