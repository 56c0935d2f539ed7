"""The discriminator as model code: loaded from a checkpoint (hashes checked, engine
dtype), and reranking a beam's n-best in `generate` (params.rerank)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model import discriminator as D
from model.checkpoint import CheckpointError, save_checkpoint
from model.generation import beam_nbest, generate
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer

SOURCES = ["Hello world.", "A small tool for reading files.", "The cat sleeps.",
           "Good morning, my friend.", "Where is the station?"]


@pytest.fixture(scope="module")
def disc(tiny_model: Sora) -> D.Discriminator:
    """The generator's encoder with a random (seeded) head: scores that differ per
    candidate, with no training needed."""
    torch.manual_seed(11)
    config = D.DiscriminatorConfig(tiny_model.config, hidden=16, max_source_len=64,
                                   max_candidate_len=64)
    return D.Discriminator.from_generator(tiny_model, config).eval()


@pytest.fixture(scope="module")
def disc_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Sora, tiny_tokenizer: SoraTokenizer,
    disc: D.Discriminator,
) -> Path:
    path = tmp_path_factory.mktemp("disc") / "ckpt"
    return save_checkpoint(path, tiny_model, tiny_tokenizer, extra_files=D.to_files(disc))


def test_generate_with_rerank_outputs_the_discriminators_favourite(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, disc: D.Discriminator
) -> None:
    tok = tiny_tokenizer
    params = DecodingParams(strategy="beam", beam_size=4, num_return_sequences=4,
                            max_new_tokens=8, rerank=True)
    sources = [tok.source_ids("translate", s, target_lang="de") for s in SOURCES]
    reranked = generate(tiny_model, tok, sources, params, disc)
    plain = generate(tiny_model, tok, sources, DecodingParams(strategy="beam", beam_size=4,
                                                              max_new_tokens=8))
    moved = 0
    for src, got, beam_best in zip(sources, reranked, plain, strict=True):
        hyps = beam_nbest(tiny_model, src, params)
        outs = [h.output for h in hyps]
        scores = D.score_candidates(disc, tok, src, outs)
        assert got.token_ids == outs[max(range(len(outs)), key=lambda i: scores[i])]
        assert beam_best.token_ids == outs[0]  # without rerank: the beam's best
        moved += got.token_ids != outs[0]
    assert moved  # the discriminator disagrees with the beam somewhere


def test_rerank_needs_an_nbest_and_a_discriminator(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    with pytest.raises(ValueError, match="rerank") as e:
        DecodingParams(strategy="beam", rerank=True)
    assert e.value.field == "rerank"  # type: ignore[attr-defined]
    params = DecodingParams(strategy="beam", num_return_sequences=2, rerank=True)
    src = tiny_tokenizer.source_ids("translate", "Hello", target_lang="de")
    with pytest.raises(ValueError, match="needs a discriminator"):
        generate(tiny_model, tiny_tokenizer, [src], params)


def test_rerank_orders_by_score_with_ties_in_beam_order(
    tiny_tokenizer: SoraTokenizer, disc: D.Discriminator
) -> None:
    tok = tiny_tokenizer
    src = tok.source_ids("translate", "Hello world.", target_lang="de")
    cands = [tok.encode("Hallo Welt."), tok.encode("x y z"), tok.encode("Hallo Welt."), []]
    scores = D.score_candidates(disc, tok, src, cands)
    ranked = D.rerank(disc, tok, src, cands)
    assert [s for _, s in ranked] == sorted(scores, reverse=True)
    assert [scores[i] for i, _ in ranked] == [s for _, s in ranked]
    order = [i for i, _ in ranked]
    assert order.index(0) < order.index(2)  # equal candidates: the beam's order stays


def test_load_discriminator_reads_listed_files_checks_hashes_and_casts(
    disc_checkpoint: Path, disc: D.Discriminator, tmp_path: Path, tiny_model: Sora,
    tiny_tokenizer: SoraTokenizer,
) -> None:
    manifest = json.loads((disc_checkpoint / "manifest.json").read_text())
    assert D.has_discriminator(manifest)
    loaded = D.load_discriminator(disc_checkpoint, dtype=torch.bfloat16, manifest=manifest)
    assert not loaded.training
    for name, tensor in disc.state_dict().items():
        got = loaded.state_dict()[name]
        assert got.dtype == torch.bfloat16 and torch.equal(got, tensor.to(torch.bfloat16))
    bad = shutil.copytree(disc_checkpoint, tmp_path / "bad")
    config = json.loads((bad / D.CONFIG_FILE).read_text())
    config["hidden"] = 8  # a changed shape, not matching the manifest's hash
    (bad / D.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"discriminator\.json: sha256 mismatch"):
        D.load_discriminator(bad)
    # Files the manifest does not list are never read.
    plain = save_checkpoint(tmp_path / "plain", tiny_model, tiny_tokenizer)
    shutil.copy(disc_checkpoint / D.WEIGHTS_FILE, plain / D.WEIGHTS_FILE)
    shutil.copy(disc_checkpoint / D.CONFIG_FILE, plain / D.CONFIG_FILE)
    assert not D.has_discriminator(json.loads((plain / "manifest.json").read_text()))
    with pytest.raises(FileNotFoundError, match="carries no discriminator"):
        D.load_discriminator(plain)
