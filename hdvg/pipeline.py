"""The curation job on Ray: tasks and actors wiring the plain stage functions.

    input videos --(task per video, `cpus_per_video` CPUs)--> process_video: fetch, probe, filter,
                   detect, cut, keyframes; returns (row, clip metas) + keyframe JPEGs + MP4s as 3 objects
                 --(captioner actor pool, may ask for GPUs)--> captions of the keyframes
                 --(one writer actor on the driver's node)--> committed shards, index, videos table

The driver only ever fetches the small (row, metas) object; keyframes go straight from the video task to
a captioner and clip bytes straight to the writer through the object store. At most
`max_inflight_videos` videos are between submission and commit, which bounds memory, object store and
scratch disk (a video task deletes its scratch folder before returning).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hdvg.captioning import CaptionerSpec, build_captioner, build_preprocessor, caption_groups, resolve_captioner
from hdvg.config import ConfigError, CurateConfig
from hdvg.contract import STATUS_FAILED
from hdvg.process import process_video, video_row
from hdvg.shards import ShardWriter, recover, write_stats
from hdvg.sources import WorkItem, is_release_input, list_inputs

log = logging.getLogger("hdvg")


def _process_task(item: WorkItem, cfg: CurateConfig, scratch: str | None):
    result = process_video(item, cfg, scratch)
    return ((result.row, [c.meta for c in result.clips]),
            [c.jpg for c in result.clips], [c.mp4 for c in result.clips])


# JPEG decode + resize of a video's few keyframes is light: a quarter CPU, so that it is not queued
# behind whole-core video tasks while the GPU waits for it
PREPROCESS_CPUS = 0.25


def _preprocess_task(spec: CaptionerSpec, jpgs: list[bytes]):
    return build_preprocessor(spec)(jpgs)


class CaptionActor:
    """Holds one captioner (weights load once per actor) and captions preprocessed keyframes of one or
    several videos per call, in full batches across videos."""

    def __init__(self, spec: CaptionerSpec):
        self.captioner = build_captioner(spec)
        self.batch_size = spec.cfg.batch_size

    def caption_videos(self, *pixels):
        """One (captions, captioner name) per video; the call has one return object per video."""
        got = [(c, self.captioner.name) for c in caption_groups(self.captioner, list(pixels), self.batch_size)]
        return got[0] if len(got) == 1 else got

    def busy(self) -> dict:
        """Seconds the model spent generating, and the span from its first call's start to its last
        call's end (the bench's GPU busy fraction)."""
        c = self.captioner
        return {"busy_s": getattr(c, "busy_s", 0.0),
                "span_s": (c.last_end - c.first_start) if getattr(c, "first_start", None) else 0.0}


class WriterActor:
    """The ShardWriter of this job, kept on the driver's node (OUT is local to it, or object storage)."""

    def __init__(self, out: str, samples_per_shard: int, first: int):
        self.writer = ShardWriter(out, samples_per_shard, first)

    def add(self, head, captioned, jpgs, mp4s) -> str | None:
        row, metas = head
        if captioned:  # else the metas keep what they carry (e.g. captions of a released dataset)
            captions, name = captioned
            for meta, text in zip(metas, captions):
                meta["caption"], meta["captioner"] = text, name
        return self.writer.add(row, list(zip(metas, jpgs or [], mp4s or [])))

    def commit(self) -> str | None:
        return self.writer.commit()


def init_ray(cfg: CurateConfig) -> None:
    """Connect to `run.address` or RAY_ADDRESS, else start a local cluster (no set-up on one machine)."""
    if ray.is_initialized():
        return
    # "local" always starts a private cluster: a bare ray.init() would join any `ray start` head
    # that happens to run on this machine
    address = cfg.run.address or os.environ.get("RAY_ADDRESS") or "local"
    kwargs: dict = dict(logging_level=logging.WARNING, log_to_driver=True)
    if address == "local":
        # a private local cluster: no dashboard to expose, and only the CPUs asked for
        kwargs.update(include_dashboard=False, num_cpus=cfg.run.num_cpus)
    ray.init(address=address, **kwargs)


