"""Imported Hugging Face models served end to end: one server holds a single-direction
Marian, a Flan-T5 (text prefixes, en -> de/fr/ro) and an NLLB (source code in the input,
target code forced as the first output token). REST, gRPC and OIP return what
`sora generate` prints for the same checkpoint, greedy and beam-4; a language only an
imported model serves is routed to it; one it does not serve is refused naming the field."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from support import wait_for

from cli.main import main as sora
from model.checkpoint import load_checkpoint
from model.generation import generate
from model.hf.importer import import_hf
from model.sampling import DecodingParams
from proto.inference import grpc_service_pb2 as oip_pb
from proto.inference import grpc_service_pb2_grpc as oip_grpc
from proto.sora.v1 import sora_pb2, sora_pb2_grpc
from service.engine.config import EngineConfig
from service.engine.engine import Engine
from service.engine.request import TaskInput
from tests.model.hf.conftest import save_marian, save_nllb, save_t5  # skips without transformers
from tests.service.conftest import RunningServer, launch
from tests.service.support import Gate, wait_until

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]
MAX_NEW = 12
STRATEGIES = {"greedy": {"strategy": "greedy", "max_new_tokens": MAX_NEW},
              "beam": {"strategy": "beam", "beam_size": 4, "max_new_tokens": MAX_NEW}}
# (model, path, request fields, `sora generate` task arguments)
CASES = [
    ("marian", "/v1/translate", {"source_lang": "en", "target_lang": "de"},
     ["--task", "translate", "--target-lang", "de"]),
    ("flan", "/v1/translate", {"source_lang": "en", "target_lang": "fr"},
     ["--task", "translate", "--source-lang", "en", "--target-lang", "fr"]),
    ("flan", "/v1/summarize", {}, ["--task", "summarize"]),
    ("nllb", "/v1/translate", {"source_lang": "en", "target_lang": "de"},
     ["--task", "translate", "--source-lang", "en", "--target-lang", "de"]),
    ("nllb", "/v1/translate", {"source_lang": "fr", "target_lang": "en"},
     ["--task", "translate", "--source-lang", "fr", "--target-lang", "en"]),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("hf")
    root = tmp_path_factory.mktemp("imported-repo")
    for name, save in (("marian", lambda p: save_marian(p, multilingual=False)),
                       ("flan", lambda p: save_t5(p, gated=True)), ("nllb", save_nllb)):
        import_hf(save(src / name), root / name / "1")
    return root


@pytest.fixture(scope="module")
def srv(repo: Path) -> Iterator[RunningServer]:
    running = launch(repo, default_model="marian")
    yield running
    running.stop()


def cli_generate(repo: Path, model: str, task_args: list[str], texts: list[str],
                 strategy: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """What `sora generate` prints for `texts`, one line each."""
    capsys.readouterr()
    options = STRATEGIES[strategy]
    argv = ["generate", "--checkpoint", str(repo / model / "1"), "--device", "cpu",
            *task_args, "--strategy", options["strategy"], "--max-new-tokens", str(MAX_NEW),
            *(["--beam-size", "4"] if strategy == "beam" else []), *texts]
    assert sora(argv) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[-1] == "" and len(lines) == len(texts) + 1
    return lines[:-1]


def post(srv: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(srv.http_url + path, json=body, timeout=60)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
@pytest.mark.parametrize(("model", "path", "fields", "task_args"), CASES)
def test_rest_equals_sora_generate(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str], model: str, path: str,
    fields: dict[str, str], task_args: list[str], strategy: str,
) -> None:
    want = cli_generate(repo, model, task_args, TEXTS, strategy, capsys)
    r = post(srv, path, {"model": model, "texts": TEXTS, "options": STRATEGIES[strategy],
                         **fields})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == model
    assert [res["text"] for res in r.json()["results"]] == want
    assert len(set(want)) > 1  # outputs that differ: the comparison can fail


def test_nllb_output_starts_with_the_forced_code(srv: RunningServer) -> None:
    """Sampling too: the first generated token is the target's code, whatever the draw
    (the completion counts it as a generated token, as generate() does)."""
    outs = {}
    for target in ("de", "fr"):
        r = post(srv, "/v1/translate", {
            "model": "nllb", "texts": TEXTS, "source_lang": "en", "target_lang": target,
            "options": {"strategy": "sample", "seed": 7, "temperature": 5.0,
                        "max_new_tokens": 1}})
        assert r.status_code == 200, r.text
        outs[target] = r.json()["results"]
    # One token, forced: the code (a special token, left out of the text).
    for results in outs.values():
        assert [(x["text"], x["usage"]["completion_tokens"]) for x in results] == \
            [("", 1)] * len(TEXTS)


def test_rows_with_different_codes_join_a_running_batch(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A request is prefilled and held before its first step; two more (other targets,
    one a beam) join the batch after it: each row is forced to its own code at its own
    first step."""
    requests = [("en", "de", "greedy"), ("en", "fr", "greedy"), ("de", "en", "beam")]
    want = [cli_generate(repo, "nllb", ["--task", "translate", "--source-lang", s,
                                        "--target-lang", t], TEXTS[2:], strategy, capsys)
            for s, t, strategy in requests]
    got: dict[int, httpx.Response] = {}

    def call(i: int) -> None:
        s, t, strategy = requests[i]
        got[i] = post(srv, "/v1/translate", {"model": "nllb", "texts": TEXTS[2:],
                                             "source_lang": s, "target_lang": t,
                                             "options": STRATEGIES[strategy]})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    with srv.paused("decode") as gate:
        threads[0].start()
        wait_for(lambda: srv.running() == 1, "the first request prefilled")
        for t in threads[1:]:
            t.start()
        wait_for(lambda: srv.waiting() == 2, "two requests waiting")
        gate.set()
        for t in threads:
            t.join(60)
    assert [[r["text"] for r in got[i].json()["results"]] for i in range(3)] == want


