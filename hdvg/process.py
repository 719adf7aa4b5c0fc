"""`process_video`: one source video through fetch, probe, filter, detect, cut and keyframes.

A plain function: Ray runs it as a task, tests call it directly. It never raises for a bad video: every
failure becomes the video's row with a reason, and its scratch files are removed on every path.

Three ways to plan the clips of a video:
- scene detection over the whole video (a directory or manifest input);
- scene detection restricted to the HD-VILA-100M clip spans (HD-VILA input, as HD-VG did), clip ids
  `<vid>.<k>_<j>` for the j-th scene of HD-VILA clip k;
- rebuild: the scenes released with HD-VG-130M, cut as they are with their ids and captions (no filter,
  no detection, no captioning unless `source.recaption`).
"""
from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from hdvg.config import CurateConfig
from hdvg.contract import SOURCE_META_FIELDS, STATUS_FAILED, STATUS_FILTERED, STATUS_OK
from hdvg.failures import failure_class
from hdvg.cutting import CutClip, CutError, SceneClips, cut_clips, cut_video
from hdvg.download import YouTubeNotReady, redact, secrets_of
from hdvg.filtering import filter_video
from hdvg.metadata import clip_frames, map_scene
from hdvg.probe import ProbeError, VideoInfo, probe
from hdvg.scenes import DecodeError, Span
from hdvg.sources import FetchError, Fetched, WorkItem, fetch

log = logging.getLogger(__name__)


@dataclass
class ClipSample:
    meta: dict        # the CLIP_FIELDS and MEASURE_FIELDS of the clip's json (caption filled in later)
    jpg: bytes        # centre keyframe
    mp4: bytes


@dataclass
class VideoResult:
    row: dict                                   # the VIDEO_SCHEMA row
    clips: list[ClipSample] = field(default_factory=list)


@dataclass(frozen=True)
class PlannedClip:
    clip_id: str
    span: Span                 # source frames
    caption: str | None = None


def clip_id_of(video_id: str, index: int) -> str:
    """HD-VG style: `<video_id>.<k>` for the k-th clip of a video, in time order."""
    return f"{video_id}.{index}"


def video_row(item: WorkItem, status: str, reason: str | None, info: VideoInfo | None = None,
              clips: list[ClipSample] = (), fetched: Fetched | None = None, note: str | None = None,
              attempts: int | None = None) -> dict:
    """The VIDEO_SCHEMA row of a video; the one row builder (the pipeline's failed rows use it too)."""
    reason = redact(reason) if reason else reason  # no credentials written into a URL reach a row (nor its source)
    return {
        "video_id": item.video_id, "source": redact(item.source), "status": status, "reason": reason,
        "failure": failure_class(reason) if status == STATUS_FAILED else None,
        "num_clips": len(clips),
        "duration": info.duration if info else None,
        "clip_seconds": sum(c.meta["end_time"] - c.meta["start_time"] for c in clips),
        "width": info.width if info else None, "height": info.height if info else None,
        "fps": info.fps if info else None, "wall_s": None,
        "format": fetched.format if fetched else None,
        "attempts": fetched.attempts if fetched else attempts,
        "note": note,
    }


def task_threads(cfg: CurateConfig) -> int:
    """Decoder and x264 threads of one video task: `encode.ffmpeg_threads`, else the CPUs the task reserves.
    FFmpeg's own choice is about one thread per core of the node for each of them, so N tasks on an N-core
    node would run 2N^2 threads that contend for the same cores (and x264 spends CPU on frame threading)."""
    return cfg.encode.ffmpeg_threads or max(1, math.ceil(cfg.run.cpus_per_video))


