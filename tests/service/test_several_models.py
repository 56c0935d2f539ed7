"""One server, three models with different declarations: requests are routed by task
and language pair (or to the model they name) over REST, gRPC and OIP; what no model
serves is refused with what is served; listings show each model's declaration; metrics
are per model; and each model's batches hold only its own requests."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for

from model.checkpoint import save_checkpoint
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from proto.inference import grpc_service_pb2 as oip_pb
from proto.inference import grpc_service_pb2_grpc as oip_grpc
from proto.sora.v1 import sora_pb2, sora_pb2_grpc
from tests.conftest import tiny_config
from tests.service.conftest import RunningServer, launch

# name -> manifest declaration (absent keys: our own checkpoints' defaults).
MODELS: dict[str, dict[str, Any]] = {
    "general": {"tasks": ["translate", "summarize", "answer"],
                "languages": ["en", "de", "fr"]},
    "en-de": {"tasks": ["translate"], "languages": ["en", "de"],
              "language_pairs": [["en", "de"]]},
    "summ": {"tasks": ["summarize"], "languages": ["en"]},
}
SHORT = {"max_new_tokens": 4}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: SoraTokenizer) -> Path:
    root = tmp_path_factory.mktemp("several")
    for seed, (name, declared) in enumerate(MODELS.items()):
        torch.manual_seed(seed)
        model = Sora(tiny_config(tiny_tokenizer, n_encoder_layers=1,
                                 n_decoder_layers=1)).eval()
        save_checkpoint(root / name / "1", model, tiny_tokenizer,
                        info={"name": name, **declared})
    return root


@pytest.fixture(scope="module")
def srv(repo: Path) -> Iterator[RunningServer]:
    running = launch(repo, default_model="general")
    yield running
    running.stop()


def post(srv: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.http_url + path, json={"options": SHORT, **body}, timeout=60)


def test_models_list_each_declaration(srv: RunningServer) -> None:
    cards = {m["name"]: m for m in httpx.get(srv.http_url + "/v1/models").json()["models"]}
    assert sorted(cards) == ["en-de", "general", "summ"]
    assert cards["en-de"]["architecture"] == "sora"
    assert cards["en-de"]["tasks"] == ["translate"]
    assert cards["en-de"]["languages"] == ["en", "de"]
    assert cards["en-de"]["language_pairs"] == [["en", "de"]]
    assert cards["general"]["language_pairs"] is None
    assert cards["general"]["tasks"] == ["translate", "summarize", "answer"]
    assert cards["summ"]["tasks"] == ["summarize"]


@pytest.mark.parametrize(("path", "body", "model"), [
    ("/v1/translate", {"text": "Hello.", "source_lang": "en", "target_lang": "de"}, "en-de"),
    ("/v1/translate", {"text": "Hallo.", "source_lang": "de", "target_lang": "en"}, "general"),
    # No source_lang: detected (en), then the exact pair wins over the default.
    ("/v1/translate", {"text": "Hello, how are you today?", "target_lang": "de"}, "en-de"),
    ("/v1/summarize", {"text": "A long text."}, "general"),
    ("/v1/summarize", {"text": "A long text.", "model": "summ"}, "summ"),
    ("/v1/answer", {"question": "Why?", "context": "Because."}, "general"),
])
def test_rest_routes_by_task_and_pair(
    srv: RunningServer, path: str, body: dict[str, Any], model: str
) -> None:
    r = post(srv, path, body)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model


def test_rest_refusals_list_what_is_served(srv: RunningServer) -> None:
    r = post(srv, "/v1/translate", {"text": "Hello.", "source_lang": "en",
                                    "target_lang": "es"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "invalid_argument" and error["field"] == "target_lang"
    assert error["message"] == (
        "no model serves translate 'en' -> 'es'; served: en-de: translate en->de; "
        "general: translate (en, de, fr); summarize; answer; summ: summarize")
    r = post(srv, "/v1/summarize", {"text": "A text.", "model": "en-de"})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "invalid_argument", "field": "task",
        "message": "model 'en-de' does not serve summarize; it serves translate en->de"}
    r = post(srv, "/v1/summarize", {"text": "A text.", "model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "model 'nope' not found; serving en-de, general, summ"


async def test_grpc_routes_lists_and_refuses(srv: RunningServer) -> None:
    async with grpc.aio.insecure_channel(srv.grpc_target) as channel:
        stub = sora_pb2_grpc.SoraStub(channel)
        listed = await stub.ListModels(sora_pb2.ListModelsRequest())
        models = {m.name: m for m in listed.models}
        assert listed.default_model == "general"
        assert models["en-de"].architecture == "sora"
        assert [(p.source, p.target) for p in models["en-de"].language_pairs] == [("en", "de")]
        assert list(models["general"].language_pairs) == []
        assert list(models["summ"].tasks) == ["summarize"]
        options = sora_pb2.DecodingOptions(max_new_tokens=4)
        routed = await stub.Translate(sora_pb2.TranslateRequest(
            texts=["Hello.", "Good day."], source_lang="en", target_lang="de",
            options=options))
        assert routed.model == "en-de" and len(routed.results) == 2
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Translate(sora_pb2.TranslateRequest(
                texts=["Hello."], source_lang="en", target_lang="es", options=options))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "no model serves translate 'en' -> 'es'; served: en-de: " in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Answer(sora_pb2.AnswerRequest(
                questions=[sora_pb2.Question(question="Why?")], model="summ"))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "model 'summ' does not serve answer" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Summarize(sora_pb2.SummarizeRequest(texts=["x"], model="nope"))
        assert err.value.code() is grpc.StatusCode.NOT_FOUND
        stream = stub.GenerateStream(sora_pb2.GenerateStreamRequest(
            task=sora_pb2.TASK_TRANSLATE, text="Hello.", source_lang="en", target_lang="de",
            options=options))
        last = [m async for m in stream][-1]
        assert last.model == "en-de"


def test_oip_metadata_and_refusal(srv: RunningServer) -> None:
    meta = httpx.get(srv.http_url + "/v2/models/en-de").json()
    assert meta["parameters"] == {"architecture": "sora", "tasks": "translate",
                                  "languages": "en,de", "language_pairs": "en-de"}
    general = httpx.get(srv.http_url + "/v2/models/general").json()["parameters"]
    assert general == {"architecture": "sora", "tasks": "translate,summarize,answer",
                       "languages": "en,de,fr"}
    body = {"parameters": {"task": "translate", "target_lang": "fr", "max_new_tokens": 4},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                        "data": ["Hello."]}]}
    r = httpx.post(srv.http_url + "/v2/models/en-de/infer", json=body, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": "model 'en-de' does not serve translate into 'fr'; it "
                                 "serves translate en->de"}
    ok = httpx.post(srv.http_url + "/v2/models/general/infer", json=body, timeout=60)
    assert ok.status_code == 200, ok.text


async def test_oip_grpc_metadata(srv: RunningServer) -> None:
    async with grpc.aio.insecure_channel(srv.grpc_target) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        meta = await stub.ModelMetadata(oip_pb.ModelMetadataRequest(name="summ"))
    params = {k: v.string_param for k, v in meta.parameters.items()}
    assert params == {"architecture": "sora", "tasks": "summarize", "languages": "en"}


def test_metrics_carry_the_routed_model(srv: RunningServer) -> None:
    assert post(srv, "/v1/translate", {"text": "Hi.", "source_lang": "en",
                                       "target_lang": "de"}).status_code == 200
    assert post(srv, "/v1/summarize", {"text": "Text.", "model": "summ"}).status_code == 200
    text = httpx.get(srv.http_url + "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    served = {("en-de", "translate"), ("summ", "summarize")}
    for name in ("sora_requests", "sora_request_duration_seconds",
                 "sora_request_queue_duration_seconds", "sora_time_to_first_token_seconds",
                 "sora_prompt_tokens", "sora_generated_tokens"):
        seen = {(s.labels["model"], s.labels["task"]) for s in families[name].samples}
        assert served <= seen, name
    steps = {s.labels["model"] for s in families["sora_step_duration_seconds"].samples}
    assert {"en-de", "summ"} <= steps


def test_batches_never_mix_models(srv: RunningServer) -> None:
    """Requests for two models queued together: each engine batches its own three in one
    prefill, and no engine step ever holds another model's request."""
    seen: dict[str, list[set[str]]] = {}
    patched = []
    for engine in srv.registry.engines():
        runner = engine.runner
        batches = seen.setdefault(engine.name, [])

        def prefill(seqs: Any, _orig: Any = runner.prefill, _b: Any = batches) -> Any:
            _b.append({s.job.model for s in seqs} | {f"rows={len(seqs)}"})
            return _orig(seqs)

        def step(batch: Any, _orig: Any = runner.step, _b: Any = batches) -> Any:
            _b.append({s.job.model for s in batch.unique_seqs()})
            return _orig(batch)

        runner.prefill, runner.step = prefill, step
        patched.append(runner)
    bodies = [{"text": f"Hello {i}.", "source_lang": src, "target_lang": tgt}
              for i in range(3) for src, tgt in (("en", "de"), ("de", "en"))]
    results: list[httpx.Response] = []
    try:
        with srv.paused("step") as gate:
            workers = [threading.Thread(target=lambda b=b: results.append(
                post(srv, "/v1/translate", b))) for b in bodies]
            for w in workers:
                w.start()
            wait_for(lambda: srv.waiting() == 6, "six queued requests")
            gate.set()
            for w in workers:
                w.join(60)
    finally:
        for runner in patched:
            del runner.prefill, runner.step
    assert sorted(r.json()["model"] for r in results) == ["en-de"] * 3 + ["general"] * 3
    for name in ("en-de", "general"):
        assert seen[name][0] == {name, "rows=3"}  # its three requests, batched together
        assert all(models - {"rows=3"} == {name} for models in seen[name])
    assert seen["summ"] == []


def test_engine_processes_report_the_declaration(repo: Path, tmp_path: Path) -> None:
    """With each engine in a process of its own, the core sends the declaration back:
    listings and routing are the same."""
    one = tmp_path / "repo"
    shutil.copytree(repo / "en-de", one / "en-de")
    running = launch(one, engine_process=True, grpc_enabled=False)
    try:
        [card] = httpx.get(running.http_url + "/v1/models").json()["models"]
        assert (card["architecture"], card["tasks"], card["language_pairs"]) == (
            "sora", ["translate"], [["en", "de"]])
        assert post(running, "/v1/translate", {"text": "Hi.", "source_lang": "en",
                                               "target_lang": "de"}).status_code == 200
        refused = post(running, "/v1/translate", {"text": "Hi.", "source_lang": "de",
                                                  "target_lang": "en"})
        assert refused.status_code == 400
        assert refused.json()["error"]["field"] == "target_lang"  # it translates into de only
    finally:
        running.stop()
