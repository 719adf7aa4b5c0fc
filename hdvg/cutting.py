"""`cut_clips`: frame-exact H.264 clips of a source video, all clips and their centre keyframes in one
ffmpeg process (one decode of the source, one x264 encoder).

How it stays frame-exact: `select` keeps exactly the frames of the spans (decoded-frame numbers, the
numbering of `detect_scenes`), the encoder is forced to start an IDR frame at each span start, and the
segment muxer splits the stream at exactly those frames. Nothing seeks, so no clip starts at a nearby
keyframe instead of its first frame; each clip's frame count is then verified by demuxing it.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from hdvg.config import EncodeConfig
from hdvg.keyframes import centre_frame, keyframe_filter, keyframe_output_args
from hdvg.probe import ProbeError, VideoInfo, run_ffprobe
from hdvg.scenes import Span


class CutError(Exception):
    """Cutting failed; the message is the recorded reason."""


@dataclass(frozen=True)
class CutClip:
    span: Span
    path: Path        # the clip's MP4
    keyframe: Path    # its centre frame, JPEG
    width: int
    height: int


def clip_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """Displayed size scaled so the short side is at most `max_short_side` (never up), even for yuv420p."""
    scale = min(1.0, max_short_side / min(width, height))
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def _ranges_expr(spans: list[Span]) -> str:
    merged: list[list[int]] = []
    for s in spans:  # adjacent spans (a long scene split in parts) become one range
        if merged and merged[-1][1] == s.start:
            merged[-1][1] = s.end
        else:
            merged.append([s.start, s.end])
    return "+".join(f"between(n\\,{a}\\,{b - 1})" for a, b in merged)


def cut_clips(src: str | Path, info: VideoInfo, spans: list[Span], out_dir: str | Path,
              cfg: EncodeConfig) -> list[CutClip]:
    """Cut `spans` (sorted, non-overlapping) of `src` into `out_dir`/clip_NNNNNN.mp4 + keyframe JPEGs."""
    if not spans:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width, height = clip_size(info.width, info.height, cfg.max_short_side)
    # output frame number at which each clip starts, once the frames between spans are dropped
    starts, total = [], 0
    for s in spans:
        starts.append(total)
        total += s.num_frames
    graph = (f"[0:v]split=2[a][b];"
             f"[a]select='{_ranges_expr(spans)}',scale={width}:{height}:flags=bicubic,setsar=1,"
             f"format=yuv420p[clips];"
             f"[b]{keyframe_filter([centre_frame(s) for s in spans], width, height)}[keys]")
    force = "+".join(f"eq(n,{n})" for n in starts)  # an option, not a filtergraph: no escaping
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-threads", str(cfg.ffmpeg_threads), "-i", str(src),
           "-filter_complex", graph,
           "-map", "[clips]", "-fps_mode", "passthrough", "-an", "-sn", "-dn",
           "-c:v", "libx264", "-preset", cfg.preset, "-crf", str(cfg.crf), "-pix_fmt", "yuv420p",
           "-threads", str(cfg.ffmpeg_threads), "-force_key_frames", f"expr:{force}", "-forced-idr", "1",
           "-f", "segment", "-segment_format", "mp4", "-segment_format_options", "movflags=+faststart",
           "-reset_timestamps", "1", "-segment_start_number", "0",
           # split before each clip's first frame; `total` (never reached) keeps a single clip whole
           "-segment_frames", ",".join(map(str, starts[1:] or [total])),
           str(out / "clip_%06d.mp4"),
           *keyframe_output_args("keys", str(out / "key_%06d.jpg"))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.timeout_s)
    except subprocess.TimeoutExpired:
        raise CutError(f"ffmpeg cutting timed out after {cfg.timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()
        raise CutError(f"ffmpeg cutting failed: {tail[-1] if tail else proc.returncode}")
    clips = []
    for i, span in enumerate(spans):
        path, key = out / f"clip_{i:06d}.mp4", out / f"key_{i:06d}.jpg"
        if not path.exists() or not key.exists():
            raise CutError(f"ffmpeg produced {len(list(out.glob('clip_*.mp4')))} clips for {len(spans)} spans")
        try:
            got = count_frames(path)
        except ProbeError as exc:
            raise CutError(f"clip {i} is unreadable: {exc}") from None
        if got != span.num_frames:
            raise CutError(f"clip {i} ({span.start}..{span.end}) has {got} frames, expected {span.num_frames}")
        clips.append(CutClip(span=span, path=path, keyframe=key, width=width, height=height))
    return clips


def count_frames(path: str | Path) -> int:
    """Frames of the first video stream, counted by demuxing (no decode)."""
    streams = run_ffprobe(path).get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    return int(video[0].get("nb_read_packets") or 0) if video else 0
