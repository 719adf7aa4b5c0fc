"""Exponential moving average of a model's weights, for every trainer: diffusers' `EMAModel` (its state_dict
round-trips exactly, so a resumed run continues the same average) plus a context that swaps the averaged
weights in for sampling or evaluation."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from diffusers.training_utils import EMAModel


def build_ema(module: torch.nn.Module, decay: float) -> EMAModel:
    """An EMA of `module`'s parameters. diffusers ramps the decay as (1 + n) / (10 + n) up to `decay`, so
    early steps are not dominated by the random initialisation."""
    return EMAModel(module.parameters(), decay=decay, foreach=True)


@contextlib.contextmanager
def ema_weights(ema: EMAModel, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`module` with the averaged weights inside the block, its own weights restored after."""
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        yield module
    finally:
        ema.restore(module.parameters())
