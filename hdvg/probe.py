"""`probe`: what a video file is, from ffprobe, without decoding it."""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path


class ProbeError(Exception):
    """The file cannot be used as a video; the message is the recorded reason."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float          # seconds (video stream, else container, else frames / fps)
    fps: float               # true average frame rate (VFR: frames / duration)
    nominal_fps: float       # r_frame_rate, the rate timestamps are based on
    num_frames: int          # video packets counted by demuxing (exact for every codec we accept)
    coded_width: int
    coded_height: int
    width: int               # as displayed: rotation and sample aspect ratio applied
    height: int
    rotation: int            # degrees of the display matrix, normalised to 0/90/180/270
    sar: Fraction
    codec: str
    pix_fmt: str
    start_time: float
    streams: tuple[str, ...]  # codec_type of every stream, in order

    @property
    def aspect(self) -> float:
        return self.width / self.height


def _ratio(text: str | None) -> Fraction | None:
    if not text or text in ("0/0", "N/A"):
        return None
    try:
        value = Fraction(text.replace(":", "/"))
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(text) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # NaN -> None


def run_ffprobe(path: str | Path, timeout: float = 120.0) -> dict:
    cmd = ["ffprobe", "-v", "error", "-count_packets", "-show_streams", "-show_format", "-of", "json",
           "-i", str(path)]  # -i before the name: a file name starting with '-' is not an option
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"ffprobe timed out after {timeout:.0f} s") from None
    if out.returncode != 0:
        msg = out.stderr.strip().splitlines()
        raise ProbeError(f"unreadable container: {msg[-1] if msg else 'ffprobe failed'}")
    return json.loads(out.stdout or "{}")


def probe(path: str | Path) -> VideoInfo:
    """Probe `path`. Raises ProbeError with a human-readable reason for anything that is not a video."""
    p = Path(path)
    if not p.is_file():
        raise ProbeError("no such file")
    if p.stat().st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    meta = run_ffprobe(p)
    streams = meta.get("streams", [])
    kinds = tuple(s.get("codec_type", "unknown") for s in streams)
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    if not streams:
        raise ProbeError("no streams in container")
    if not video:
        raise ProbeError(f"no video stream (streams: {', '.join(kinds)})")
    v = video[0]
    cw, ch = int(v.get("width") or 0), int(v.get("height") or 0)
    if cw <= 0 or ch <= 0:
        raise ProbeError("video stream has no frame size")
    frames = int(v.get("nb_read_packets") or 0)
    if frames <= 0:
        raise ProbeError("video stream has no frames")

    nominal = _ratio(v.get("r_frame_rate")) or _ratio(v.get("avg_frame_rate"))
    # the video stream's own duration first: the container's also covers audio and other streams
    duration = _float(v.get("duration")) or _float(meta.get("format", {}).get("duration"))
    if duration is None or duration <= 0:
        if nominal is None:
            raise ProbeError("neither duration nor frame rate known")
        duration = frames / float(nominal)  # containers without duration (live WebM, raw streams)
    # The average rate of a VFR stream is frames over time; r_frame_rate is only its time base.
    fps = frames / duration if duration > 0 else float(nominal or 0)
    avg = _ratio(v.get("avg_frame_rate"))
    if avg is not None and abs(float(avg) - fps) / fps < 0.01:
        fps = float(avg)  # keep the exact rational when the container agrees with the count

    rotation = 0
    for side in v.get("side_data_list", []) or []:
        if "rotation" in side:
            rotation = int(round(float(side["rotation"]))) % 360
    rotation = (round(rotation / 90) * 90) % 360
    sar = _ratio(v.get("sample_aspect_ratio")) or Fraction(1)
    width, height = round(cw * sar), ch  # square pixels: stretch the width as players do
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        path=str(p), duration=float(duration), fps=float(fps), nominal_fps=float(nominal or fps),
        num_frames=frames, coded_width=cw, coded_height=ch, width=int(width), height=int(height),
        rotation=rotation, sar=sar, codec=str(v.get("codec_name")), pix_fmt=str(v.get("pix_fmt")),
        start_time=_float(v.get("start_time")) or 0.0, streams=kinds,
    )
