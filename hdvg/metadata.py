"""Readers of the released metadata: HD-VILA-100M part files and the HD-VG-130M json, and the mapping of
HD-VG's per-scene frame ranges onto a source video's decoded frames.

Both formats are untrusted input. Every record is validated here; a video whose record is unusable still
comes out, with `problem` set, so that the job records it as failed instead of crashing or skipping it.

    HD-VILA-100M  hdvila_part*.jsonl, one video per line:
                  {"video_id", "url", "clip": [{"clip_id": "<vid>.<k>.mp4", "span": ["HH:MM:SS.mmm", ...]}]}
    HD-VG-130M    one JSON object per part (hundreds of MB, read as a stream with ijson):
                  {"<vid>": {"url", "clip": {"<vid>.<k>.mp4": {"span", "fps",
                              "scene_split": [{"scene_cut": [s, e], "clip_id": "<vid>.<k>_<j>", "caption"}]}}}}
`scene_cut` frames count from the first frame of the HD-VILA clip file, at that clip's `fps`; e == -1 means
to the end of the clip. The clip files were often longer than their nominal span, so frames may run past
the span end (see ../shared/data/metadata/SCHEMAS.md).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")
RELEASE_HDVG = "HD-VG-130M"
_TIMESTAMP = re.compile(r"(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")
# span timestamps are rounded to the millisecond: a frame 1 ms before the stated start is the first frame
_SPAN_TOLERANCE_S = 0.001


@dataclass(frozen=True, slots=True)
class HdvilaClip:
    """One HD-VILA-100M clip: the k-th span of a video, in source seconds."""
    index: int      # k of `<vid>.<k>.mp4`
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class ReleasedScene:
    """One scene of HD-VG-130M as released: frames of its HD-VILA clip, and its caption."""
    clip_id: str             # `<vid>.<k>_<j>`
    span: HdvilaClip         # the HD-VILA clip the frames count from
    fps: float               # frame rate of that clip file
    first: int               # scene_cut[0]
    end: int                 # scene_cut[1], exclusive; -1: to the end of the span
    caption: str | None


@dataclass(frozen=True, slots=True)
class VideoRecord:
    video_id: str
    clips: tuple[HdvilaClip, ...] = ()
    scenes: tuple[ReleasedScene, ...] = ()
    problem: str | None = None   # why this record cannot be used, recorded as the video's failure


def is_youtube_id(video_id: object) -> bool:
    return isinstance(video_id, str) and YOUTUBE_ID.fullmatch(video_id) is not None


def parse_timestamp(text: object) -> float:
    """'HH:MM:SS.mmm' -> seconds."""
    m = _TIMESTAMP.fullmatch(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(f"bad timestamp {text!r}")
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])


def _clip_index(video_id: str, key: object) -> int:
    """k of an HD-VILA clip file name `<vid>.<k>.mp4` (anything else is rejected: it names output files)."""
    m = re.fullmatch(re.escape(video_id) + r"\.(\d{1,6})\.mp4", key) if isinstance(key, str) else None
    if not m:
        raise ValueError(f"bad HD-VILA clip id {key!r}")
    return int(m[1])


def _span(video_id: str, key: object, span: object) -> HdvilaClip:
    if not (isinstance(span, (list, tuple)) and len(span) == 2):
        raise ValueError(f"clip {key!r}: span must be [start, end], got {span!r}")
    clip = HdvilaClip(_clip_index(video_id, key), parse_timestamp(span[0]), parse_timestamp(span[1]))
    if clip.end <= clip.start:
        raise ValueError(f"clip {key!r}: empty span {span!r}")
    return clip


def hdvila_record(row: object) -> VideoRecord:
    """One line of an HD-VILA-100M part file; clips sorted by start, each clip index once."""
    video_id = row.get("video_id") if isinstance(row, dict) else None
    if not is_youtube_id(video_id):
        return VideoRecord(str(video_id), problem=f"invalid YouTube id {video_id!r}")
    try:
        clips = row.get("clip")
        if not isinstance(clips, list):
            raise ValueError("'clip' must be a list")
        spans = [_span(video_id, c.get("clip_id") if isinstance(c, dict) else None,
                       c.get("span") if isinstance(c, dict) else None) for c in clips]
    except ValueError as exc:
        return VideoRecord(video_id, problem=str(exc))
    unique = {c.index: c for c in reversed(spans)}  # a clip listed twice is kept once (its first listing)
    return VideoRecord(video_id, clips=tuple(sorted(unique.values(), key=lambda c: (c.start, c.index))))


def hdvg_record(video_id: object, value: object) -> VideoRecord:
    """One video of the HD-VG-130M json. Scenes are sorted by (span start, first frame), and a scene
    listed twice (same clip_id, seen in the real files) is kept once."""
    if not is_youtube_id(video_id):
        return VideoRecord(str(video_id), problem=f"invalid YouTube id {video_id!r}")
    try:
        clips = value.get("clip") if isinstance(value, dict) else None
        if not isinstance(clips, dict):
            raise ValueError("'clip' must be an object")
        scenes: dict[str, ReleasedScene] = {}
        for key, clip in clips.items():
            if not isinstance(clip, dict):
                raise ValueError(f"clip {key!r} must be an object")
            span = _span(video_id, key, clip.get("span"))
            fps = clip.get("fps")
            if not isinstance(fps, (int, float)) or not 0 < fps < 1000:
                raise ValueError(f"clip {key!r}: bad fps {fps!r}")
            for scene in clip.get("scene_split") or []:
                clip_id, cut = scene.get("clip_id"), scene.get("scene_cut")
                if not (isinstance(clip_id, str) and re.fullmatch(re.escape(key[:-4]) + r"_\d{1,6}", clip_id)):
                    raise ValueError(f"clip {key!r}: bad scene clip_id {clip_id!r}")
                if not (isinstance(cut, list) and len(cut) == 2 and all(type(f) is int for f in cut)
                        and cut[0] >= 0 and (cut[1] == -1 or cut[1] > cut[0])):
                    raise ValueError(f"scene {clip_id}: bad scene_cut {cut!r}")
                caption = scene.get("caption")
                scenes.setdefault(clip_id, ReleasedScene(clip_id, span, float(fps), cut[0], cut[1],
                                                         caption if isinstance(caption, str) else None))
    except (ValueError, AttributeError) as exc:
        return VideoRecord(video_id, problem=str(exc) if isinstance(exc, ValueError) else "malformed record")
    ordered = sorted(scenes.values(), key=lambda s: (s.span.start, s.span.index, s.first))
    return VideoRecord(video_id, clips=tuple(sorted({s.span for s in ordered}, key=lambda c: c.start)),
                       scenes=tuple(ordered))


# ---------------------------------------------------------------------------------------------------------
# Recognising and streaming the files

def sniff(path: Path) -> str | None:
    """'hdvila' or 'hdvg' when the file's content is one of those formats, else None (a manifest)."""
    with path.open("rb") as f:
        return sniff_head(f.read(1 << 16), path.suffix)