@dataclass
class Progress:
    total: int
    done: int = 0
    ok: int = 0
    filtered: int = 0
    failed: int = 0
    clips: int = 0
    seconds_in: float = 0.0
    seconds_out: float = 0.0
    started: float = field(default_factory=time.monotonic)
    last_print: float = 0.0

    def update(self, row: dict) -> None:
        self.done += 1
        setattr(self, row["status"], getattr(self, row["status"]) + 1)
        self.clips += row["num_clips"]
        self.seconds_in += row["duration"] or 0.0
        self.seconds_out += row["clip_seconds"] or 0.0

    def line(self) -> str:
        wall = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / wall
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        return (f"[hdvg] videos {self.done}/{self.total} (ok {self.ok}, filtered {self.filtered}, "
                f"failed {self.failed}) clips {self.clips} | {self.seconds_in / 3600:.3f} h in, "
                f"{self.seconds_out / 3600:.3f} h out | {self.seconds_in / wall:.2f} video-s/s | "
                f"ETA {eta:.0f} s")

    def maybe_print(self, every: float = 10.0, force: bool = False) -> None:
        if force or time.monotonic() - self.last_print >= every:
            print(self.line(), file=sys.stderr, flush=True)
            self.last_print = time.monotonic()


def _failed_head(item: WorkItem, reason: str) -> tuple[dict, list]:
    return video_row(item, STATUS_FAILED, reason), []


