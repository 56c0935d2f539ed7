"""Device and precision choice (CUDA with bf16 when present, else CPU with fp32) and the
inference layout a loaded model is served in."""

from __future__ import annotations

import logging
import shutil
import time

import torch
from torch import nn

from model.sora import Sora

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


COMPILE_MODES = ("auto", "on", "off")


def compiles_by_default(device: torch.device, dtype: torch.dtype) -> bool:
    """What compile=auto picks: on for CPU fp32 where a C++ compiler is installed
    (inductor builds its CPU kernels with it), where decode steps were measured at
    ~1.2-1.3x eager and the encoder at ~1.3x at batch 64. GPUs were not measured in
    this project: off unless asked."""
    return (device.type == "cpu" and dtype == torch.float32
            and any(shutil.which(c) for c in ("g++", "c++", "clang++")))


def prepare_for_inference(model: Sora, *, quantize: bool = False, compile: str = "off") -> Sora:
    """`model` (on its device, in eval mode) laid out as Sora serves it: int8 dynamic
    quantization (CPU), or decoder weights column-major (CPU fp32) and the model
    compiled (`Sora.compile_for_inference`) when `compile` says so (on | off | auto, see
    `compiles_by_default`). Compiling warms up now; when it fails, `on` raises and
    `auto` logs why and runs the model eagerly."""
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)}, got {compile!r}")
    if quantize:
        if model.embed.weight.device.type != "cpu":
            raise ValueError("quantize_int8 is for CPU inference only")
        if compile == "on":
            raise ValueError("compile=on does not apply to int8 quantized models")
        return quantize_int8(model)  # type: ignore[return-value]
    model = model.column_major_decoder()
    weight = model.embed.weight
    if compile == "off" or (compile == "auto"
                            and not compiles_by_default(weight.device, weight.dtype)):
        return model
    start = time.perf_counter()
    try:
        model.compile_for_inference()
    except Exception as e:
        if compile == "on":
            raise
        log.warning("compiling the model failed, running it eagerly: %s: %s",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return model
    log.info("encoder and decode steps compiled in %.1f s", time.perf_counter() - start)
    return model
