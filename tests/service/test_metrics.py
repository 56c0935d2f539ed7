"""service/metrics.py: series from engine records and front-end reports, and the
/metrics exposition of a running server (checked by `promtool check metrics`)."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.engine.stats import RequestStats, StepStats
from service.metrics import LATENCY_BUCKETS, Metrics


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def stats(outcome: str = "eos", protocol: str = "http", **kw: Any) -> RequestStats:
    values: dict[str, Any] = {
        "model": "m", "task": "translate", "protocol": protocol, "outcome": outcome,
        "queue_s": 0.01, "ttft_s": 0.02, "tpot_s": 0.005, "e2e_s": 0.2,
        "prompt_tokens": 7, "generated_tokens": 11,
    }
    values.update(kw)
    return RequestStats(**values)


def test_request_records() -> None:
    m = Metrics()
    m(stats())
    m(stats(outcome="length", protocol="grpc"))
    m(stats(outcome="deadline_exceeded", ttft_s=None, tpot_s=None))
    m(stats(protocol="warmup"))  # warm-up is not traffic
    req = {"model": "m", "task": "translate", "protocol": "http"}
    assert sample(m, "sora_requests_total", **req, outcome="eos") == 1
    assert sample(m, "sora_requests_total", **{**req, "protocol": "grpc"}, outcome="length") == 1
    assert sample(m, "sora_request_failures_total", **req, reason="deadline_exceeded") == 1
    assert sample(m, "sora_prompt_tokens_total", **req) == 7
    assert sample(m, "sora_generated_tokens_total", **req) == 11
    assert sample(m, "sora_request_duration_seconds_count", **req) == 1
    assert sample(m, "sora_time_to_first_token_seconds_sum", **req) == pytest.approx(0.02)
    assert sample(m, "sora_time_per_output_token_seconds_count", **req) == 1
    assert sample(m, "sora_request_queue_duration_seconds_bucket", **req, le="0.01") == 1
    assert sample(m, "sora_requests_total", model="m", task="translate", protocol="warmup",
                  outcome="eos") is None


def test_step_records_and_rejections() -> None:
    m = Metrics()
    m(StepStats("m", "prefill", 0.003, 4, 40, 4, 2))
    m(StepStats("m", "decode", 0.001, 4, 4, 3, 2))
    assert sample(m, "sora_batch_size_sum", model="m", kind="prefill") == 4
    assert sample(m, "sora_step_duration_seconds_count", model="m", kind="decode") == 1
    assert sample(m, "sora_running_requests", model="m") == 3
    assert sample(m, "sora_waiting_requests", model="m") == 2
    m.request_rejected(None, "answer", "grpc", "overloaded")
    m.request_rejected("m", "answer", "http", "invalid_argument")
    assert sample(m, "sora_requests_total", model="unknown", task="answer", protocol="grpc",
                  outcome="overloaded") == 1
    assert sample(m, "sora_request_failures_total", model="m", task="answer",
                  protocol="http", reason="invalid_argument") == 1
    m.http_request("/v1/translate", 200)
    assert sample(m, "sora_http_requests_total", route="/v1/translate", code="200") == 1


def test_buckets_span_milliseconds_to_a_minute() -> None:
    assert LATENCY_BUCKETS[0] <= 0.001 and LATENCY_BUCKETS[-1] >= 60
    text = Metrics().render().decode()
    assert "# TYPE sora_requests_total counter" in text
    assert "_created" not in text


def test_two_instances_do_not_collide() -> None:
    a, b = Metrics(), Metrics()
    a(stats())
    assert sample(b, "sora_requests_total", model="m", task="translate", protocol="http",
                  outcome="eos") is None


def test_exposition_after_traffic(server: Any) -> None:
    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        assert c.post("/v1/translate", json={"text": "Hello", "target_lang": "de",
                                             "options": {"max_new_tokens": 3}}).status_code == 200
        assert c.post("/v1/translate", json={"text": "Hello", "target_lang": "xx"}
                      ).status_code == 400
        r = c.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    fams = families(r.text)
    for name in ("sora_requests", "sora_request_duration_seconds",
                 "sora_request_queue_duration_seconds", "sora_time_to_first_token_seconds",
                 "sora_time_per_output_token_seconds", "sora_batch_size",
                 "sora_step_duration_seconds", "sora_running_requests",
                 "sora_waiting_requests", "sora_prompt_tokens", "sora_generated_tokens",
                 "sora_request_failures", "sora_model_info", "sora_http_requests"):
        assert name in fams, name
    # The session server is shared with other protocols' tests: look at HTTP's series.
    ok = [s for s in fams["sora_requests"].samples
          if s.labels.get("outcome") in ("eos", "length") and s.labels["task"] == "translate"
          and s.labels["protocol"] == "http"]
    assert ok and all(s.labels["model"] == "tiny" and s.value >= 1 for s in ok)
    failed = [s for s in fams["sora_request_failures"].samples
              if s.labels.get("reason") == "invalid_argument"]
    assert failed and failed[0].value >= 1
    [info] = fams["sora_model_info"].samples
    assert info.labels == {"model": "tiny", "version": "1", "device": "cpu", "dtype": "float32"}
    assert info.value == 1
    routes = {(s.labels["route"], s.labels["code"]) for s in fams["sora_http_requests"].samples}
    assert ("/v1/translate", "200") in routes and ("/v1/translate", "400") in routes


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed "
                    "(apt-get install prometheus; scripts/setup.sh does)")
def test_promtool_accepts_the_exposition(server: Any) -> None:
    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        c.post("/v1/summarize", json={"text": "Some text", "options": {"max_new_tokens": 2}})
        text = c.get("/metrics").text
    done = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
