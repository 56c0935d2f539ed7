"""Engine limits: each bounds memory or latency under load, and each is a setting."""

from __future__ import annotations

from dataclasses import dataclass

from model.device import compile_mode


@dataclass(frozen=True)
class EngineConfig:
    max_batch_sequences: int = 64  # rows decoded together (a beam of k takes k rows)
    max_batch_tokens: int = 16384  # source + reserved target tokens over all rows
    max_source_tokens: int = 0  # per sequence; 0 = the model's max_source_positions
    max_new_tokens: int = 256  # upper bound a request may ask for
    default_max_new_tokens: int = 128
    max_waiting: int = 1024  # queued sequences before new requests are rejected
    max_input_chars: int = 100_000  # per text field, checked before tokenizing
    max_segments: int = 256  # sequences one long document may be split into
    # While a batch runs, waiting sequences join it once they number this share of its
    # rows (or can fill it), or after max_waiting_steps steps; 0 steps: join at once.
    waiting_served_ratio: float = 0.3
    max_waiting_steps: int = 20
    warmup: bool = True
    device: str = "auto"
    dtype: str = "auto"
    quantize_int8: bool = False
    # Encoder and decode steps through torch.compile (~1.2-1.3x a step; ~90 s of compiling
    # the first time, ~30 s from inductor's cache): background (serve eagerly meanwhile;
    # CPU fp32 with a C++ compiler only), wait (before serving) or off. See model.device.
    compile: str = "background"

    def __post_init__(self) -> None:
        for name in ("max_batch_sequences", "max_batch_tokens", "max_new_tokens",
                     "default_max_new_tokens", "max_waiting", "max_input_chars", "max_segments"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_source_tokens < 0:
            raise ValueError("max_source_tokens must be >= 0")
        if self.max_waiting_steps < 0:
            raise ValueError("max_waiting_steps must be >= 0")
        object.__setattr__(self, "compile", compile_mode(self.compile))  # on -> wait, ...
        if self.waiting_served_ratio < 0:
            raise ValueError("waiting_served_ratio must be >= 0")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("default_max_new_tokens must not exceed max_new_tokens")
