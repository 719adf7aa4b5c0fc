"""What an evaluation writes besides the numbers' computation: weight hashes, the JSON report, the PNG grid."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a folder (every file under it, by sorted relative path: name, then bytes)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"nothing to hash at {path}")
    digest = hashlib.sha256()
    for file in files:
        if file != path:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: dict) -> None:
    """Atomic: a reader never sees half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def save_grid(clips: list[np.ndarray], path: Path, frames_per_clip: int = 4, height: int = 96) -> None:
    """One row per clip, `frames_per_clip` frames spread evenly over it, each scaled to `height` pixels."""
    from PIL import Image

    rows = []
    for clip in clips:  # (F, H, W, 3) uint8
        picks = np.linspace(0, len(clip) - 1, frames_per_clip).round().astype(int)
        width = max(1, round(clip.shape[2] * height / clip.shape[1]))
        tiles = [np.asarray(Image.fromarray(clip[i]).resize((width, height), Image.BILINEAR)) for i in picks]
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
