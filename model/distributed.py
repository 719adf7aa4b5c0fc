"""torch.distributed for the trainers: the process group from torchrun's environment (NCCL on GPUs, gloo
on CPU), the DDP wrapper, and a sum over ranks for the loader counts."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> Dist:
    """One process per GPU under torchrun (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, dist.get_world_size() if dist.is_initialized() else 1, local_rank, dev)


def wrap_ddp(module: torch.nn.Module, env: Dist) -> torch.nn.Module:
    if env.world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    # image micro-batches skip the temporal and fusion modules, and ranks may draw different kinds in one step:
    # the set of parameters with gradients changes from step to step
    return DistributedDataParallel(module, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                                   find_unused_parameters=True)


def sum_over_ranks(values: list[float], env: Dist) -> list[float]:
    if env.world_size == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def gather_objects(obj, env: Dist) -> list:
    """`obj` of every rank, in rank order (on every rank)."""
    if env.world_size == 1:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