def packet_times(path: Path, info: VideoInfo) -> np.ndarray:
    """Seconds of each frame from the first, in presentation order, by demuxing only (no decode): the
    numbering of `detect_scenes` and the cutter. Streams without timestamps are taken as constant rate."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # packets flagged discard (edit lists trimming the start) never become frames
            pts = [p.pts for p in container.demux(stream) if p.size and not p.is_discard]
            base = float(stream.time_base)
    except av.FFmpegError as exc:
        raise DecodeError(f"undemuxable video: {exc}") from None
    if not pts or any(p is None for p in pts):
        return np.arange(info.num_frames) / info.fps
    times = np.sort(np.asarray(pts, dtype=np.float64)) * base
    return times - times[0]


def _disjoint_groups(planned: list[PlannedClip]) -> list[list[PlannedClip]]:
    """Planned clips in groups of sorted, non-overlapping spans, as one `cut_clips` pass needs. Released
    HD-VG scenes can overlap where a scene of one HD-VILA clip runs past its span into the next one."""
    groups: list[list[PlannedClip]] = []
    for p in sorted(planned, key=lambda p: (p.span.start, p.span.end)):
        for group in groups:
            if p.span.start >= group[-1].span.end:
                group.append(p)
                break
        else:
            groups.append([p])
    return groups


def _samples(item: WorkItem, fetched: Fetched, info: VideoInfo, cut: list[tuple[PlannedClip, CutClip]],
             times: np.ndarray, cfg: CurateConfig) -> list[ClipSample]:
    """The shard samples of a video's cut clips, in time order (their MP4s are read and may be deleted)."""
    captioner = item.release if item.release and not cfg.source.recaption else None
    end_of_video = float(times[-1]) + 1.0 / info.fps
    samples = []
    for p, c in cut:
        end_time = float(times[c.span.end]) if c.span.end < len(times) else end_of_video
        meta = {
            "clip_id": p.clip_id, "video_id": item.video_id, "source": redact(item.source),
            "start_frame": c.span.start, "end_frame": c.span.end,
            "start_time": round(float(times[c.span.start]), 6), "end_time": round(end_time, 6),
            "fps": info.fps, "width": c.width, "height": c.height, "num_frames": c.span.num_frames,
            # a released scene without a caption is left for the captioner
            "caption": p.caption if captioner else None,
            "captioner": captioner if captioner and p.caption is not None else None,
            **{f: fetched.meta.get(f) for f in SOURCE_META_FIELDS},
            **c.measures,
        }
        samples.append(ClipSample(meta=meta, jpg=c.keyframe, mp4=c.path.read_bytes()))
    samples.sort(key=lambda s: (s.meta["start_frame"], s.meta["end_frame"]))
    return samples


def _rebuild(item: WorkItem, fetched: Fetched, info: VideoInfo, cfg: CurateConfig, work: Path) -> VideoResult:
    """Cut the released scenes of `item` exactly (frames mapped through the source's timestamps)."""
    times = packet_times(fetched.path, info)
    mapped = [map_scene(s, times) for s in item.scenes]
    planned = [PlannedClip(m.scene.clip_id, Span(m.start, m.end), m.scene.caption)
               for m in mapped if m.end > m.start]
    over = [m.overshoot for m in mapped if m.overshoot]
    notes = []
    if over:
        notes.append(f"{len(over)} released scenes end past their HD-VILA span (max +{max(over)} frames)")
    clamped = [m.scene.clip_id for m in mapped if m.clamped]
    if clamped:
        notes.append(f"{len(clamped)} cut at the source's last frame: {', '.join(clamped[:5])}")
    missing = [m.scene.clip_id for m in mapped if m.end <= m.start]
    if missing:
        notes.append(f"{len(missing)} released scenes not in the source: {', '.join(missing[:5])}")
    note = "rebuild: " + "; ".join(notes) if notes else None
    if not planned:
        return VideoResult(video_row(item, STATUS_FAILED, f"rebuild: none of the {len(mapped)} released "
                                     f"scenes lies inside the source ({len(times)} frames)", info,
                                     fetched=fetched, note=note))
    cut = []
    for g, group in enumerate(_disjoint_groups(planned)):
        clips = cut_clips(fetched.path, info, [p.span for p in group], work / f"clips{g}", cfg.encode,
                          task_threads(cfg))
        cut += zip(group, clips)
    samples = _samples(item, fetched, info, cut, times, cfg)
    return VideoResult(video_row(item, STATUS_OK, None, info, samples, fetched, note), samples)


