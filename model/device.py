"""Device and precision choice: CUDA with bf16 when present, else CPU with fp32."""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """`auto` picks cuda/bf16 when a GPU is present, else cpu/fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: CUDA requested but no GPU is available")
    if dtype == "auto":
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype: expected auto or one of {', '.join(table)}, got {dtype!r}")
    return dev, table[dtype]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls run natively: any CUDA GPU we support, or a CPU with AMX or
    AVX512-BF16 (there autocast trains ~1.6x faster; elsewhere bf16 is emulated and slow)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and (torch.cpu._is_amx_tile_supported()
                                     or torch.cpu._is_avx512_bf16_supported())


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of Linear layers (CPU only): smaller, often faster."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
