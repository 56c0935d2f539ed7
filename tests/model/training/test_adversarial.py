"""The adversarial stage's pieces on tiny real models: the discriminator (initialised
from the generator's encoder, stored inside the checkpoint, n-best scoring) and one
objective step (discriminator update, reward, policy-gradient + likelihood loss)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main as sora_main
from model import discriminator as D
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import SoraConfig
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training.adversarial import AdversarialObjective
from model.training.batching import collate
from model.training.distributed import DistContext
from model.training.recipe import load_recipe


@pytest.fixture(scope="module")
def generator(tiny_tokenizer: SoraTokenizer) -> Sora:
    tokenizer = tiny_tokenizer
    torch.manual_seed(0)
    cfg = SoraConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=2,
                     n_encoder_layers=1, n_decoder_layers=1, d_ff=64, dropout=0.0,
                     max_source_positions=64, max_target_positions=32,
                     pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id)
    return Sora(cfg)


def _disc(generator: Sora) -> D.Discriminator:
    config = D.DiscriminatorConfig(generator.config, hidden=16, max_source_len=64,
                                   max_candidate_len=32)
    return D.Discriminator.from_generator(generator, config)


def test_discriminator_starts_from_the_generator_encoder(generator: Sora) -> None:
    disc = _disc(generator)
    g = generator.state_dict()
    for name, tensor in disc.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(tensor, g[name]), name


def test_discriminator_travels_inside_the_checkpoint(
    generator: Sora, tiny_tokenizer: SoraTokenizer, tmp_path: Path
) -> None:
    tokenizer = tiny_tokenizer
    disc = _disc(generator)
    with torch.no_grad():
        last = disc.head[2]
        assert isinstance(last, torch.nn.Linear)
        last.bias.fill_(0.25)
    save_checkpoint(tmp_path / "ckpt", generator, tokenizer, extra_files=D.to_files(disc))
    load_checkpoint(tmp_path / "ckpt")  # the extra files are hashed and verified
    again = D.load_discriminator(tmp_path / "ckpt")
    for name, tensor in disc.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor)
    (tmp_path / "ckpt" / D.WEIGHTS_FILE).write_bytes(b"tampered")
    with pytest.raises(Exception, match=r"discriminator\.safetensors"):
        D.load_discriminator(tmp_path / "ckpt")


def test_score_candidates_ranks_an_nbest_list(tiny_run: Path) -> None:
    ckpt = load_checkpoint(tiny_run / "adversarial")
    disc = D.load_discriminator(tiny_run / "adversarial")
    tok = ckpt.tokenizer
    src = tok.source_ids("translate", "A library for reading images", target_lang="de")
    cands = [tok.encode("Eine Bibliothek zum Lesen von Bildern"), tok.encode("x x x x"), []]
    scores = D.score_candidates(disc, tok, src, cands)
    assert len(scores) == 3 and all(s <= 0 for s in scores)  # log-probabilities
    # scoring is batch-independent
    assert D.score_candidates(disc, tok, src, cands[:1])[0] == pytest.approx(scores[0], abs=1e-5)


def test_objective_step_and_state_roundtrip(
    generator: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    tokenizer = tiny_tokenizer
    recipe = dataclasses.replace(load_recipe("tiny").adversarial, disc_warmup_steps=0)
    model = Sora(generator.config)
    model.load_state_dict(generator.state_dict())
    disc = _disc(model)
    obj = AdversarialObjective(recipe, tokenizer, disc, disc, DistContext(), max_new_tokens=12)
    texts = ["Hello world, how are you today?", "The quick brown fox jumps over the lazy dog."]
    sources = [tokenizer.source_ids("translate", t, target_lang="de") for t in texts]
    targets = [tokenizer.encode("Hallo Welt"), tokenizer.encode("Der schnelle braune Fuchs")]
    batch = collate(sources, targets, tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id,
                    [0, 1])
    before = {k: v.clone() for k, v in disc.state_dict().items()}
    torch.manual_seed(0)
    loss, stats = obj.loss(model, batch, 1.0 / batch.n_targets, step=5)
    loss.backward()
    assert torch.isfinite(loss)
    assert 0 <= stats["reward"] <= 1 and 0 <= stats["disc_acc"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in disc.state_dict().items())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    tensors, meta = obj.state_tensors(), obj.state_meta()
    other = AdversarialObjective(recipe, tokenizer, _disc(generator), _disc(generator),
                                 DistContext(), max_new_tokens=12)
    other.load_state(tensors, meta)
    assert other.baseline == obj.baseline
    for k, v in obj.disc.state_dict().items():
        assert torch.equal(other.disc.state_dict()[k], v)
    s1, s2 = obj.disc_opt.state_dict()["state"], other.disc_opt.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    assert np.isclose(meta["baseline"], obj.baseline)


def test_final_carries_the_discriminator_and_eval_reranks_by_it(
    tiny_run: Path, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    final = tiny_run / "final"
    manifest = json.loads((final / "manifest.json").read_text())
    # Whichever generator was kept, the adversarial stage's discriminator travels.
    assert D.has_discriminator(manifest)
    assert (final / D.WEIGHTS_FILE).read_bytes() == (
        tiny_run / "adversarial" / D.WEIGHTS_FILE).read_bytes()
    args = ["eval", "--checkpoint", str(final), "--data", str(tiny_data), "--split",
            "valid", "--tasks", "translate", "--max-examples", "3",
            "--max-new-tokens", "8", "--device", "cpu", "--rerank"]
    out = tmp_path / "rerank.json"
    assert sora_main([*args, "--beam-size", "3", "--out", str(out)]) == 0
    assert "beam 3, n-best 3 reranked decoding" in capsys.readouterr().out
    decoding = json.loads(out.read_text())["decoding"]
    assert decoding["rerank"] is True and decoding["num_return_sequences"] == 3
    assert sora_main(args) == 2  # greedy (beam size 1): no n-best to rerank
    assert "--rerank needs --beam-size > 1" in capsys.readouterr().err
