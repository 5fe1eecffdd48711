"""Process-group set-up for ``torchrun --nproc_per_node N -m bilayer train …``.

NCCL with SyncBatchNorm on GPUs; gloo with per-process BatchNorm on CPU (SyncBatchNorm is GPU-only).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


class DeviceError(ValueError):
    """A device this machine cannot train on; one sentence."""


def check_device(device: str | None) -> str | None:
    """``device`` (``cpu``, ``cuda`` or ``cuda:N``) if this machine has it, else a one-sentence ``DeviceError``."""
    if device is None:
        return None
    m = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device.strip().lower())
    if m is None or (m[1] == "cpu" and m[2] is not None):
        raise DeviceError(f"--device {device!r} is not a training device; expected cpu, cuda or cuda:N.")
    if m[1] == "cuda":
        if not torch.cuda.is_available():
            why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"--device {device} was asked for but {why}; use --device cpu.")
        if m[2] is not None and int(m[2]) >= torch.cuda.device_count():
            raise DeviceError(f"--device {device} does not exist: this machine has {torch.cuda.device_count()} CUDA "
                              f"device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}.")
    return m[0]


def setup(device: str | None = None) -> DistInfo:
    """Initialise from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise.
    ``device``: ``cpu``, ``cuda`` (each process its LOCAL_RANK's GPU), ``cuda:N`` (one process) or None (CUDA when
    available)."""
    device = check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    index = int(device.split(":")[1]) if device is not None and ":" in device and world == 1 else local
    dev = torch.device(f"cuda:{index}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
        value /= info.world_size
    return value