def sniff_head(head: bytes, suffix: str) -> str | None:
    """`sniff` on the first 64 KiB of a file whose name ends in `suffix`."""
    first = head.lstrip()[:1]
    if first != b"{":
        return None
    line = head.lstrip().split(b"\n", 1)[0]
    try:
        row = json.loads(line)
    except json.JSONDecodeError:  # an object spread over lines: the HD-VG json (json.dump with indent)
        return "hdvg" if suffix.lower() == ".json" or b'"scene_split"' in head else None
    if isinstance(row, dict) and isinstance(row.get("clip"), list):
        return "hdvila"
    if isinstance(row, dict) and row and all(isinstance(v, dict) and isinstance(v.get("clip"), dict)
                                             for v in row.values()):
        return "hdvg"  # a whole HD-VG object on one line
    return None


def read_hdvila(path: Path) -> Iterator[VideoRecord]:
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield VideoRecord(f"{path.name}:{n}", problem=f"line {n} is not JSON ({exc})")
                continue
            yield hdvila_record(row)


def read_hdvg(path: Path) -> Iterator[VideoRecord]:
    """Videos of an HD-VG-130M json, one at a time: memory stays at one video's record."""
    import ijson

    with path.open("rb") as f:
        for video_id, value in ijson.kvitems(f, "", use_float=True):
            yield hdvg_record(video_id, value)


# ---------------------------------------------------------------------------------------------------------
# Frames

def first_frame_at(times: np.ndarray, t: float) -> int:
    """Index of the first frame shown at or after `t` seconds (len(times) when none is)."""
    return int(np.searchsorted(times, t - _SPAN_TOLERANCE_S, side="left"))


def clip_frames(times: np.ndarray, clip: HdvilaClip) -> tuple[int, int]:
    """[first, end) source frames of an HD-VILA clip span."""
    return first_frame_at(times, clip.start), first_frame_at(times, clip.end)


@dataclass(frozen=True, slots=True)
class MappedScene:
    scene: ReleasedScene
    start: int          # source frames, end exclusive
    end: int
    overshoot: int      # released frames past the nominal span end (0 when within)
    clamped: bool       # the scene ran past the source's last frame and was cut there


def map_scene(scene: ReleasedScene, times: np.ndarray) -> MappedScene:
    """Source frames of a released scene. Frame 0 of the HD-VILA clip is the first source frame at or after
    the span start; frame k is the first source frame shown at or after that one's time + k / fps, less
    half a frame of tolerance (of the faster of the two rates): the same as +k when the source has the
    clip's frame rate, and right for other rates and VFR sources."""
    n = len(times)
    span_first, span_end = clip_frames(times, scene.span)
    origin = float(times[span_first]) if span_first < n else scene.span.start
    source_period = (float(times[-1]) - float(times[0])) / (n - 1) if n > 1 else 1.0 / scene.fps
    tolerance = min(1.0 / scene.fps, source_period) / 2

    def source_frame(k: int) -> int:
        if k == 0:
            return span_first
        return int(np.searchsorted(times, origin + k / scene.fps - tolerance, side="left"))

    start = source_frame(scene.first)
    nominal_end = round((scene.span.end - scene.span.start) * scene.fps)
    if scene.end == -1:
        return MappedScene(scene, start, span_end, 0, False)
    end = source_frame(scene.end)
    # the scene's last released frame lies beyond the source's last frame (by more than half a frame)
    clamped = origin + (scene.end - 1) / scene.fps > float(times[-1]) + 0.5 / scene.fps
    return MappedScene(scene, start, end, max(0, scene.end - nominal_end), clamped)
