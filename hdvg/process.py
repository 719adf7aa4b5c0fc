"""`process_video`: one source video through fetch, probe, filter, detect, cut and keyframes.

A plain function: Ray runs it as a task, tests call it directly. It never raises for a bad video: every
failure becomes the video's row with a reason, and its scratch files are removed on every path.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from hdvg.config import CurateConfig
from hdvg.contract import SOURCE_META_FIELDS, STATUS_FAILED, STATUS_FILTERED, STATUS_OK
from hdvg.cutting import CutError, cut_clips
from hdvg.filtering import filter_video
from hdvg.probe import ProbeError, VideoInfo, probe
from hdvg.scenes import DecodeError, detect_scenes, scene_spans
from hdvg.sources import FetchError, WorkItem, fetch

log = logging.getLogger(__name__)


@dataclass
class ClipSample:
    meta: dict        # the CLIP_FIELDS of the clip's json (caption filled in later)
    jpg: bytes        # centre keyframe
    mp4: bytes


@dataclass
class VideoResult:
    row: dict                                   # the VIDEO_SCHEMA row
    clips: list[ClipSample] = field(default_factory=list)


def clip_id_of(video_id: str, index: int) -> str:
    """HD-VG style: `<video_id>.<k>` for the k-th clip of a video, in time order."""
    return f"{video_id}.{index}"


def _row(item: WorkItem, status: str, reason: str | None, info: VideoInfo | None = None,
         clips: list[ClipSample] = ()) -> dict:
    return {
        "video_id": item.video_id, "source": item.source, "status": status, "reason": reason,
        "num_clips": len(clips),
        "duration": info.duration if info else None,
        "clip_seconds": sum(c.meta["end_time"] - c.meta["start_time"] for c in clips),
        "width": info.width if info else None, "height": info.height if info else None,
        "fps": info.fps if info else None, "wall_s": None,
    }


def _clips(item: WorkItem, path: Path, info: VideoInfo, cfg: CurateConfig, work: Path) -> VideoResult:
    reason = filter_video(info, cfg.filter)
    if reason:
        return VideoResult(_row(item, STATUS_FILTERED, reason, info))
    scan = detect_scenes(path, cfg.detect)
    spans = scene_spans(scan.cuts, scan.num_frames, info.fps, cfg.clip)
    if not spans:
        return VideoResult(_row(item, STATUS_FILTERED,
                                f"no scene of at least {cfg.clip.min_clip_seconds:g} s", info))
    cut = cut_clips(path, info, spans, work / "clips", cfg.encode)
    times = scan.frame_times
    end_of_video = float(times[-1]) + 1.0 / info.fps
    samples = []
    for k, c in enumerate(cut):
        start_time = float(times[c.span.start])
        end_time = float(times[c.span.end]) if c.span.end < scan.num_frames else end_of_video
        meta = {
            "clip_id": clip_id_of(item.video_id, k), "video_id": item.video_id, "source": item.source,
            "start_frame": c.span.start, "end_frame": c.span.end,
            "start_time": round(start_time, 6), "end_time": round(end_time, 6),
            "fps": info.fps, "width": c.width, "height": c.height, "num_frames": c.span.num_frames,
            "caption": None, "captioner": None,
            **{f: None for f in SOURCE_META_FIELDS},
        }
        samples.append(ClipSample(meta=meta, jpg=c.keyframe.read_bytes(), mp4=c.path.read_bytes()))
    return VideoResult(_row(item, STATUS_OK, None, info, samples), samples)


def process_video(item: WorkItem, cfg: CurateConfig, scratch: str | Path | None = None) -> VideoResult:
    """Run every CPU stage on one video; the result carries the clips' bytes and the video's row."""
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="hdvg-", dir=scratch))
    info = None
    try:
        path = fetch(item, work)
        info = probe(path)
        result = _clips(item, path, info, cfg, work)
    except (FetchError, ProbeError, DecodeError, CutError) as exc:
        stage = {FetchError: "fetch", ProbeError: "probe", DecodeError: "decode", CutError: "cut"}[type(exc)]
        result = VideoResult(_row(item, STATUS_FAILED, f"{stage}: {exc}", info))
    except Exception as exc:  # a bug or an unforeseen input must not end the job: record it, log the trace
        log.error("video %s: %s", item.video_id, traceback.format_exc())
        result = VideoResult(_row(item, STATUS_FAILED, f"internal error: {type(exc).__name__}: {exc}", info))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # downloads and cut files alike: bounded scratch
    result.row["wall_s"] = round(time.monotonic() - started, 3)
    return result
