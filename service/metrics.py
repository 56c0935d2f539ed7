"""Prometheus metrics: the only module that touches prometheus_client.

`Metrics` is an engine stats listener (`registry.add_listener(metrics)`): it turns the
engine's RequestStats/StepStats records into series. Front ends report what never
reaches the engine (requests rejected at submit: overloaded, invalid, unavailable)
through `request_rejected()`, and HTTP responses through `http_request()`.

Names follow `sora_<what>_<unit>`; labels are low-cardinality only: model, task,
protocol, outcome/reason (stable error codes), step kind, HTTP route template and code.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from service.engine.stats import EngineRestart, Record, RequestStats, StepStats

# No `*_created` series: they double the exposition and no Sora dashboard uses them.
disable_created_metrics()

if TYPE_CHECKING:
    from service.engine.protocol import EngineClient
    from service.engine.registry import ModelRegistry

# Seconds: from GPU milliseconds to CPU tens of seconds.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0,
    60.0,
)
# Per-token times are shorter than whole requests.
TOKEN_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SUCCESS_OUTCOMES = ("eos", "length")
UNKNOWN = "unknown"  # model label when the request named no servable model


class Metrics:
    """Every Sora series, in its own CollectorRegistry (so tests and several servers in
    one process do not collide)."""

    # The classic text format: every Prometheus release parses it.
    content_type = CONTENT_TYPE_PLAIN_0_0_4

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        req = ("model", "task", "protocol")
        self.requests = Counter(
            "sora_requests", "Requests finished or rejected, by outcome (eos, length or an "
            "error code)", [*req, "outcome"], registry=r,
        )
        self.failures = Counter(
            "sora_request_failures", "Requests that failed or were rejected, by reason",
            [*req, "reason"], registry=r,
        )
        self.duration = Histogram(
            "sora_request_duration_seconds", "Arrival to last token, per request",
            req, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue = Histogram(
            "sora_request_queue_duration_seconds", "Arrival to first scheduled",
            req, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "sora_time_to_first_token_seconds", "Arrival to first generated token",
            req, buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tpot = Histogram(
            "sora_time_per_output_token_seconds", "Mean time per generated token after the "
            "first", req, buckets=TOKEN_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter(
            "sora_prompt_tokens", "Source tokens encoded", req, registry=r,
        )
        self.generated_tokens = Counter(
            "sora_generated_tokens", "Tokens generated", req, registry=r,
        )
        self.batch_size = Histogram(
            "sora_batch_size", "Rows in each engine step", ["model", "kind"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.step_duration = Histogram(
            "sora_step_duration_seconds", "Duration of one engine step (prefill or decode)",
            ["model", "kind"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.running = Gauge(
            "sora_running_requests", "Sequences (rows) in the running batch", ["model"],
            registry=r,
        )
        self.waiting = Gauge(
            "sora_waiting_requests", "Sequences queued for the running batch", ["model"],
            registry=r,
        )
        self.model_info = Gauge(
            "sora_model_info", "Models being served (value 1)",
            ["model", "version", "device", "dtype"], registry=r,
        )
        self.compiled = Gauge(
            "sora_model_compiled", "1 once the model's compiled encoder and decode steps "
            "are in use; 0 while it is served eagerly (compiling, off or failed)", ["model"],
            registry=r,
        )
        self.engine_restarts = Counter(
            "sora_engine_restarts", "Engine-core processes replaced after dying", ["model"],
            registry=r,
        )
        self.http_requests = Counter(
            "sora_http_requests", "HTTP responses by route template and status code",
            ["route", "code"], registry=r,
        )
        self._models: ModelRegistry | None = None
        self._lock = threading.Lock()

    # -- engine listener (called from engine threads) ----------------------------------

    def __call__(self, record: Record) -> None:
        if isinstance(record, RequestStats):
            self._request(record)
        elif isinstance(record, StepStats):
            self._step(record)
        elif isinstance(record, EngineRestart):
            self.engine_restarts.labels(record.model).inc()

    def _request(self, s: RequestStats) -> None:
        if s.protocol == "warmup":
            return
        labels = (s.model, s.task, s.protocol)
        self.requests.labels(*labels, s.outcome).inc()
        if s.outcome not in SUCCESS_OUTCOMES:
            self.failures.labels(*labels, s.outcome).inc()
            return
        self.duration.labels(*labels).observe(s.e2e_s)
        self.queue.labels(*labels).observe(s.queue_s)
        if s.ttft_s is not None:
            self.ttft.labels(*labels).observe(s.ttft_s)
        if s.tpot_s is not None:
            self.tpot.labels(*labels).observe(s.tpot_s)
        self.prompt_tokens.labels(*labels).inc(s.prompt_tokens)
        self.generated_tokens.labels(*labels).inc(s.generated_tokens)

    def _step(self, s: StepStats) -> None:
        self.batch_size.labels(s.model, s.kind).observe(s.batch_size)
        self.step_duration.labels(s.model, s.kind).observe(s.duration_s)
        self.running.labels(s.model).set(s.running)
        self.waiting.labels(s.model).set(s.waiting)

    # -- front ends ----------------------------------------------------------------------

    def request_rejected(self, model: str | None, task: str, protocol: str, reason: str) -> None:
        """A request the engine never accepted (invalid, overloaded, unavailable, unknown
        model). `reason` is a stable error code."""
        labels = (model or UNKNOWN, task, protocol)
        self.requests.labels(*labels, reason).inc()
        self.failures.labels(*labels, reason).inc()

    def http_request(self, route: str, code: int) -> None:
        self.http_requests.labels(route, str(code)).inc()

    # -- exposition ----------------------------------------------------------------------

    def bind(self, models: ModelRegistry) -> None:
        """Read live engine load and model info from `models` at every scrape (the step
        records alone leave the gauges stale once an engine goes idle)."""
        self._models = models

    def refresh(self) -> None:
        models = self._models
        if models is None:
            return
        with self._lock:
            self.model_info.clear()
            self.compiled.clear()
            for engine in models.engines():
                info = engine.info()
                self.model_info.labels(info.name, info.version, info.device, info.dtype).set(1)
                self.compiled.labels(engine.name).set(1 if engine.compiled else 0)
                running, waiting = engine_load(engine)
                self.running.labels(engine.name).set(running)
                self.waiting.labels(engine.name).set(waiting)

    def render(self) -> bytes:
        """The Prometheus text exposition of every series."""
        self.refresh()
        return generate_latest(self.registry)


def engine_load(engine: EngineClient) -> tuple[int, int]:
    """(running rows, waiting sequences) of an engine right now."""
    return engine.running, engine.waiting
