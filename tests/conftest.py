"""Session fixtures shared by every test package: a tiny trained tokenizer, a tiny
random-weight model and that pair saved as a checkpoint. Tests use real models, only
small enough to build in well under a second."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from model.checkpoint import save_checkpoint
from model.config import SoraConfig
from model.sora import Sora
from model.tokenizer import SoraTokenizer

# Servers the tests start (in process or as `sora serve` subprocesses) decode eagerly:
# compiling costs 30-90 s per start. tests/model/test_compiled_model.py and the
# engine's compile tests turn it on where it is under test.
os.environ.setdefault("SORA_COMPILE", "off")

# A little of every script the tokenizer must handle, repeated so BPE learns merges.
CORPUS = [
    "Hello world, how are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "Hallo Welt, wie geht es dir heute? Grüße aus München.",
    "Bonjour le monde, comment ça va ? L'été est très agréable.",
    "Hola mundo, ¿cómo estás? Mañana será otro día.",
    "Ciao mondo, come stai oggi? Perché no.",
    "你好，世界！今天天气很好。我们一起去公园吧。",
    "Emoji: 🙂 🚀 👍🏽 🇩🇪 and symbols € £ ¥ ©.",
    "Summarize: the meeting covered budgets, hiring and the roadmap for next year.",
    "Question: what is the capital of France? Answer: Paris.",
] * 20


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    """Tests that run a command in process (`sora bench model --threads 1`, a server with
    SORA_TORCH_THREADS) set torch's intra-op threads for the whole process; put the count
    back, so no later test runs on another test's setting."""
    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_tokenizer() -> SoraTokenizer:
    return SoraTokenizer.train(CORPUS, vocab_size=400, min_frequency=2)


def tiny_config(tokenizer: SoraTokenizer, **overrides: object) -> SoraConfig:
    """A 2+2-layer, d_model 32 config over `tokenizer`'s vocabulary."""
    values: dict[str, object] = {
        "vocab_size": tokenizer.vocab_size,
        "d_model": 32,
        "n_heads": 4,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
        "d_ff": 64,
        "dropout": 0.0,
        "max_source_positions": 64,
        "max_target_positions": 64,
        "pad_id": tokenizer.pad_id,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
    }
    values.update(overrides)
    return SoraConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def tiny_model(tiny_tokenizer: SoraTokenizer) -> Sora:
    """Random weights (seeded), eval mode, fp32 on CPU. Do not modify: deepcopy first."""
    torch.manual_seed(1234)
    return Sora(tiny_config(tiny_tokenizer)).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Sora, tiny_tokenizer: SoraTokenizer
) -> Path:
    """`tiny_model` + `tiny_tokenizer` saved as a checkpoint directory. Read-only: copy
    it (shutil.copytree) before corrupting it."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    return save_checkpoint(path, tiny_model, tiny_tokenizer, info={"name": "tiny-test"})
