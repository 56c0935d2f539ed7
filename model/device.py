"""Device and precision choice (CUDA with bf16 when present, else CPU with fp32) and the
inference layout a loaded model is served in."""

from __future__ import annotations

import functools
import logging
import shutil
import time
from pathlib import Path

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


# wait: compile before serving (start-up waits for it; a failure stops it). background:
# serve eagerly at once where compiling applies (`compile_skipped`), compile on another
# thread and swap the compiled steps in (the engine does). off: never compile.
COMPILE_MODES = ("background", "wait", "off")
# Earlier names, still accepted: on compiled before serving, auto where it applies.
DEPRECATED_COMPILE_MODES = {"on": "wait", "auto": "background"}


def compile_mode(value: str) -> str:
    """`value` as one of COMPILE_MODES; a deprecated name is logged and translated."""
    if value in DEPRECATED_COMPILE_MODES:
        mode = DEPRECATED_COMPILE_MODES[value]
        log.warning("compile=%s is deprecated; use compile=%s", value, mode)
        return mode
    if value not in COMPILE_MODES:
        raise ValueError(f"compile: expected one of {', '.join(COMPILE_MODES)}, got {value!r}")
    return value


@functools.cache
def intel_cpu() -> bool:
    """Whether this is an Intel CPU (Linux's /proc/cpuinfo; elsewhere assumed so), where
    MKL's sgemm is at its best. Elsewhere (AMD here) oneDNN ran the large products of
    a decode step faster (`Sora.use_onednn`); CTranslate2 picks its GEMM backend by the
    same rule."""
    try:
        return "GenuineIntel" in Path("/proc/cpuinfo").read_text(encoding="utf-8",
                                                                  errors="replace")
    except OSError:
        return True


def compile_skipped(device: torch.device, dtype: torch.dtype, quantize: bool = False) -> str | None:
    """Why compile=background serves this model eagerly, or None where it compiles:
    CPU fp32 with a C++ compiler (inductor builds its CPU kernels with it), where decode
    steps were measured at ~1.2-1.3x eager and the encoder at ~1.3x at batch 64. GPUs
    were not measured in this project: compile=wait there."""
    if quantize:
        return "int8 quantized models are not compiled"
    if device.type != "cpu" or dtype != torch.float32:
        return f"compiling is measured for CPU float32 only, not {device.type} {dtype}"
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++) on PATH"
    return None


def prepare_for_inference(model: Sora, *, quantize: bool = False, compile: str = "off") -> Sora:
    """`model` (on its device, in eval mode) laid out as Sora serves it: int8 dynamic
    quantization (CPU), or decoder weights column-major (CPU fp32; on a non-Intel CPU
    the decoder's and output projections through oneDNN), compiled now
    (`Sora.compile_for_inference`; a failure raises) when `compile` is wait. background
    and off leave it eager here: background compiles later, on the engine's terms."""
    compile = compile_mode(compile)
    if quantize:
        if model.embed.weight.device.type != "cpu":
            raise ValueError("quantize_int8 is for CPU inference only")
        if compile == "wait":
            raise ValueError("compile=wait does not apply to int8 quantized models")
        return quantize_int8(model)  # type: ignore[return-value]
    model = model.column_major_decoder()
    if not intel_cpu():
        model = model.use_onednn()
    if compile == "wait":
        start = time.perf_counter()
        model.compile_for_inference()
        log.info("encoder and decode steps compiled in %.1f s", time.perf_counter() - start)
    return model