def test_engine_process_forces_the_code(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the engine in a process of its own, the forced code travels with the ids."""
    shutil.copytree(repo / "nllb", tmp_path / "repo" / "nllb")
    running = launch(tmp_path / "repo", engine_process=True, grpc_enabled=False)
    try:
        for strategy in STRATEGIES:
            want = cli_generate(repo, "nllb", ["--task", "translate", "--source-lang", "en",
                                               "--target-lang", "de"], TEXTS, strategy, capsys)
            r = post(running, "/v1/translate", {"texts": TEXTS, "source_lang": "en",
                                                "target_lang": "de",
                                                "options": STRATEGIES[strategy]})
            assert r.status_code == 200, r.text
            assert [res["text"] for res in r.json()["results"]] == want
    finally:
        running.stop()


def test_answer_equals_sora_generate(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    context = "the cat sat on the mat in the old house"
    for strategy in STRATEGIES:
        [want] = cli_generate(repo, "flan", ["--task", "answer", "--context", context],
                              ["where did the cat sit"], strategy, capsys)
        r = post(srv, "/v1/answer", {"model": "flan", "question": "where did the cat sit",
                                     "context": context, "options": STRATEGIES[strategy]})
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["text"] == want


def test_a_language_only_an_imported_model_serves_is_routed_to_it(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Romanian is not one of Sora's own languages; the Flan-T5 declares en -> ro."""
    want = cli_generate(repo, "flan", ["--task", "translate", "--source-lang", "en",
                                       "--target-lang", "ro"], TEXTS, "greedy", capsys)
    r = post(srv, "/v1/translate", {"texts": TEXTS, "source_lang": "en", "target_lang": "ro",
                                    "options": STRATEGIES["greedy"]})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "flan"
    assert [res["text"] for res in r.json()["results"]] == want


def test_unserved_languages_are_refused_naming_the_field(srv: RunningServer) -> None:
    r = post(srv, "/v1/translate", {"model": "marian", "text": "we like tea",
                                    "source_lang": "en", "target_lang": "fr"})
    assert r.status_code == 400
    assert r.json()["error"] == {
        "code": "invalid_argument", "field": "target_lang",
        "message": "model 'marian' does not serve translate 'en' -> 'fr'; it serves "
                   "translate en->de"}
    r = post(srv, "/v1/translate", {"model": "nllb", "text": "we like tea",
                                    "source_lang": "ro", "target_lang": "de"})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "source_lang"
    assert "it serves translate (de, en, fr)" in r.json()["error"]["message"]


def oip_body(model_fields: dict[str, Any], strategy: str) -> dict[str, Any]:
    return {"parameters": {"task": "translate", **model_fields, **STRATEGIES[strategy]},
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)],
                        "data": TEXTS}]}


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_oip_equals_sora_generate(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    want = cli_generate(repo, "nllb", ["--task", "translate", "--source-lang", "en",
                                       "--target-lang", "fr"], TEXTS, strategy, capsys)
    r = httpx.post(srv.http_url + "/v2/models/nllb/infer",
                   json=oip_body({"source_lang": "en", "target_lang": "fr"}, strategy),
                   timeout=60)
    assert r.status_code == 200, r.text
    [text] = [o for o in r.json()["outputs"] if o["name"] == "text"]
    assert text["data"] == want


def test_oip_without_the_source_nllb_needs_is_refused(srv: RunningServer) -> None:
    """OIP does not detect languages: NLLB's input needs the source code."""
    r = httpx.post(srv.http_url + "/v2/models/nllb/infer",
                   json=oip_body({"target_lang": "fr"}, "greedy"), timeout=60)
    assert r.status_code == 400
    assert "needs source_lang" in r.json()["error"]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
async def test_grpc_translate_equals_sora_generate(
    srv: RunningServer, repo: Path, capsys: pytest.CaptureFixture[str], strategy: str
) -> None:
    want = {model: cli_generate(repo, model, ["--task", "translate", "--source-lang", "en",
                                              "--target-lang", "de"], TEXTS, strategy, capsys)
            for model in ("marian", "nllb")}
    kind = sora_pb2.DecodingOptions.STRATEGY_BEAM if strategy == "beam" \
        else sora_pb2.DecodingOptions.STRATEGY_GREEDY
    options = sora_pb2.DecodingOptions(strategy=kind, beam_size=4, max_new_tokens=MAX_NEW)
    async with grpc.aio.insecure_channel(srv.grpc_target) as channel:
        stub = sora_pb2_grpc.SoraStub(channel)
        for model, texts in want.items():
            reply = await stub.Translate(sora_pb2.TranslateRequest(
                texts=TEXTS, source_lang="en", target_lang="de", model=model,
                options=options))
            assert reply.model == model
            assert [r.text for r in reply.results] == texts
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Translate(sora_pb2.TranslateRequest(
                texts=TEXTS, source_lang="en", target_lang="fr", model="marian"))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "it serves translate en->de" in err.value.details()
        oip = oip_grpc.GRPCInferenceServiceStub(channel)
        meta = await oip.ModelMetadata(oip_pb.ModelMetadataRequest(name="nllb"))
        assert meta.parameters["languages"].string_param == "de,en,fr"


async def test_a_forced_row_takes_a_parked_row_in_place(repo: Path) -> None:
    """A request that ends parks its row; a newcomer with another target code fills it
    without the batch being rebuilt, and is forced at its own first step while the
    other rows decode on: every output equals generate()'s with the same forced ids."""
    ckpt = load_checkpoint(repo / "nllb" / "1")
    config = EngineConfig(warmup=False, device="cpu", compile="off", max_waiting_steps=0)
    engine = Engine(ckpt, config, name="nllb")
    await engine.start()
    long = DecodingParams(max_new_tokens=40, ignore_eos=True)
    requests = [(TaskInput("translate", TEXTS[0], target_lang="de", source_lang="en"), long)
                for _ in range(3)]
    requests.append((TaskInput("translate", TEXTS[1], target_lang="fr", source_lang="en"),
                     DecodingParams(max_new_tokens=3, ignore_eos=True)))
    try:
        # Decode steps wait while a row is parked, then until the newcomer is in: the
        # test looks at the batch as it is instead of racing the engine.
        with Gate(engine.runner, "step", lambda b: b.parked is not None) as decode:
            jobs = [engine.submit(*r) for r in requests]
            await wait_until(lambda: decode.held == 1)
            batch = engine._batch
            assert batch is not None and batch.forced is None  # every row past its first
            newcomer = (TaskInput("translate", TEXTS[2], target_lang="en", source_lang="de"),
                        DecodingParams(max_new_tokens=30, ignore_eos=True))
            requests.append(newcomer)
            jobs.append(engine.submit(*newcomer))
            decode.hold(lambda b: b.parked is None)
            await wait_until(lambda: decode.held == 1 and batch.parked is None)
            assert engine._batch is batch  # filled in place, not concatenated
        done = await asyncio.gather(*(j.result() for j in jobs))
    finally:
        await engine.drain(timeout=10.0)
    tok = ckpt.tokenizer
    for (inp, params), completion in zip(requests, done, strict=True):
        source = tok.source_ids("translate", inp.text, inp.target_lang,
                                source_lang=inp.source_lang)
        [want] = generate(ckpt.model, tok, [source], params,
                          [tok.forced_ids("translate", inp.target_lang)])
        assert (completion.text, completion.completion_tokens) == (want.text,
                                                                   len(want.token_ids))
        assert want.token_ids[0] == tok.forced_ids("translate", inp.target_lang)[0]


def test_rest_detects_the_source_nllb_needs(srv: RunningServer) -> None:
    """REST translate without source_lang: detection supplies it (and the source code)."""
    text = "The weather is very nice today, and we are going to walk in the park."
    fields = {"model": "nllb", "text": text, "target_lang": "fr",
              "options": STRATEGIES["greedy"]}
    detected = post(srv, "/v1/translate", fields)
    given = post(srv, "/v1/translate", {**fields, "source_lang": "en"})
    assert detected.status_code == given.status_code == 200, detected.text
    [result] = detected.json()["results"]
    assert result["detected_language"]["language"] == "en"
    assert result["text"] == given.json()["results"][0]["text"]
