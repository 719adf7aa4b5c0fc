"""`extract_keyframes`: the exact centre frame of each clip, as JPEG.

The centre frame is selected by decoded-frame number (`select=eq(n\\,I)`), never by seeking, so it is
the frame itself and not the nearest keyframe after a seek. `cut_clips` grabs the centre frames in the
same ffmpeg pass that cuts the clips (one decode); `extract_keyframes` runs the same selection alone, for
a clip or source file that already exists.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from hdvg.scenes import Span


def centre_frame(span: Span) -> int:
    """Frame number (in the source) of the centre frame of `span`: frame n//2 of the clip."""
    return span.start + span.num_frames // 2


def select_frames_expr(frames: list[int]) -> str:
    """ffmpeg `select` expression true exactly on decoded frames `frames`."""
    return "+".join(f"eq(n\\,{f})" for f in frames)


def keyframe_filter(frames: list[int], width: int, height: int) -> str:
    """Filter chain selecting `frames` and scaling them to the clip size (rotation is applied by ffmpeg)."""
    return f"select='{select_frames_expr(frames)}',scale={width}:{height}:flags=bicubic,setsar=1"


def keyframe_output_args(label: str, pattern: str) -> list[str]:
    """ffmpeg output options writing the selected frames of `label` as numbered JPEGs from 0."""
    return ["-map", f"[{label}]", "-fps_mode", "passthrough", "-q:v", "2", "-start_number", "0",
            "-f", "image2", pattern]


def extract_keyframes(path: str | Path, frames: list[int], width: int, height: int,
                      timeout: float = 600.0) -> list[bytes]:
    """JPEG bytes of decoded frames `frames` of `path` (in the order of `frames`, which must be sorted)."""
    with tempfile.TemporaryDirectory(prefix="hdvg-kf-") as tmp:
        pattern = str(Path(tmp) / "kf_%06d.jpg")
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-filter_complex",
               f"[0:v]{keyframe_filter(frames, width, height)}[k]", *keyframe_output_args("k", pattern)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        files = sorted(Path(tmp).glob("kf_*.jpg"))
        if out.returncode != 0 or len(files) != len(frames):
            raise RuntimeError(f"keyframe extraction got {len(files)} of {len(frames)} frames: "
                               f"{out.stderr.strip()[-300:]}")
        return [f.read_bytes() for f in files]
