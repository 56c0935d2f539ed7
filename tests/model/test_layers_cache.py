"""Incremental decoding with the KV cache computes what full recomputation computes,
whatever the padding, batch company, row selection or cache concatenation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor

from model.cache import KVCache
from model.generation import pad_batch
from model.sora import Sora

ATOL = 1e-4


def sources(model: Sora, lengths: list[int], seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    eos = model.config.eos_id
    return [[*torch.randint(3, model.config.vocab_size, (n - 1,), generator=g).tolist(), eos]
            for n in lengths]


def src_tensor(model: Sora, srcs: list[list[int]]) -> Tensor:
    return pad_batch(srcs, model.config.pad_id, torch.device("cpu"))


def greedy_logits(model: Sora, cache: KVCache, tokens: Tensor, steps: int) -> list[Tensor]:
    """Greedy-decode `steps` steps from `tokens`; the (batch, vocab) logits of each."""
    out = []
    for _ in range(steps):
        logits = model.decode_step(tokens, cache)
        out.append(logits)
        tokens = logits.argmax(-1)
    return out


def solo(model: Sora, src: list[int], steps: int) -> Tensor:
    """(steps, vocab) logits of `src` decoded greedily on its own."""
    cache = model.prefill(src_tensor(model, [src]), capacity=4)  # small: exercises growth
    bos = torch.tensor([model.config.bos_id])
    return torch.stack([lg[0] for lg in greedy_logits(model, cache, bos, steps)])


@torch.inference_mode()
@pytest.mark.parametrize("lengths", [[7, 7], [3, 20, 11]], ids=["unpadded", "padded"])
def test_incremental_equals_full_recomputation(tiny_model: Sora, lengths: list[int]) -> None:
    model = tiny_model
    src = src_tensor(model, sources(model, lengths))
    tgt = torch.randint(3, model.config.vocab_size, (len(lengths), 12),
                        generator=torch.Generator().manual_seed(1))
    tgt[:, 0] = model.config.bos_id
    full = model(src, tgt).logits  # (batch, 12, vocab)
    cache = model.prefill(src, capacity=5)
    steps = torch.stack([model.decode_step(tgt[:, t], cache) for t in range(12)], dim=1)
    assert cache.positions.tolist() == [12] * len(lengths) and cache.capacity >= 12
    torch.testing.assert_close(steps, full, atol=ATOL, rtol=0)


@torch.inference_mode()
def test_encoder_ignores_padding(tiny_model: Sora) -> None:
    # The same source alone and right-padded next to a long one encodes the same.
    model = tiny_model
    a, long = sources(model, [5, 30])
    alone = model.encode(src_tensor(model, [a]))
    batched = model.encode(src_tensor(model, [a, long]))
    torch.testing.assert_close(batched[0, :5], alone[0], atol=ATOL, rtol=0)


def test_packed_encoder_equals_padded(tiny_model: Sora, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping the padding changes nothing the model computes: outputs at real
    positions, zeros at padded ones, and the gradients of a training step."""
    import model.sora as sora_module

    model = copy.deepcopy(tiny_model).train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 0.0
    src = src_tensor(model, sources(model, [3, 20, 11]))
    valid = src != model.config.pad_id
    runs = []
    for share in (0.0, 1.0):  # 0.0: never pack, 1.0: always pack
        monkeypatch.setattr(sora_module, "PACK_ABOVE", share)
        model.zero_grad()
        memory = model.encode(src)
        (memory * valid[..., None]).square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        runs.append((memory.detach(), grads))
    (padded, g_padded), (packed, g_packed) = runs
    torch.testing.assert_close(packed[valid], padded[valid], atol=ATOL, rtol=0)
    assert not packed[~valid].any()
    assert len(g_packed) == len(g_padded) > 0
    for a, b in zip(g_packed, g_padded, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_solo_equals_padded_batch(tiny_model: Sora) -> None:
    model = tiny_model
    srcs = sources(model, [4, 40, 13, 2], seed=2)
    batch = model.prefill(src_tensor(model, srcs), capacity=8)
    bos = torch.full((len(srcs),), model.config.bos_id)
    together = torch.stack(greedy_logits(model, batch, bos, 10), dim=1)  # (batch, 10, vocab)
    for row, src in enumerate(srcs):
        torch.testing.assert_close(together[row], solo(model, src, 10), atol=ATOL, rtol=0)


@torch.inference_mode()
def test_select_and_concat_mid_generation(tiny_model: Sora) -> None:
    """Rows A, B decode 3 steps; a freshly prefilled C joins (its own slots from 0, its
    source right-padded); later A is dropped. Each row keeps matching its solo run."""
    model = tiny_model
    a, b, c = sources(model, [6, 25, 14], seed=3)
    expect = {name: solo(model, s, 9) for name, s in (("a", a), ("b", b), ("c", c))}
    bos = model.config.bos_id

    ab = model.prefill(src_tensor(model, [a, b]), capacity=4)
    tokens = torch.tensor([bos, bos])
    for step, logits in enumerate(greedy_logits(model, ab, tokens, 3)):
        torch.testing.assert_close(logits[0], expect["a"][step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], expect["b"][step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)

    cc = model.prefill(src_tensor(model, [c]), capacity=4)
    abc = KVCache.concat([ab, cc])
    assert abc.batch_size == 3 and abc.src_padded and not abc.aligned
    assert abc.positions.tolist() == [3, 3, 0] and abc.max_position == 3
    tokens = torch.cat([tokens, torch.tensor([bos])])
    for step, logits in enumerate(greedy_logits(model, abc, tokens, 3)):
        torch.testing.assert_close(logits[0], expect["a"][3 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], expect["b"][3 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[2], expect["c"][step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)

    # Drop A and swap B and C; compaction trims C's unused source padding away.
    cb = abc.select(torch.tensor([2, 1]))
    tokens = tokens[[2, 1]]
    for step, logits in enumerate(greedy_logits(model, cb, tokens, 3)):
        torch.testing.assert_close(logits[0], expect["c"][3 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], expect["b"][6 + step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)


@torch.inference_mode()
def test_select_trims_unused_source(tiny_model: Sora) -> None:
    model = tiny_model
    long, short = sources(model, [30, 5], seed=4)
    old = model.prefill(src_tensor(model, [long]))
    greedy_logits(model, old, torch.tensor([model.config.bos_id]), 4)
    both = KVCache.concat([old, model.prefill(src_tensor(model, [short]))])
    greedy_logits(model, both, torch.tensor([5, model.config.bos_id]), 1)
    assert both.positions.tolist() == [5, 1] and both.src_valid.shape[1] == 30
    only_new = both.select(torch.tensor([1]))
    # The new row's 25 source positions of padding go; its slots stay its own.
    assert only_new.max_position == 1 and only_new.aligned
    assert only_new.src_valid.shape[1] == 5 and not only_new.src_padded
    assert only_new.cross_k[0].shape[2] == 5


@torch.inference_mode()
def test_free_and_fill_in_place(tiny_model: Sora) -> None:
    """A, B, C decode; B finishes and is parked (computed on, ignored); a fresh D with a
    longer source takes B's row without copying A's or C's slots. A, C and D each keep
    matching their solo runs, and the parked row never turns the batch non-finite."""
    model = tiny_model
    a, b, c, d = sources(model, [6, 25, 14, 40], seed=5)
    expect = {name: solo(model, s, 12) for name, s in (("a", a), ("c", c), ("d", d))}
    bos = model.config.bos_id

    cache = model.prefill(src_tensor(model, [a, b, c]), capacity=4)
    tokens = torch.full((3,), bos)
    for logits in greedy_logits(model, cache, tokens, 3):
        tokens = logits.argmax(-1)
    keys_a = cache.self_k[0][0].clone()
    cache.free([1])
    assert cache.parked is not None and cache.parked.tolist() == [False, True, False]
    assert cache.positions.tolist() == [3, 0, 3] and cache.max_position == 3
    for step, logits in enumerate(greedy_logits(model, cache, tokens, 2)):
        assert bool(logits.isfinite().all())
        torch.testing.assert_close(logits[0], expect["a"][3 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[2], expect["c"][3 + step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)
    assert cache.positions.tolist() == [5, 0, 5]  # the parked row stays at 0

    self_k_before = cache.self_k[0]
    cache.fill([1], model.prefill(src_tensor(model, [d])))
    assert cache.parked is None and cache.src_valid.shape[1] == 40
    assert cache.self_k[0] is self_k_before  # self slots untouched, not copied
    torch.testing.assert_close(cache.self_k[0][0, :, :3], keys_a[:, :3])
    tokens[1] = bos
    for step, logits in enumerate(greedy_logits(model, cache, tokens, 7)):
        torch.testing.assert_close(logits[0], expect["a"][5 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], expect["d"][step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[2], expect["c"][5 + step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)


@torch.inference_mode()
def test_fill_with_a_longer_source_pads_the_others(tiny_model: Sora) -> None:
    """Rows of one source length need no cross mask; a newcomer with a longer source
    makes theirs padded, and they must stay masked from then on."""
    model = tiny_model
    a, b, c = sources(model, [9, 9, 20], seed=6)
    expect = {name: solo(model, s, 6) for name, s in (("a", a), ("c", c))}
    cache = model.prefill(src_tensor(model, [a, b]))
    assert not cache.src_padded
    tokens = torch.full((2,), model.config.bos_id)
    for logits in greedy_logits(model, cache, tokens, 2):
        tokens = logits.argmax(-1)
    cache.free([1])
    cache.fill([1], model.prefill(src_tensor(model, [c])))
    assert cache.src_padded and cache.src_valid.sum(1).tolist() == [9, 20]
    tokens[1] = model.config.bos_id
    for step, logits in enumerate(greedy_logits(model, cache, tokens, 4)):
        torch.testing.assert_close(logits[0], expect["a"][2 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[1], expect["c"][step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)


@torch.inference_mode()
def test_free_trims_a_long_source_gone(tiny_model: Sora) -> None:
    model = tiny_model
    long, a, b = sources(model, [30, 5, 6], seed=7)
    expect = {name: solo(model, s, 6) for name, s in (("a", a), ("b", b))}
    cache = model.prefill(src_tensor(model, [long, a, b]))
    tokens = torch.full((3,), model.config.bos_id)
    for logits in greedy_logits(model, cache, tokens, 2):
        tokens = logits.argmax(-1)
    cache.free([0])
    assert cache.src_valid.shape[1] == 6 and cache.cross_k[0].shape[2] == 6
    assert bool(cache.src_valid[0, 0])  # the parked row still attends somewhere
    for step, logits in enumerate(greedy_logits(model, cache, tokens, 4)):
        assert bool(logits.isfinite().all())
        torch.testing.assert_close(logits[1], expect["a"][2 + step], atol=ATOL, rtol=0)
        torch.testing.assert_close(logits[2], expect["b"][2 + step], atol=ATOL, rtol=0)
        tokens = logits.argmax(-1)


def test_fill_takes_fresh_rows_only(tiny_model: Sora) -> None:
    with torch.inference_mode():
        model = tiny_model
        cache = model.prefill(src_tensor(model, sources(model, [4, 5])))
        greedy_logits(model, cache, torch.full((2,), model.config.bos_id), 1)
        cache.free([0])
        used = model.prefill(src_tensor(model, sources(model, [6])))
        greedy_logits(model, used, torch.tensor([model.config.bos_id]), 1)
        with pytest.raises(ValueError, match="freshly prefilled"):
            cache.fill([0], used)


def test_concat_rejects_empty(tiny_model: Sora) -> None:
    with torch.inference_mode():
        cache = tiny_model.prefill(src_tensor(tiny_model, sources(tiny_model, [4])))
        empty = cache.select(torch.tensor([], dtype=torch.long))
    assert empty.batch_size == 0
    with pytest.raises(ValueError, match="at least one non-empty cache"):
        KVCache.concat([empty])


@torch.inference_mode()
def test_decode_past_max_target_positions(tiny_model: Sora) -> None:
    model = tiny_model
    cache = model.prefill(src_tensor(model, sources(model, [4])))
    for _ in range(model.config.max_target_positions):
        model.decode_step(torch.tensor([5]), cache)
    with pytest.raises(ValueError, match="max_target_positions"):
        model.decode_step(torch.tensor([5]), cache)


@torch.inference_mode()
def test_source_too_long(tiny_model: Sora) -> None:
    n = tiny_model.config.max_source_positions + 1
    with pytest.raises(ValueError, match=f"source has {n} tokens"):
        tiny_model.encode(torch.ones(1, n, dtype=torch.long))
