"""Checkpoints with exact resume, for every trainer: model, EMA, optimiser, LR schedule, step, the RNG states
(python, numpy, torch CPU/CUDA and the trainer's own generators) and the data position, in one file per step
under RUN/checkpoints/, written to a temporary name then renamed (a crash never leaves a partial
checkpoint); `latest_checkpoint` finds the newest. Open-Sora's layout, with Latte's omission (a resume that
reloads no optimiser or EMA) avoided."""
from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"step_(\d{9})\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:09d}.pt"


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the highest step in RUN/checkpoints, or None."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    found = sorted(p for p in folder.glob("step_*.pt") if _NAME.search(p.name)) if folder.is_dir() else []
    return found[-1] if found else None


def rng_states(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
              "generators": {name: g.get_state() for name, g in (generators or {}).items()}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    for name, g in (generators or {}).items():
        g.set_state(states["generators"][name])


def save_checkpoint(run_dir: str | Path, step: int, *, model: torch.nn.Module, optimizer=None, scheduler=None,
                    ema=None, generators: dict[str, torch.Generator] | None = None, data: Any = None,
                    extra: dict | None = None, keep: int | None = None) -> Path:
    """Write the full training state at `step`; keep only the newest `keep` checkpoints when given."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "rng": rng_states(generators), "data": data,
             "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    if keep is not None:
        for old in sorted(path.parent.glob("step_*.pt"))[:-keep]:
            old.unlink()
    return path


def load_checkpoint(path: str | Path, *, model: torch.nn.Module | None = None, optimizer=None, scheduler=None,
                    ema=None, generators: dict[str, torch.Generator] | None = None,
                    restore_rng: bool = True) -> dict:
    """Load what is given into place and return the state (step, data, extra). Each given part must be in
    the checkpoint: a resume that silently starts a fresh optimiser or EMA is not a resume."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if model is not None:
        model.load_state_dict(state["model"])
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("ema", ema)):
        if target is None:
            continue
        if name not in state:
            raise KeyError(f"{path} has no {name} state to resume")
        target.load_state_dict(state[name])
    if restore_rng:
        restore_rng_states(state["rng"], generators)
    return state
