"""`hdvg sample`: a small deterministic set of multi-scene HD videos made with ffmpeg's test sources, so
that `make shards` runs on a fresh machine with nothing downloaded.

Each HD video is a concatenation of scenes from different lavfi sources (hard cuts at known frames);
a sub-HD video shows filtering and a truncated file shows a failure. `truth.json` beside them lists the
expected cuts in the format of `../shared/tools/check_output.py --truth`.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

FPS = 25
SOURCES = {
    "testsrc2": "testsrc2=s={s}:r={r}",
    "bars": "smptehdbars=s={s}:r={r}",
    "cells": "cellauto=s={s}:r={r}:rule=110:seed=7",  # seeded: the same sample on every machine
    "gradients": "gradients=s={s}:r={r}:speed=0.05:seed=7",
    "testsrc": "testsrc=s={s}:r={r}",
    "rgb": "rgbtestsrc=s={s}:r={r}",
}
# (file name, size, scenes as (source, frames)); frames at 25 fps
VIDEOS = [
    ("city_walk.mp4", "1280x720", [("testsrc2", 100), ("bars", 75), ("cells", 125)]),
    ("ocean_drive.mp4", "1280x720", [("gradients", 150), ("testsrc", 60), ("rgb", 90), ("testsrc2", 70)]),
    ("mountain_time_lapse.mp4", "1920x1080", [("bars", 80), ("gradients", 110)]),
    ("kitchen_long_take.mp4", "1280x720", [("testsrc", 50), ("gradients", 560)]),  # 22.4 s scene: split
    ("phone_clip_360p.mp4", "640x360", [("testsrc2", 75), ("bars", 50)]),  # below 720p: filtered
]
TRUNCATED = "broken_upload.mp4"  # first 16 KiB of a valid MP4 whose index is at the end: fails


def _make_video(path: Path, size: str, scenes: list[tuple[str, int]]) -> None:
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for src, frames in scenes:
        cmd += ["-f", "lavfi", "-i", SOURCES[src].format(s=size, r=FPS)]
    chains = "".join(f"[{i}:v]trim=end_frame={frames},format=yuv420p,setsar=1[v{i}];"
                     for i, (_, frames) in enumerate(scenes))
    concat = "".join(f"[v{i}]" for i in range(len(scenes))) + f"concat=n={len(scenes)}:v=1:a=0[out]"
    cmd += ["-filter_complex", chains + concat, "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", "20", "-g", "250", "-pix_fmt", "yuv420p", "-threads", "2", str(path)]
    subprocess.run(cmd, check=True, capture_output=True)


def make_sample(out_dir: str | Path) -> dict:
    """Write the sample videos and truth.json into `out_dir` (skipping files already there)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for name, size, scenes in VIDEOS:
        path = out / name
        if not path.exists():
            tmp = out / f".{name}"
            _make_video(tmp, size, scenes)
            tmp.rename(path)
        height = int(size.split("x")[1])
        cuts, at = [], 0
        for _, frames in scenes[:-1]:
            at += frames
            cuts.append(at)
        truth[name] = {"expect": "ok", "cuts": cuts} if height >= 720 else {"expect": "filtered"}
    broken = out / TRUNCATED
    if not broken.exists():
        # a valid MP4 without +faststart keeps its index (moov) at the end: cut it off
        broken.write_bytes((out / VIDEOS[0][0]).read_bytes()[:16384])
    truth[TRUNCATED] = {"expect": "bad"}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth
