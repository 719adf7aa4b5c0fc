"""Checkpoints with exact resume, for every trainer: model, EMA, optimiser, LR schedule, step, every rank's
RNG states (python, numpy, torch CPU/CUDA and the trainer's own generators) and the data position, in one file
per step under RUN/checkpoints/. Open-Sora's layout, with Latte's omission (a resume that reloads no optimiser
or EMA) avoided.

Durable: a checkpoint is written to a temporary name, fsynced, renamed, and the folder fsynced, so a power loss
leaves either the previous state or the new one on disk. Verifiable: every read goes through `torch.load` with
`weights_only=True` (tensors and plain containers only, no code runs from a file), and `resume_state` moves
aside a checkpoint that does not load, saying which and why, and takes the one before it."""
from __future__ import annotations

import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hdvg.storage import fsync_path

CHECKPOINTS_DIR = "checkpoints"
DAMAGED_SUFFIX = ".damaged"
_NAME = re.compile(r"step_(\d{9})\.pt$")


class NoLoadableCheckpoint(RuntimeError):
    """Every checkpoint of a RUN failed to load: resuming would silently restart the run."""


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step_{step:09d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """RUN/checkpoints/step_*.pt, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    return sorted(p for p in folder.glob("step_*.pt") if _NAME.search(p.name)) if folder.is_dir() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint of the highest step in RUN/checkpoints, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# --------------------------------------------------------------------------------------------- RNG states

def rng_states(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss,
                                                    cached],
              "torch": torch.get_rng_state(),
              "generators": {name: g.get_state() for name, g in (generators or {}).items()}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()  # this rank's device (set by model.distributed)
    return states


def restore_rng_states(states: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])
    for name, g in (generators or {}).items():
        g.set_state(states["generators"][name])


# ------------------------------------------------------------------------------------------ write / read

def save_checkpoint(run_dir: str | Path, step: int, *, model: torch.nn.Module, optimizer=None, scheduler=None,
                    ema=None, generators: dict[str, torch.Generator] | None = None,
                    rng: list[dict[str, Any]] | None = None, data: Any = None, extra: dict | None = None,
                    keep: int | None = None) -> Path:
    """Write the full training state at `step`; keep only the newest `keep` checkpoints when given. `rng`:
    every rank's `rng_states`, in rank order (default: this process's, with `generators`)."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "rng": rng if rng is not None else [rng_states(generators)],
             "data": data, "extra": extra or {}}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)  # the rename itself survives a power loss
    if keep is not None:
        for old in list_checkpoints(run_dir)[:-keep]:
            old.unlink()
    return path


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint's state dict, read with weights_only=True; a file that is not a complete checkpoint
    raises (EOFError, RuntimeError of a truncated zip, UnpicklingError, KeyError of a missing part). `mmap`:
    tensors stay in the file until used (a reader of the weights alone never loads the optimiser state)."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    if not isinstance(state, dict):
        raise ValueError(f"not a checkpoint (a {type(state).__name__})")
    missing = [k for k in ("step", "model", "rng") if k not in state]
    if missing:
        raise KeyError(f"no {', '.join(missing)} in it")
    return state


def resume_state(run_dir: str | Path, move_aside: bool = True) -> tuple[Path, dict] | None:
    """The newest checkpoint of RUN that loads, as (path, state); None when RUN has none. Each newer one that
    does not load is renamed to step_N.pt.damaged (when `move_aside`: one process of a job does it) with a
    line on stderr saying why. Raises NoLoadableCheckpoint when there are checkpoints and none loads."""
    failures = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, read_checkpoint(path)
        except FileNotFoundError:  # another rank moved it aside meanwhile
            continue
        except Exception as exc:  # noqa: BLE001 - any way a file fails to load is a damaged checkpoint
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'}"
            failures.append(f"{path.name} ({why})")
            if move_aside:
                with_suffix = path.with_name(path.name + DAMAGED_SUFFIX)
                os.replace(path, with_suffix)
                print(f"checkpoint {path} does not load ({why}): moved to {with_suffix.name}, "
                      f"using the one before it", file=sys.stderr, flush=True)
    if failures:
        raise NoLoadableCheckpoint(f"no checkpoint in {Path(run_dir) / CHECKPOINTS_DIR} loads: "
                                   + "; ".join(failures))
    return None


def load_checkpoint(source: str | Path | dict, *, model: torch.nn.Module | None = None, optimizer=None,
                    scheduler=None, ema=None, generators: dict[str, torch.Generator] | None = None,
                    restore_rng: bool = True, rank: int = 0) -> dict:
    """Load what is given into place from a checkpoint file (or its already-read state) and return the state
    (step, data, extra). Each given part must be in the checkpoint: a resume that silently starts a fresh
    optimiser or EMA is not a resume. `restore_rng` restores rank `rank`'s RNG states."""
    state = source if isinstance(source, dict) else read_checkpoint(source)
    if model is not None:
        model.load_state_dict(state["model"])
    for name, target in (("optimizer", optimizer), ("scheduler", scheduler), ("ema", ema)):
        if target is None:
            continue
        if name not in state:
            raise KeyError(f"{source if not isinstance(source, dict) else 'checkpoint'} has no {name} state to resume")
        target.load_state_dict(state[name])
    if restore_rng:
        restore_rng_states(state["rng"][rank], generators)
    return state