def _error_text(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip().splitlines()
    return text[-1][:500] if text else type(exc).__name__


def select_work(cfg: CurateConfig, done: set[str]) -> tuple[list[WorkItem], list[tuple[WorkItem, str]]]:
    """Input items still to do and duplicates to record as failed. Local files go largest first (longest
    processing time first), so that a long video does not start last and leave cores idle at the end;
    everything else keeps its input order."""
    todo, dupes, seen = [], [], set(done)
    for item in list_inputs(cfg.input, cfg.source):
        if item.video_id in done:
            continue
        if item.video_id in seen:
            dupes.append((item, f"duplicate video_id {item.video_id!r} in input"))
            continue
        seen.add(item.video_id)
        todo.append(item)
        if cfg.run.limit and len(todo) >= cfg.run.limit:
            break
    return sorted(todo, key=_local_size, reverse=True), dupes


def _local_size(item: WorkItem) -> int:
    path = Path(item.source)
    return path.stat().st_size if "://" not in item.source and path.is_file() else 0


def run_curation(cfg: CurateConfig) -> dict:
    """Curate `cfg.input` into `cfg.output`; resumes what an earlier run of the same OUT left."""
    started = time.monotonic()
    # missing weights fail first, before OUT is touched; a rebuild that keeps the released captions needs
    # no captioner at all
    needs_captions = cfg.source.recaption or not is_release_input(cfg.input)
    spec = resolve_captioner(cfg.captioner) if needs_captions else CaptionerSpec(cfg.captioner, "none")
    out = cfg.output  # a local folder or an s3:// / gs:// URI (hdvg.storage)
    done, first_shard = recover(out, cfg.run.retry_failed)
    todo, dupes = select_work(cfg, done)
    ray_started = time.monotonic()
    init_ray(cfg)
    ray_start_s = time.monotonic() - ray_started
    cpus = ray.cluster_resources().get("CPU", 0)
    if cfg.run.cpus_per_video > cpus:
        raise ConfigError(f"invalid configuration:\n  run.cpus_per_video: {cfg.run.cpus_per_video} CPUs per "
                          f"video, but the Ray cluster has {cpus:g}")
    max_inflight = cfg.run.max_inflight_videos or max(2, int(2 * cpus / cfg.run.cpus_per_video))
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)

    process = ray.remote(num_cpus=cfg.run.cpus_per_video, num_returns=3, max_retries=1)(_process_task)
    preprocess = ray.remote(num_cpus=PREPROCESS_CPUS, max_retries=1)(_preprocess_task)
    gpus = cfg.captioner.num_gpus
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    # an actor that dies (CUDA error, OOM kill, lost node) restarts and its calls are retried, rather
    # than failing every later video
    captioners = [ray.remote(CaptionActor).options(num_cpus=cfg.captioner.num_cpus, num_gpus=gpus, max_restarts=-1,
                                                   max_task_retries=2).remote(spec)
                  for _ in range(cfg.captioner.num_actors)] if spec.runs_model else []
    outstanding = [0] * len(captioners)  # videos sent to each captioner and not back yet
    writer = ray.remote(WriterActor).options(num_cpus=0, scheduling_strategy=here).remote(
        out, cfg.shards.samples_per_shard, first_shard)

    progress = Progress(total=len(todo) + len(dupes))
    decoding: dict = {}    # head ref -> (item, jpgs ref, mp4s ref)
    preparing: dict = {}   # pixels ref -> (item, head ref, head, jpgs ref, mp4s ref)
    prepared: list = []    # (pixels ref, (item, head ref, head, jpgs ref, mp4s ref)) waiting for a captioner
    captioning: dict = {}  # captions ref -> (item, head ref, head, jpgs ref, mp4s ref, captioner index)
    writing: dict = {}     # write ref -> row
    for item, reason in dupes:
        head = _failed_head(item, reason)
        writing[writer.add.remote(head, None, None, None)] = head[0]
    pending = iter(todo)
    while True:
        while len(decoding) + len(preparing) + len(prepared) + len(captioning) + len(writing) < max_inflight:
            item = next(pending, None)
            if item is None:
                break
            head_ref, jpgs_ref, mp4s_ref = process.remote(item, cfg, cfg.run.scratch_dir)
            decoding[head_ref] = (item, jpgs_ref, mp4s_ref)
        while prepared:
            # batches gather keyframes of several videos; a partial one goes only to an idle captioner,
            # or when no more keyframes are on their way
            index = min(range(len(captioners)), key=outstanding.__getitem__)
            queued = sum(len(entry[2][1]) for _, entry in prepared)
            if queued < cfg.captioner.batch_size and outstanding[index] and (decoding or preparing):
                break
            group, clips = [], 0
            while prepared and (not group or clips + len(prepared[0][1][2][1]) <= cfg.captioner.batch_size):
                group.append(prepared.pop(0))
                clips += len(group[-1][1][2][1])
            refs = captioners[index].caption_videos.options(num_returns=len(group)).remote(*[p for p, _ in group])
            for ref, (_, entry) in zip([refs] if len(group) == 1 else refs, group):
                captioning[ref] = (*entry, index)
            outstanding[index] += len(group)
        waiting = [*decoding, *preparing, *captioning, *writing]
        if not waiting:
            break
        ready, _ = ray.wait(waiting, num_returns=1, timeout=5.0, fetch_local=False)
        for ref in ready:
            if ref in decoding:
                item, jpgs_ref, mp4s_ref = decoding.pop(ref)
                try:
                    head = ray.get(ref)
                except RayError as exc:  # the worker died (segfault, OOM kill) even after a retry
                    head, jpgs_ref, mp4s_ref = _failed_head(item, f"worker: {_error_text(exc)}"), None, None
                if any(meta["captioner"] is None for meta in head[1]) and spec.runs_model:  # clips to caption
                    preparing[preprocess.remote(spec, jpgs_ref)] = (item, ref, head, jpgs_ref, mp4s_ref)
                elif any(meta["captioner"] is None for meta in head[1]):  # 'none', or no weights: no work
                    captioned = ([None] * len(head[1]), spec.name)
                    writing[writer.add.remote(head, captioned, jpgs_ref, mp4s_ref)] = head[0]
                else:
                    writing[writer.add.remote(head, None, jpgs_ref, mp4s_ref)] = head[0]
            elif ref in preparing:  # a failed preprocess surfaces as the failure of its caption call
                prepared.append((ref, preparing.pop(ref)))
            elif ref in captioning:
                item, head_ref, head, jpgs_ref, mp4s_ref, index = captioning.pop(ref)
                outstanding[index] -= 1
                try:
                    ray.get(ref)
                    writing[writer.add.remote(head_ref, ref, jpgs_ref, mp4s_ref)] = head[0]
                except RayError as exc:
                    failed = _failed_head(item, f"caption: {_error_text(exc)}")
                    writing[writer.add.remote(failed, None, None, None)] = failed[0]
            else:
                row = writing.pop(ref)
                ray.get(ref)  # a writer error (disk full, permissions) is fatal: nothing is half-written
                progress.update(row)
        progress.maybe_print()
    ray.get(writer.commit.remote())
    progress.maybe_print(force=True)
    wall = time.monotonic() - started
    run = {"videos": progress.done, "clips": progress.clips, "wall_s": round(wall, 3),
           "video_seconds_per_wall_second": round(progress.seconds_in / wall, 4),
           "clips_per_second": round(progress.clips / wall, 4), "ray_start_s": round(ray_start_s, 3),
           "ray_cpus": cpus, "captioner": spec.name}
    if spec.uncaptioned_reason:
        run["uncaptioned"] = spec.uncaptioned_reason
    if captioners:
        run["captioner_busy"] = ray.get([c.busy.remote() for c in captioners])
    return write_stats(out, run)
