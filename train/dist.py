"""Process groups: the one place that reads the torchrun environment.

``torchrun`` starts one process per rank and tells each its place through environment
variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`init_distributed` reads them once and returns a :class:`DistInfo`; model and data code
take rank and world size from that object (or from arguments) and never read the environment
themselves. A process not launched by torchrun is a world of one and no group is created, so
the same script runs unchanged under ``python`` and under ``torchrun``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from catalog import ConfigError

log = logging.getLogger(__name__)

BACKENDS = ("gloo", "nccl")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank, 0..world_size-1.
        world_size: Number of processes in the job.
        local_rank: Rank on this node (selects the GPU on multi-GPU nodes).
        device: ``"cpu"`` or ``"cuda:<local_rank>"``.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"rank {self.rank} / world size {self.world_size}: expected "
                "0 <= rank < world_size and world_size >= 1. Check RANK and WORLD_SIZE."
            )

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that logs metrics and writes checkpoints."""
        return self.rank == 0


def _env_int(env: dict[str, str] | os._Environ, name: str) -> int:
    value = env.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise ConfigError(
            f"Environment variable {name}={value!r}: expected an integer (torchrun sets it)."
        ) from None


def launched_by_torchrun(env: dict[str, str] | None = None) -> bool:
    """Whether the torchrun rendezvous variables are present."""
    env = os.environ if env is None else env
    return "RANK" in env and "WORLD_SIZE" in env


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group torchrun set up, or return a world of one.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default gloo on CPU, nccl when CUDA is available.

    Returns:
        This process's :class:`DistInfo`. Calling it again after the group exists returns the
        same information without creating a second group.

    Raises:
        ConfigError: an unknown backend, or inconsistent torchrun variables.
    """
    import torch
    import torch.distributed as tdist

    if backend is not None and backend not in BACKENDS:
        raise ConfigError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}.")
    if not launched_by_torchrun():
        device = "cuda:0" if torch.cuda.is_available() and backend != "gloo" else "cpu"
        return DistInfo(0, 1, 0, device)
    rank = _env_int(os.environ, "RANK")
    world = _env_int(os.environ, "WORLD_SIZE")
    local_rank = _env_int(os.environ, "LOCAL_RANK") if "LOCAL_RANK" in os.environ else 0
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    backend = backend or ("nccl" if use_cuda else "gloo")
    device = f"cuda:{local_rank}" if use_cuda else "cpu"
    info = DistInfo(rank, world, local_rank, device)
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not tdist.is_initialized():
        tdist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("rank %d/%d joined the %s group (device %s)", rank, world, backend, device)
    return info


def _group_ready() -> bool:
    import torch.distributed as tdist

    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    if not _group_ready():
        return 0
    import torch.distributed as tdist

    return tdist.get_rank()


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    if not _group_ready():
        return 1
    import torch.distributed as tdist

    return tdist.get_world_size()


def is_main() -> bool:
    """True on rank 0 (and in a process without a group)."""
    return rank() == 0


def print0(*args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only, so a job's console shows each message once."""
    if is_main():
        print(*args, **kwargs, flush=True)


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if _group_ready():
        import torch.distributed as tdist

        tdist.barrier()


def cleanup() -> None:
    """Leave the process group (a no-op without one)."""
    if _group_ready():
        import torch.distributed as tdist

        tdist.destroy_process_group()
