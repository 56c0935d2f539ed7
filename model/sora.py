"""The Sora encoder-decoder Transformer: encode() once, decode_step() per token.

One class for Sora's own models and imported ones (Marian, BART, M2M100, T5): what
differs between them is chosen once from `SoraConfig` at construction (model.variants,
model.positions), so the steps below read the same for every family."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.cache import KVCache
from model.config import SoraConfig
from model.layers import (
    Attend,
    DecoderLayer,
    EncoderLayer,
    OneDNNLinear,
    PackedLinear,
    Packing,
    fused_attention,
    matmul_attention,
)
from model.positions import RelativeBias, absolute_positions
from model.variants import make_final_norm, make_norm

# encode() drops the padding of a batch whose real tokens are fewer than this share of it.
PACK_ABOVE = 0.9


def sparse_packing(valid: Tensor) -> Packing | None:
    """The packing of a batch's real tokens (`valid`: (batch, length)) where dropping
    the padding pays (at most PACK_ABOVE of it real), else None: the encoder's layers
    and the cross-attention projections both run on it."""
    if int(valid.sum()) > PACK_ABOVE * valid.numel():
        return None
    return Packing.of(valid)

# Sora._encode_packed's signature: (h, index, rows, mask, batch, length) -> memory.
EncodePacked = Callable[[Tensor, Tensor, Tensor, Tensor, int, int], Tensor]
DecodeStep = Callable[[Tensor, KVCache, Attend], Tensor]
# F.linear's signature: (input, weight, bias) -> output.
Linear = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class CompiledSteps:
    """A model's decode step (up to the decoder's final hidden state) and packed encoder
    through torch.compile, warmed up (`Sora.compiled_steps`); in use once
    `Sora.use_compiled` installs them."""

    decode: DecodeStep
    encode: EncodePacked


@dataclass
class ModelOutput:
    logits: Tensor  # (batch, tgt_len, vocab)
    loss: Tensor | None = None


class Sora(nn.Module):
    logits_bias: Tensor | None  # (target vocab,) final_logits_bias, a buffer as in Marian/BART

    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        # Marian's separate target vocabulary: the decoder's own embedding (which a tied
        # output projection shares). None: the decoder reads `embed` too.
        self.target_embed: nn.Embedding | None = None
        if config.target_vocab_size:
            self.target_embed = nn.Embedding(config.target_vocab_size, config.d_model,
                                             padding_idx=config.pad_id)
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embeddings else 1.0
        self.source_positions, self.target_positions = absolute_positions(config)
        # BART's norm after embeddings + positions, one per side.
        embed_norm = make_norm if config.embedding_norm else (lambda _: nn.Identity())
        self.source_embed_norm = embed_norm(config)
        self.target_embed_norm = embed_norm(config)
        self.dropout = nn.Dropout(config.dropout)
        self.encoder_layers = nn.ModuleList(
            EncoderLayer(config) for _ in range(config.n_encoder_layers)
        )
        self.encoder_norm = make_final_norm(config)
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(config) for _ in range(config.n_decoder_layers)
        )
        self.decoder_norm = make_final_norm(config)
        # T5's relative positions: a bias per stack, which the masks carry into attention.
        self.encoder_bias: RelativeBias | None = None
        self.decoder_bias: RelativeBias | None = None
        if config.positions == "relative":
            self.encoder_bias = RelativeBias(config, bidirectional=True)
            self.decoder_bias = RelativeBias(config, bidirectional=False)
        self.lm_head: nn.Linear | None = None
        self._output_linear: Linear = F.linear
        self._compiled_decode: DecodeStep | None = None
        self._compiled_encode: EncodePacked | None = None
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.d_model, config.decoder_vocab_size, bias=False)
        self.register_buffer(
            "logits_bias",
            torch.zeros(config.decoder_vocab_size) if config.final_logits_bias else None,
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=module.embedding_dim**-0.5)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def column_major_decoder(self) -> Sora:
        """Store the decoder's Linear weights and the tied embedding column-major, for
        fp32 inference on CPU (elsewhere a no-op). Each decode step multiplies (rows, d)
        activations by these weights; MKL's GEMM runs ~1.6x faster at 16 rows and a few
        percent at 64 when the (in, out) operand is untransposed, with the same outputs
        (tested). Embedding lookups read strided rows instead (~2% of a prefill).
        Loading weights afterwards (`load_state_dict`) keeps the layout; training never
        uses it."""
        weight = self.embed.weight
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return self
        params = [m.weight for m in self.decoder_layers.modules() if isinstance(m, nn.Linear)]
        params.append(self.output_weight)
        with torch.no_grad():
            for p in params:
                p.data = p.data.t().contiguous().t()
        return self

    def use_onednn(self) -> Sora:
        """Run the output projection and the decoder's linear layers through oneDNN's
        kernel, for fp32 inference on CPU (elsewhere, or without oneDNN, a no-op). On
        this project's AMD CPU, MKL's sgemm behind F.linear ran the output projection
        ((rows, d) by (d, vocab 58k)) at half oneDNN's speed at 16-64 rows (and copies
        the bias into the output first), the same at one row; with the decoder's
        layers on oneDNN too, decode steps ran 1.10x at 64 rows, 1.12x at 16; with
        their weights packed once (`PackedLinear`: a second copy of the decoder's and
        output weights in memory), 1.09x more at 64 rows. Outputs equal F.linear's to
        rounding (tested). Compiled steps keep F.linear (`OneDNNLinear`). Inference
        only: the kernel has no backward, and training never calls this."""
        weight = self.embed.weight
        if (weight.device.type != "cpu" or weight.dtype != torch.float32
                or not torch.backends.mkldnn.is_available()):
            return self
        self._output_linear = PackedLinear()
        for module in self.decoder_layers.modules():
            if type(module) is nn.Linear:
                module.__class__ = OneDNNLinear
                module.onednn = PackedLinear()
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- pieces ------------------------------------------------------------------------

    def _embed_source(self, ids: Tensor, positions: Tensor) -> Tensor:
        x = self.embed(ids) * self.embed_scale + self.source_positions(positions)
        return self.dropout(self.source_embed_norm(x))

    @property
    def target_embedding(self) -> nn.Embedding:
        """The decoder's token embedding: the target side's own, else the shared one."""
        return self.target_embed if self.target_embed is not None else self.embed

    @property
    def output_weight(self) -> Tensor:
        """The output projection's (target vocab, d_model) weight: the untied head's, else
        the decoder's embedding."""
        return self.lm_head.weight if self.lm_head is not None else self.target_embedding.weight

    def _embed_target(self, ids: Tensor, positions: Tensor) -> Tensor:
        x = self.target_embedding(ids) * self.embed_scale + self.target_positions(positions)
        return self.dropout(self.target_embed_norm(x))

    def output_logits(self, hidden: Tensor) -> Tensor:
        """Tied (or separate) output projection, plus the final logits bias where the
        model has one; softmax is left to the caller."""
        return self._output_linear(hidden, self.output_weight, self.logits_bias)

    # -- masks: boolean, or a float bias carrying T5's relative positions ---------------

    def source_mask(self, valid: Tensor | None, length: int) -> Tensor | None:
        """The encoder's self-attention mask for sources of `length` whose real tokens are
        `valid` (batch, length), or None for unpadded sources."""
        allowed = None if valid is None else valid[:, None, None, :]
        if self.encoder_bias is None:
            return allowed
        return self.encoder_bias.full(length, length, allowed)

    def target_mask(self, valid: Tensor | None, length: int) -> Tensor | None:
        """The decoder's teacher-forced self-attention mask (causal), or None when plain
        causal attention will do."""
        if valid is None and self.decoder_bias is None:
            return None
        allowed = torch.ones(length, length, dtype=torch.bool, device=self.embed.weight.device)
        allowed = allowed.tril()[None, None]
        if valid is not None:
            allowed = allowed & valid[:, None, None, :]
        if self.decoder_bias is None:
            return allowed
        return self.decoder_bias.full(length, length, allowed)

    def step_mask(self, cache: KVCache) -> Tensor | None:
        """This decode step's self-attention mask: the cache's, with the relative bias of
        each row's one new query where the model has one."""
        if self.decoder_bias is None:
            return cache.self_mask()
        return self.decoder_bias.step(cache.positions, cache.span, cache.self_mask())

    def encode(self, src_ids: Tensor, src_valid: Tensor | None = None) -> Tensor:
        """src_ids: (batch, src_len), right-padded. Returns (batch, src_len, d_model)."""
        if src_ids.shape[1] > self.config.max_source_positions:
            raise ValueError(
                f"source has {src_ids.shape[1]} tokens; the model accepts at most "
                f"{self.config.max_source_positions}"
            )
        if src_valid is None:
            src_valid = src_ids != self.config.pad_id
        b, t = src_ids.shape
        x = self._embed_source(src_ids, torch.arange(t, device=src_ids.device))
        padded = not bool(src_valid.all())
        mask = self.source_mask(src_valid if padded else None, t)
        packing = sparse_packing(src_valid) if padded else None
        if packing is None:
            for layer in self.encoder_layers:
                x = layer(x, mask)
            return self.encoder_norm(x)
        # Sources of mixed lengths: run the layers on the real tokens only (padding
        # would cost as much as real tokens in every projection and feed-forward), and
        # return zeros at padded positions.
        assert mask is not None
        run = self._compiled_encode or self._encode_packed
        return run(packing.pack(x), packing.index, packing.rows, mask, b, t)

    def _encode_packed(
        self, h: Tensor, index: Tensor, rows: Tensor, mask: Tensor, batch: int, length: int
    ) -> Tensor:
        """The layers and final norm on the real tokens h (n_real, d_model); returns
        (batch, length, d_model). Packing's parts come as tensors and ints, which is what
        a compiled function takes as inputs."""
        packing = Packing(index, rows, batch, length)
        for layer in self.encoder_layers:
            h = cast(EncoderLayer, layer).forward_packed(h, packing, mask)
        return packing.unpack(self.encoder_norm(h))

    # -- incremental decoding ----------------------------------------------------------

    def new_cache(self, memory: Tensor, src_valid: Tensor, capacity: int = 32) -> KVCache:
        """A cache for fresh rows: cross keys/values projected once, no tokens yet."""
        b = memory.shape[0]
        h, d = self.config.n_heads, self.config.head_dim
        # Mixed source lengths: project the real tokens only, as encode() runs them.
        packing = sparse_packing(src_valid)
        if packing is not None:
            memory = packing.pack(memory)
        cross_k, cross_v = [], []
        for layer in self.decoder_layers:
            k, v = cast(DecoderLayer, layer).cross_attn.project_memory(memory, packing)
            # Contiguous, as every cache operation (select, concat, fill) leaves them: a
            # compiled decoder would compile again for the strides of the view.
            cross_k.append(k.contiguous())
            cross_v.append(v.contiguous())
        # One spare slot: a compiled decoder's steps read below the capacity.
        capacity = min(capacity, self.config.max_target_positions) + 1
        zeros = cross_k[0].new_zeros(b, h, capacity, d)
        return KVCache(
            self_k=[zeros.clone() for _ in self.decoder_layers],
            self_v=[zeros.clone() for _ in self.decoder_layers],
            cross_k=cross_k,
            cross_v=cross_v,
            src_valid=src_valid,
            positions=torch.zeros(b, dtype=torch.long, device=memory.device),
            src_padded=not bool(src_valid.all()),
        )

    def prefill(self, src_ids: Tensor, capacity: int = 32) -> KVCache:
        """Encode right-padded sources and return their decoder cache."""
        src_valid = src_ids != self.config.pad_id
        return self.new_cache(self.encode(src_ids, src_valid), src_valid, capacity)

    def decode_step(self, tokens: Tensor, cache: KVCache) -> Tensor:
        """tokens: (batch,) the last token of each row. Returns (batch, vocab) logits."""
        if cache.max_position >= self.config.max_target_positions:
            raise ValueError(
                f"target longer than max_target_positions ({self.config.max_target_positions})"
            )
        compiled = self._compiled_decode
        cache.begin_step(uniform=compiled is not None)
        if compiled is None:
            hidden = self._decode(tokens, cache, fused_attention)
        else:
            hidden = compiled(tokens, cache, matmul_attention)
        cache.end_step()
        return self.output_logits(hidden)

    def _decode(self, tokens: Tensor, cache: KVCache, attend: Attend) -> Tensor:
        """The decoder's final states (batch, d_model) for one new token per row. The
        output projection stays outside, where a compiled step leaves it: inductor
        calls a BLAS routine for it either way, and oneDNN's (`use_onednn`) does
        not compile at dynamic batch sizes."""
        x = self._embed_target(tokens[:, None], cache.positions[:, None])  # (batch, 1, d_model)
        mask = self.step_mask(cache)
        for i, layer in enumerate(self.decoder_layers):
            x = cast(DecoderLayer, layer).step(x, cache, i, mask, attend)
        return self.decoder_norm(x[:, 0])

    def compile_for_inference(self) -> Sora:
        """Compile (`compiled_steps`) and use the compiled steps at once. Raises, and
        leaves the model eager, when the compiler fails. For inference only: training
        never calls it."""
        self.use_compiled(self.compiled_steps())
        return self

    def compiled_steps(self) -> CompiledSteps:
        """Decode steps and the encoder's layers on packed sources through torch.compile
        (inductor). It fuses the small ops between the matrix products (norms,
        residuals, activation, attention's scale, mask and softmax, the packing's
        gathers) and drops most of the per-op dispatch: ~1.1-1.3x the eager decode step
        on CPU at batch 1 to 64, ~1.3x the eager encoder at batch 64. Every compiled step
        writes and masks as if its rows were at different positions
        (`KVCache.begin_step(uniform=True)`), so a few graphs serve every step, batch
        size and source length. A warm-up compiles them now (~90 s on a 2-core CPU,
        ~30 s when inductor's on-disk cache has them) so that no request waits for it.
        The model itself stays eager until `use_compiled`: another thread may serve
        with it meanwhile. Raises when the compiler fails (no C++ compiler,
        unsupported device)."""
        # Every model compiled in this process shares each function's graph cache: models
        # of one shape reuse its graphs, each other shape adds two. Dynamo's default limit
        # (8 per function) would send a fifth shape back to eager.
        dynamo = torch._dynamo.config
        dynamo.recompile_limit = max(dynamo.recompile_limit, 64)
        steps = CompiledSteps(torch.compile(self._decode, dynamic=True),
                              torch.compile(self._encode_packed, dynamic=True))
        # The warm-up runs on a shallow copy that shares every weight and module, with
        # the steps installed on it alone.
        twin = copy.copy(self)
        twin.use_compiled(steps)
        twin._warm_up()
        return steps

    def use_compiled(self, steps: CompiledSteps | None) -> None:
        """Run encode() and decode_step() through `steps` from the next call (None: run
        eagerly). A cache built by either kind of step continues under the other.
        Callers that decode on another thread install between two steps."""
        self._compiled_decode = steps.decode if steps is not None else None
        self._compiled_encode = steps.encode if steps is not None else None

    @torch.inference_mode()
    def _warm_up(self) -> None:
        """Compile every graph: batch 1, then batch 64 (which compiles the graphs for any
        batch size), then a third size that must reuse them. Inductor decides which loops
        run in parallel from the sizes a graph was compiled at: compiled at batch 2, the
        norms, cache writes and softmaxes ran on one thread, and batch-64 generation was
        ~15% slower than compiled at 64 rows (the engine's default batch)."""
        device = self.embed.weight.device
        first = min(3, self.config.vocab_size - 1)  # any ids will do
        src_len = min(48, self.config.max_source_positions)
        for batch, length in ((1, 3), (64, src_len), (3, 5)):
            src = torch.full((batch, length), first, dtype=torch.long, device=device)
            # Every other row short, as mixed batches are: the encoder packs them.
            src[::2, max(1, length // 4):] = self.config.pad_id
            cache = self.prefill(src, capacity=4)
            tokens = torch.full((batch,), self.config.bos_id, dtype=torch.long, device=device)
            for _ in range(3):
                tokens = self.decode_step(tokens, cache).argmax(dim=-1)

    # -- teacher forcing ---------------------------------------------------------------

    def forward(
        self,
        src_ids: Tensor,
        tgt_ids: Tensor,
        labels: Tensor | None = None,
        label_smoothing: float = 0.0,
    ) -> ModelOutput:
        """src_ids (batch, src_len), tgt_ids (batch, tgt_len) decoder inputs starting with
        bos, both right-padded with pad_id; labels (batch, tgt_len) with -100 ignored."""
        pad = self.config.pad_id
        src_valid = src_ids != pad
        memory = self.encode(src_ids, src_valid)
        t = tgt_ids.shape[1]
        if t > self.config.max_target_positions:
            raise ValueError(
                f"target has {t} tokens; the model accepts at most "
                f"{self.config.max_target_positions}"
            )
        tgt_valid = tgt_ids != pad
        tgt_valid[:, 0] = True  # bos may share pad's id in some vocabularies
        x = self._embed_target(tgt_ids, torch.arange(t, device=tgt_ids.device))
        self_mask = self.target_mask(None if bool(tgt_valid.all()) else tgt_valid, t)
        cross_mask = None if bool(src_valid.all()) else src_valid[:, None, None, :]
        for layer in self.decoder_layers:
            x = layer(x, memory, self_mask, cross_mask)
        logits = self.output_logits(self.decoder_norm(x))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=-100,
                label_smoothing=label_smoothing,
            )
        return ModelOutput(logits=logits, loss=loss)
