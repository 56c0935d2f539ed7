"""`rerank`: a model whose checkpoint carries a discriminator orders a request's n-best
by it and returns its score per candidate, the same over REST, gRPC and an engine-core
process; models without one, and requests without an n-best, get a 400 naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from model import discriminator as D
from model.checkpoint import load_checkpoint, save_checkpoint
from model.generation import beam_nbest
from model.sampling import DecodingParams
from model.tokenizer import SoraTokenizer
from tests.service.conftest import RunningServer, grpc_available, launch

TEXTS = ["Hello world.", "The cat sleeps on the sofa.", "Where is the station?"]
OPTIONS = {"strategy": "beam", "beam_size": 4, "num_return_sequences": 4,
           "max_new_tokens": 8, "rerank": True}


@pytest.fixture(scope="module")
def rerank_repo(
    tmp_path_factory: pytest.TempPathFactory, service_checkpoint: Path,
    tiny_tokenizer: SoraTokenizer,
) -> Path:
    """The service test model with a discriminator (its encoder, a random seeded head)
    saved the way the adversarial stage saves one."""
    model = load_checkpoint(service_checkpoint / "tiny").model
    torch.manual_seed(5)
    config = D.DiscriminatorConfig(model.config, hidden=16, max_source_len=64,
                                   max_candidate_len=64)
    disc = D.Discriminator.from_generator(model, config)
    root = tmp_path_factory.mktemp("rerank")
    save_checkpoint(root / "tiny", model, tiny_tokenizer, info={"name": "tiny"},
                    extra_files=D.to_files(disc))
    return root


@pytest.fixture(scope="module")
def rerank_server(rerank_repo: Path) -> Iterator[RunningServer]:
    running = launch(rerank_repo)
    yield running
    running.stop()


def _translate(srv: RunningServer, text: str, **options: Any) -> httpx.Response:
    return httpx.post(srv.http_url + "/v1/translate", timeout=60, json={
        "text": text, "target_lang": "de", "source_lang": "en",
        "options": {**OPTIONS, **options}})


def _direct(repo: Path, text: str) -> list[tuple[str, float]]:
    """The n-best scored by the discriminator called directly, best first."""
    ckpt = load_checkpoint(repo / "tiny")
    disc = D.load_discriminator(repo / "tiny")
    tok = ckpt.tokenizer
    src = tok.source_ids("translate", text, target_lang="de")
    params = DecodingParams(**{k: v for k, v in OPTIONS.items()})  # type: ignore[arg-type]
    hyps = beam_nbest(ckpt.model, src, params)
    outs = [h.output for h in hyps]
    scores = D.score_candidates(disc, tok, src, outs)
    pairs = list(zip(tok.decode_batch(outs), scores, strict=True))
    return sorted(pairs, key=lambda p: -p[1])


def test_rerank_orders_the_nbest_by_the_discriminators_score(
    rerank_server: RunningServer, rerank_repo: Path
) -> None:
    moved = 0
    for text in TEXTS:
        r = _translate(rerank_server, text)
        assert r.status_code == 200, r.text
        [result] = r.json()["results"]
        cands = result["candidates"]
        expected = _direct(rerank_repo, text)
        assert [c["text"] for c in cands] == [t for t, _ in expected]
        assert [c["discriminator_score"] for c in cands] == pytest.approx(
            [s for _, s in expected], abs=1e-5)
        scores = [c["discriminator_score"] for c in cands]
        assert scores == sorted(scores, reverse=True) and all(s < 0 for s in scores)
        assert result["text"] == cands[0]["text"]
        plain = _translate(rerank_server, text, rerank=False).json()["results"][0]
        assert {c["text"] for c in plain["candidates"]} == {c["text"] for c in cands}
        assert all(c.get("discriminator_score") is None for c in plain["candidates"])
        beam_score = {c["text"]: c["score"] for c in plain["candidates"]}
        assert [c["score"] for c in cands] == pytest.approx([beam_score[c["text"]]
                                                              for c in cands])
        moved += plain["text"] != result["text"]
    assert moved  # the discriminator disagrees with the beam somewhere


def test_models_say_whether_they_can_rerank(
    rerank_server: RunningServer, server: RunningServer
) -> None:
    for srv, can in ((rerank_server, True), (server, False)):
        [card] = httpx.get(srv.http_url + "/v1/models").json()["models"]
        assert card["can_rerank"] is can


def test_rerank_errors_name_the_field(
    rerank_server: RunningServer, server: RunningServer
) -> None:
    without_disc = _translate(server, "Hello")
    assert without_disc.status_code == 400
    err = without_disc.json()["error"]
    assert err["field"] == "options.rerank" and "discriminator" in err["message"]
    without_nbest = _translate(rerank_server, "Hello", num_return_sequences=1)
    assert without_nbest.status_code == 400
    assert without_nbest.json()["error"]["field"] == "options.rerank"


@pytest.mark.skipif(not grpc_available(), reason="gRPC front end not installed")
def test_grpc_matches_rest(rerank_server: RunningServer, server: RunningServer) -> None:
    import grpc

    from proto.sora.v1 import sora_pb2, sora_pb2_grpc

    options = sora_pb2.DecodingOptions(
        strategy=sora_pb2.DecodingOptions.STRATEGY_BEAM, beam_size=4, num_return_sequences=4,
        max_new_tokens=8, rerank=True)

    async def call(srv: RunningServer) -> Any:
        async with grpc.aio.insecure_channel(srv.grpc_target) as channel:
            stub = sora_pb2_grpc.SoraStub(channel)
            models = await stub.ListModels(sora_pb2.ListModelsRequest())
            try:
                reply = await stub.Translate(sora_pb2.TranslateRequest(
                    texts=TEXTS[:1], target_lang="de", source_lang="en", options=options))
            except grpc.aio.AioRpcError as e:
                return models, e
            return models, reply

    models, reply = asyncio.run(call(rerank_server))
    assert models.models[0].can_rerank
    rest = _translate(rerank_server, TEXTS[0]).json()["results"][0]["candidates"]
    got = [(c.text, c.discriminator_score) for c in reply.results[0].candidates]
    assert [t for t, _ in got] == [c["text"] for c in rest]
    assert [s for _, s in got] == pytest.approx([c["discriminator_score"] for c in rest],
                                                abs=1e-5)
    models, err = asyncio.run(call(server))
    assert not models.models[0].can_rerank
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.trailing_metadata() or ())["sora-error-field"] == "options.rerank"


def test_the_engine_core_process_reranks_the_same(
    rerank_server: RunningServer, rerank_repo: Path
) -> None:
    core = launch(rerank_repo, engine_process=True)
    try:
        [card] = httpx.get(core.http_url + "/v1/models").json()["models"]
        assert card["can_rerank"] is True
        for text in TEXTS[:2]:
            got = _translate(core, text).json()["results"][0]["candidates"]
            want = _translate(rerank_server, text).json()["results"][0]["candidates"]
            assert [c["text"] for c in got] == [c["text"] for c in want]
            assert [c["discriminator_score"] for c in got] == pytest.approx(
                [c["discriminator_score"] for c in want], abs=1e-5)
    finally:
        core.stop()
