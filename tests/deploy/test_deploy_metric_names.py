"""Every PromQL expression shipped in deploy/ (Grafana dashboard, alert rules,
prometheus-adapter rules) and the HPA's metric name must name series that a running
`sora serve` really exports, with labels those series really carry. Checked against
the live /metrics of a server that has answered requests, not against a list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

# Labels Prometheus adds when scraping (compose: job, instance, service; Kubernetes:
# namespace, pod), not the exporter.
TARGET_LABELS = {"job", "instance", "service", "namespace", "pod"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
}
NAME = re.compile(r"\b(sora_[a-zA-Z0-9_]+)")
SELECTOR = re.compile(r"\b(sora_[a-zA-Z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
TEMPLATE = re.compile(r"<<[^>]*>>")


def exported_series(text: str) -> dict[str, set[str] | None]:
    """Sample name -> label names seen on it (None: declared, no sample yet)."""
    series: dict[str, set[str] | None] = {}
    for family in text_string_to_metric_families(text):
        for suffix in SUFFIXES.get(family.type, ("",)):
            series.setdefault(family.name + suffix, None)
        for sample in family.samples:
            labels = series.get(sample.name) or set()
            series[sample.name] = labels | set(sample.labels)
    return series


def references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(sora metric -> label names matched in its selectors, grouping label names)."""
    expr = TEMPLATE.sub("", expr)
    metrics: dict[str, set[str]] = {}
    for name, matchers in SELECTOR.findall(STRING.sub('""', expr)):
        metrics.setdefault(name, set()).update(MATCHER.findall(matchers))
    bare = STRING.sub('""', expr)
    for name in NAME.findall(bare):
        metrics.setdefault(name, set())
    grouping = {
        label.strip() for group in GROUPING.findall(bare)
        for label in group.split(",") if label.strip()
    }
    return metrics, grouping


def check_expr(expr: str, series: dict[str, set[str] | None]) -> list[str]:
    """Problems with `expr` against the exported series (empty: fine)."""
    problems = []
    metrics, grouping = references(expr)
    known_labels: set[str] = set(TARGET_LABELS)
    for name, matched in metrics.items():
        if name not in series:
            problems.append(f"{name} is not exported")
            continue
        labels = series[name]
        if labels is None:
            continue  # declared but no sample yet: label names unknown
        known_labels |= labels
        for label in matched - labels - TARGET_LABELS:
            problems.append(f"{name} has no label {label!r} (has {sorted(labels)})")
    if any(series.get(n) is None for n in metrics if n in series):
        return problems
    for label in grouping - known_labels:
        problems.append(f"grouping by {label!r}, which no referenced series carries")
    return problems


# -- where the expressions live ----------------------------------------------------------

def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "sora.json").read_text())
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                found.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            expr = re.sub(r"label_values\((.*),\s*\w+\)", r"\1", q)
            found.append((f"variable {var['name']}", expr))
    return found


def alert_exprs() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(f"alert {r['alert']}", r["expr"]) for g in rules["groups"] for r in g["rules"]]


def adapter_rules() -> list[dict[str, Any]]:
    values = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter" / "values.yaml").read_text())
    return list(values["rules"]["custom"])


def adapter_exprs() -> list[tuple[str, str]]:
    found = []
    for rule in adapter_rules():
        found.append((f"adapter seriesQuery {rule['name']['as']}", rule["seriesQuery"]))
        series_name = NAME.search(rule["seriesQuery"])
        assert series_name, rule["seriesQuery"]
        metrics_query = rule["metricsQuery"].replace("<<.Series>>", series_name.group(1))
        found.append((f"adapter metricsQuery {rule['name']['as']}", metrics_query))
    return found


def hpa_pod_metrics() -> list[tuple[Path, str]]:
    found = []
    for path in sorted((DEPLOY / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
                for m in doc["spec"].get("metrics", []):
                    if m["type"] == "Pods":
                        found.append((path, m["pods"]["metric"]["name"]))
    return found


# -- the parser itself, on fixed input ---------------------------------------------------

def test_references_reads_names_selectors_and_grouping() -> None:
    metrics, grouping = references(
        'histogram_quantile(0.99, sum by (le, task) (rate(sora_x_bucket{model=~"$m",'
        'outcome!~"a|b"}[5m]))) / on (job) sora_y and up{job="sora_not_a_metric"}'
    )
    assert metrics == {"sora_x_bucket": {"model", "outcome"}, "sora_y": set()}
    assert grouping == {"le", "task", "job"}


def test_check_expr_flags_unknown_metrics_and_labels() -> None:
    series = {"sora_a_total": {"model", "task"}, "sora_b": None}
    assert check_expr('sum by (task) (rate(sora_a_total{model="m"}[1m]))', series) == []
    assert check_expr("sora_missing_total", series) == ["sora_missing_total is not exported"]
    assert check_expr('sora_a_total{reason="x"}', series)[0].startswith("sora_a_total has no")
    assert check_expr("sum by (kind) (sora_a_total)", series)[0].startswith("grouping by 'kind'")


# -- against the live server -------------------------------------------------------------

@pytest.fixture(scope="module")
def series(live_metrics_text: str) -> dict[str, set[str] | None]:
    series = exported_series(live_metrics_text)
    # The requests made by the fixture must have produced labelled samples, or the label
    # checks below would pass vacuously.
    for name in ("sora_requests_total", "sora_request_duration_seconds_bucket",
                 "sora_time_to_first_token_seconds_bucket", "sora_batch_size_bucket",
                 "sora_waiting_requests", "sora_model_info", "sora_generated_tokens_total",
                 "sora_request_failures_total"):
        assert series.get(name), f"{name}: no samples after the fixture's requests"
    return series


@pytest.mark.parametrize("source", ["dashboard", "alerts", "adapter"])
def test_promql_names_only_exported_series(
    source: str, series: dict[str, set[str] | None]
) -> None:
    exprs = {"dashboard": dashboard_exprs, "alerts": alert_exprs, "adapter": adapter_exprs}[
        source
    ]()
    assert exprs
    problems = [f"{where}: {p}" for where, expr in exprs for p in check_expr(expr, series)]
    assert not problems, "\n".join(problems)


def test_hpa_pod_metrics_are_served_by_the_adapter_and_exported(
    series: dict[str, set[str] | None],
) -> None:
    served = {rule["name"]["as"]: rule for rule in adapter_rules()}
    metrics = hpa_pod_metrics()
    assert metrics, "no HPA with a Pods metric under deploy/k8s"
    for path, name in metrics:
        assert name in served, f"{path}: HPA metric {name} has no prometheus-adapter rule"
        source = NAME.search(served[name]["seriesQuery"])
        assert source and source.group(1) in series, f"{name}: its series is not exported"


def test_exported_outcomes_match_the_alerts_success_set(
    live_metrics_text: str,
) -> None:
    """The error-rate alert treats outcome eos|length as success: both must be real
    outcome values, and the fixture's failures must show up under other outcomes."""
    outcomes = {
        s.labels["outcome"]
        for f in text_string_to_metric_families(live_metrics_text)
        if f.name == "sora_requests"
        for s in f.samples if s.name == "sora_requests_total"
    }
    assert outcomes & {"eos", "length"}, outcomes
    assert outcomes - {"eos", "length"}, f"no failure outcome recorded: {outcomes}"
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert 'outcome!~"eos|length|' in alerts
