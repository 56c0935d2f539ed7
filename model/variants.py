"""The parts that differ between architecture families, each chosen once from
`SoraConfig` at construction: the norm, where it sits around a block, and the
feed-forward's activation (plain or gated)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from model.config import SoraConfig

# A residual block: (x, norm, sublayer) -> x's next value.
Residual = Callable[[Tensor, nn.Module, Callable[[Tensor], Tensor]], Tensor]


def pre_norm(x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
    """x + f(norm(x)): the residual stream is never normalized (Sora, T5, M2M100)."""
    return x + sublayer(norm(x))


def post_norm(x: Tensor, norm: nn.Module, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
    """norm(x + f(x)): the original Transformer's order (Marian, BART)."""
    return norm(x + sublayer(x))


RESIDUALS: dict[str, Residual] = {"pre": pre_norm, "post": post_norm}


def make_norm(config: SoraConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


def make_activation(name: str) -> nn.Module:
    """The activation of a plain feed-forward or the gate of a gated one."""
    base = name.removeprefix("gated-")
    if base == "relu":
        return nn.ReLU()
    if base == "silu":
        return nn.SiLU()
    # "gelu" is the exact erf form; "gelu_new" and T5 v1.1's gated gelu the tanh one.
    return nn.GELU(approximate="none" if name == "gelu" else "tanh")


class FeedForward(nn.Module):
    """down(act(up(x)))."""

    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff, bias=config.linear_bias)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=config.linear_bias)
        self.act = make_activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(self.act(self.up(x))))


class GatedFeedForward(nn.Module):
    """down(act(gate(x)) * up(x)): T5 v1.1, Flan-T5 and mT5's gated-gelu."""

    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.d_ff, bias=config.linear_bias)
        self.up = nn.Linear(config.d_model, config.d_ff, bias=config.linear_bias)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=config.linear_bias)
        self.act = make_activation(config.activation)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(self.dropout(self.act(self.gate(x)) * self.up(x)))


def make_feed_forward(config: SoraConfig) -> nn.Module:
    if config.activation.startswith("gated-"):
        return GatedFeedForward(config)
    return FeedForward(config)


def make_final_norm(config: SoraConfig) -> nn.Module:
    """The norm after a stack's last layer, or nothing (post-norm families)."""
    return make_norm(config) if config.final_norms else nn.Identity()