def _detected(item: WorkItem, fetched: Fetched, info: VideoInfo, cfg: CurateConfig, work: Path,
              predict=None) -> VideoResult:
    reason = filter_video(info, cfg.filter)
    if reason:
        return VideoResult(video_row(item, STATUS_FILTERED, reason, info, fetched=fetched))
    hdvila = sorted(item.clips, key=lambda c: c.start)
    regions = None
    if hdvila:  # detect inside the HD-VILA clip spans only; a span overlapping the one before is trimmed
        times = packet_times(fetched.path, info)
        regions, end = [], 0
        for clip in hdvila:
            first, last = clip_frames(times, clip)
            regions.append(Span(max(first, end), max(last, end)))
            end = regions[-1].end
    plan = SceneClips(cfg.clip, info.fps, regions)
    scan, clips = cut_video(fetched.path, info, plan, work / "clips", cfg.encode, cfg.detect, task_threads(cfg),
                            predict)
    if hdvila:  # clip ids <vid>.<k>_<j>: the j-th clip inside HD-VILA clip k
        cut = []
        for clip, region in zip(hdvila, regions):
            inside = [c for c in clips if region.start <= c.span.start < region.end]
            cut += [(PlannedClip(f"{item.video_id}.{clip.index}_{j}", c.span), c) for j, c in enumerate(inside)]
    else:
        cut = [(PlannedClip(clip_id_of(item.video_id, k), c.span), c) for k, c in enumerate(clips)]
    if not cut:
        where = " inside the HD-VILA spans" if hdvila else ""
        return VideoResult(video_row(item, STATUS_FILTERED, f"no scene of at least "
                                     f"{cfg.clip.min_clip_seconds:g} s{where}", info, fetched=fetched))
    samples = _samples(item, fetched, info, cut, scan.frame_times, cfg)
    return VideoResult(video_row(item, STATUS_OK, None, info, samples, fetched), samples)


def process_video(item: WorkItem, cfg: CurateConfig, scratch: str | Path | None = None,
                  predict=None) -> VideoResult:
    """Run every CPU stage on one video; the result carries the clips' bytes and the video's row. `predict`:
    TransNetV2 on a GPU actor (hdvg.pipeline), else detection runs in this task."""
    started = time.monotonic()
    if item.problem or item.not_video:
        result = VideoResult(video_row(item, STATUS_FAILED, f"input: {item.problem}") if item.problem else
                             video_row(item, STATUS_FILTERED, item.not_video))
        result.row["wall_s"] = 0.0
        return result
    work, info, fetched = None, None, None
    try:
        work = Path(tempfile.mkdtemp(prefix="hdvg-", dir=scratch))
        fetched = fetch(item, work, cfg.source)
        info = probe(fetched.path)
        if item.scenes:
            result = _rebuild(item, fetched, info, cfg, work)
        else:
            result = _detected(item, fetched, info, cfg, work, predict)
    except FetchError as exc:  # "download: <classification>: <message>", or "fetch: <message>" for a local path
        stage = "download" if exc.classification else "fetch"
        result = VideoResult(video_row(item, STATUS_FAILED, f"{stage}: {exc}", attempts=exc.attempts))
    except YouTubeNotReady:  # the node's set-up, not the video's: the job stops with it (hdvg.scheduler)
        raise
    except (ProbeError, DecodeError, CutError) as exc:
        stage = "probe" if isinstance(exc, ProbeError) else "decode" if isinstance(exc, DecodeError) else "cut"
        result = VideoResult(video_row(item, STATUS_FAILED, f"{stage}: {exc}", info, fetched=fetched))
    except Exception as exc:  # a bug or an unforeseen input must not end the job: record it, log the trace
        log.error("video %s: %s", item.video_id, redact(traceback.format_exc(), secrets_of(cfg.source)))
        result = VideoResult(video_row(item, STATUS_FAILED, f"internal error: {type(exc).__name__}: {exc}",
                                       info, fetched=fetched))
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # downloads and cut files alike: bounded scratch
    if result.row["reason"]:  # every stage's message, with the configured secrets taken out
        result.row["reason"] = redact(result.row["reason"], secrets_of(cfg.source))
    result.row["wall_s"] = round(time.monotonic() - started, 3)
    return result
