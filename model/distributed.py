"""torch.distributed for every GPU command: the device of this process (`local_device`: cuda:LOCAL_RANK under
torchrun), the process group from torchrun's environment (NCCL on GPUs, gloo on CPU), the DDP wrapper, a sum
over ranks, gathering objects to every rank and averaging gradients a wrapper cannot."""
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


def local_device(device: str | torch.device | None = None) -> torch.device:
    """This process's device: `device` when it names one with an index ("cuda:3", "cpu"); "cuda" (or nothing,
    when CUDA is there) is cuda:LOCAL_RANK, so rank r of a torchrun node uses GPU r, never all GPU 0."""
    device = None if device is None else str(device)
    if device is not None and (":" in device or not device.startswith("cuda")):
        return torch.device(device)
    if device is None and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")


def init_distributed(device: str | None = None) -> Dist:
    """One process per GPU under torchrun (RANK, WORLD_SIZE, LOCAL_RANK); a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = local_device(device)
    cuda = dev.type == "cuda"
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


def average_gradients(module: torch.nn.Module, env: Dist) -> None:
    """Average `module`'s gradients over ranks in place (what DDP does during backward), for a module that runs
    more than one forward before its backward (a GAN discriminator on real then fake), which DDP's reducer
    does not allow."""
    if env.world_size == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def leave(env: Dist, drop_wrappers) -> None:
    """Leave the process group together. DDP's reducer holds the gloo/NCCL group, whose destructor waits for
    its queued work: `drop_wrappers()` drops the caller's DDP wrappers while every rank is still there (else a
    rank can hang at exit)."""
    if env.world_size == 1 or not dist.is_initialized():
        drop_wrappers()
        return
    import gc

    dist.barrier()
    drop_wrappers()
    gc.collect()
    dist.barrier()
    dist.destroy_process_group()
