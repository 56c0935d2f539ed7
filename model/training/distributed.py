"""Distributed context: one process per device under `torchrun`, or a single process.

`torchrun --nproc_per_node=N` sets RANK/WORLD_SIZE/LOCAL_RANK; the CLI reads them and
builds a `DistContext` (only the CLI reads the environment). gloo serves CPUs, NCCL
GPUs. Every rank builds the same batch list and trains on its shard of each batch; only
rank 0 writes files.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of a short list of numbers over ranks (float64)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return [float(v) for v in t.tolist()]

    def broadcast_float(self, value: float) -> float:
        """Rank 0's value on every rank."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._comm_device)
        dist.broadcast(t, src=0)
        return float(t.item())

    def all_gather_bytes(self, data: Tensor) -> list[Tensor]:
        """Every rank's uint8 tensor (equal lengths), in rank order."""
        if not self.enabled:
            return [data]
        data = data.to(self._comm_device)
        out = [torch.empty_like(data) for _ in range(self.world_size)]
        dist.all_gather(out, data)
        return [t.cpu() for t in out]

    @property
    def _comm_device(self) -> torch.device:
        # NCCL moves CUDA tensors only; gloo moves CPU tensors.
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` when running on several ranks."""
        if not self.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)


def init_distributed(
    rank: int, world_size: int, local_rank: int, device: str = "auto"
) -> DistContext:
    """Join the process group (when world_size > 1) and pick this rank's device."""
    use_cuda = device != "cpu" and torch.cuda.is_available() and (
        device == "auto" or device.startswith("cuda")
    )
    if use_cuda:
        if world_size > 1:
            index = local_rank  # one GPU per process
        elif device.startswith("cuda"):
            index = torch.device(device).index or 0
        else:
            index = 0
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        if device.startswith("cuda"):
            raise ValueError("device: CUDA requested but no GPU is available")
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=30)
        )
        log.info("rank %d/%d joined (%s on %s)", rank, world_size, backend, dev)
    return DistContext(rank, world_size, local_rank, dev)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module
