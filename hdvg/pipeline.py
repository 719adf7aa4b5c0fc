"""The curation job on Ray: the tasks and actors around the plain stage functions, and `run_curation`.

    input videos --(task per video, `cpus_per_video` CPUs)--> process_video: fetch, probe, filter,
                   detect, cut, keyframes; returns (row, clip metas, node) + keyframe JPEGs + MP4s as 3 objects
                 --(captioner actor pool, may ask for GPUs)--> captions of the clips that lack one
                 --(a shard writer per node, or one on the driver's node)--> committed shards, index, videos

The driver only ever fetches the small (row, metas) object; keyframes go straight from the video task to
a captioner and clip bytes straight to the writer of the node that cut them, through the object store.
`hdvg.scheduler` moves each video through these stages; at most `max_inflight_videos` videos are between
submission and their writer, which bounds memory, object store and scratch disk (a video task deletes its
scratch folder before returning).
"""
from __future__ import annotations

import functools
import itertools
import logging
import os
import threading
import time
import zlib

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hdvg.captioning import CaptionerSpec, build_captioner, build_preprocessor, caption_groups, resolve_captioner
from hdvg.config import CaptionConfig, ConfigError, CurateConfig
from hdvg.lock import OutLock
from hdvg.process import process_video
from hdvg.scheduler import Scheduler, error_text, local_size, read_ahead
from hdvg.shards import ShardWriter, recover, remove_uncommitted, write_stats
from hdvg.sources import WorkItem, count_inputs, is_release_input, list_inputs
from hdvg.storage import Store, is_remote

log = logging.getLogger("hdvg")


def _process_task(item: WorkItem, cfg: CurateConfig, scratch: str | None, detectors: list):
    predict = remote_predictor(detectors, item.video_id) if detectors else None
    result = process_video(item, cfg, scratch, predict)
    node = ray.get_runtime_context().get_node_id()
    return ((result.row, [c.meta for c in result.clips], node),
            [c.jpg for c in result.clips], [c.mp4 for c in result.clips])


# JPEG decode + resize of a video's few keyframes is light: a quarter CPU, so that it is not queued
# behind whole-core video tasks while the GPU waits for it
PREPROCESS_CPUS = 0.25


def _preprocess_task(spec: CaptionerSpec, jpgs: list[bytes], need: list[int]):
    return build_preprocessor(spec)([jpgs[i] for i in need])


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


def merge_captions(metas: list[dict], need: list[int], captioned: tuple | None, fallback: str) -> None:
    """Fill the clips at positions `need` with their captions (captions, captioner name), in order; without
    captions (no model) they are marked with `fallback` and stay empty. Other clips keep what they carry
    (e.g. the captions of a released dataset)."""
    captions, name = captioned if captioned is not None else ([None] * len(need), fallback)
    if len(captions) != len(need):
        raise ValueError(f"{len(captions)} captions for {len(need)} clips")
    for i, text in zip(need, captions):
        metas[i]["caption"], metas[i]["captioner"] = text, name


class DetectActor:
    """TransNetV2 on a GPU for the video tasks: they send their consecutive windows of 48x27 frames as one
    strip, each frame once (about 130 KB per video-second at 30 fps), and cut when the scores come back, so
    the CPU nodes decode and encode while the GPU detects."""

    def __init__(self, weights: str | None, device: str):
        from hdvg.transnet import load_network

        self.net = load_network(weights, device)

    def predict(self, strip):
        """uint8 (50 B + 50, 27, 48, 3), B consecutive windows -> (single-frame, all-frames) scores, float32
        (B, 50) each."""
        from hdvg.transnet import predict_windows, windows_of

        return predict_windows(self.net, windows_of(strip))


def remote_predictor(detectors: list, key: str):
    """A video task's calls to one DetectActor of the pool (chosen by `key`, so each video's windows go to one
    actor in order); blocking on each call costs little: one call holds `gpu_batch_windows` windows."""
    from hdvg.transnet import strip_of

    actor = detectors[zlib.crc32(key.encode()) % len(detectors)]
    return lambda windows: ray.get(actor.predict.remote(strip_of(windows)))


def detect_device(cfg: CurateConfig) -> str:
    """Where TransNetV2 runs: `detect.device`, with auto = cuda when the Ray cluster has a GPU."""
    gpus = ray.cluster_resources().get("GPU", 0)
    device = cfg.detect.device if cfg.detect.device != "auto" else ("cuda" if gpus > 0 else "cpu")
    if device == "cuda" and gpus <= 0:
        raise ConfigError("invalid configuration:\n  detect.device: cuda, but the Ray cluster has no GPU")
    return device


class ShardNumbers:
    """Hands out shard numbers to the job's writers, each exactly once, and remembers who took which. Only a
    job with a writer per node has one: a lone writer counts its own (see WriterActor)."""

    def __init__(self, first: int):
        self.next_number, self.taken = first, {}

    def take(self, writer_id: str) -> int:
        number, self.next_number = self.next_number, self.next_number + 1
        self.taken.setdefault(writer_id, []).append(number)
        return number

    def numbers_of(self, writer_id: str) -> list[int]:
        return self.taken.get(writer_id, [])


class WriterActor:
    """A ShardWriter of this job on one node. `numbers` is the job's ShardNumbers when writers run on several
    nodes at once; for the job's only writer it is the first number it may take, and it counts on from there
    by itself (one process fewer per job; the scheduler knows which numbers it can have taken)."""

    def __init__(self, out: str, samples_per_shard: int, numbers, writer_id: str, fallback_captioner: str,
                 scratch_dir: str | None):
        self.fallback = fallback_captioner
        if isinstance(numbers, int):
            next_number = itertools.count(numbers).__next__
        else:
            def next_number() -> int:
                return ray.get(numbers.take.remote(writer_id))
        self.writer = ShardWriter(out, samples_per_shard, next_number=next_number, scratch_dir=scratch_dir)

    def add(self, head, need, captioned, jpgs, mp4s) -> str | None:
        row, metas, _ = head
        merge_captions(metas, need, captioned, self.fallback)
        return self.writer.add(row, list(zip(metas, jpgs or [], mp4s or [])))

    def commit(self) -> str | None:
        return self.writer.commit()


def _busy(actor) -> dict:
    try:
        return ray.get(actor.busy.remote())
    except RayError as exc:  # an actor that could not start: its videos are failed rows already
        return {"error": error_text(exc)}


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


class Stages:
    """The job's Ray tasks and actors, as the scheduler calls them."""

    def __init__(self, cfg: CurateConfig, spec: CaptionerSpec, first_shard: int):
        self.cfg, self.spec = cfg, spec
        self._process = ray.remote(num_cpus=cfg.run.cpus_per_video, resources=cfg.run.video_resources or None,
                                   num_returns=3, max_retries=1)(_process_task)
        # TransNetV2 on a GPU actor pool; on CPU it runs inside each video task. An actor that dies restarts
        # and its calls are retried, as the captioners'.
        gpu_detect = cfg.detect.detector == "transnetv2" and detect_device(cfg) == "cuda"
        detect = cfg.detect
        self.detectors = [ray.remote(DetectActor).options(num_cpus=0, num_gpus=detect.gpu_per_actor, max_restarts=-1,
                                                          max_task_retries=2).remote(detect.transnetv2_weights, "cuda")
                          for _ in range(detect.gpu_actors)] if gpu_detect else []
        self._preprocess = ray.remote(num_cpus=PREPROCESS_CPUS, max_retries=1)(_preprocess_task)
        gpus = cfg.captioner.num_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        # an actor that dies (CUDA error, OOM kill, lost node) restarts and its calls are retried, rather
        # than failing every later video
        self.captioners = [ray.remote(CaptionActor).options(num_cpus=cfg.captioner.num_cpus, num_gpus=gpus,
                                                            max_restarts=-1, max_task_retries=2).remote(spec)
                           for _ in range(cfg.captioner.num_actors)] if spec.runs_model else []
        self.head_node = ray.get_runtime_context().get_node_id()
        self.first_shard = first_shard
        mode = cfg.shards.writers
        self.per_node_writers = mode == "per_node" or (mode == "auto" and is_remote(cfg.output))

    @functools.cached_property
    def numbers(self):
        """The job's ShardNumbers, on the driver's node, made with the first per-node writer."""
        here = NodeAffinitySchedulingStrategy(node_id=self.head_node, soft=False)
        return ray.remote(ShardNumbers).options(num_cpus=0, scheduling_strategy=here).remote(self.first_shard)

    def process(self, item: WorkItem):
        return self._process.remote(item, self.cfg, self.cfg.run.scratch_dir, self.detectors)

    def preprocess(self, jpgs_ref, need: list[int]):
        return self._preprocess.remote(self.spec, jpgs_ref, need)

    def caption(self, index: int, pixels: list) -> list:
        refs = self.captioners[index].caption_videos.options(num_returns=len(pixels)).remote(*pixels)
        return [refs] if len(pixels) == 1 else refs

    def restart_captioner(self, index: int, calls: list) -> None:
        """Cancel the calls of captioner `index` (so they are not retried) and kill its process; Ray starts
        it again (max_restarts=-1), loading the weights afresh."""
        for ref in calls:
            ray.cancel(ref)
        ray.kill(self.captioners[index], no_restart=False)

    def writer(self, node: str, writer_id: str, first: int | None):
        """A writer actor on `node` ("head": the driver's); it dies with its node. `first`: the first shard
        number of the job's only writer (it counts on by itself); None: numbers from ShardNumbers."""
        target = self.head_node if node == "head" else node
        return ray.remote(WriterActor).options(
            num_cpus=0, max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=target, soft=False),
        ).remote(self.cfg.output, self.cfg.shards.samples_per_shard, self.numbers if first is None else first,
                 writer_id, self.spec.name, self.cfg.run.scratch_dir)

    def numbers_of(self, writer_id: str) -> list[int]:
        return ray.get(self.numbers.numbers_of.remote(writer_id))

    def alive_nodes(self) -> set[str]:
        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def count_in_background(cfg: CurateConfig, progress, already_done: int) -> None:
    """Count the input beside the run (a parquet manifest's metadata, a listing's length; released metadata
    is parsed a second time), so that the progress line has a total and an ETA long before all is read."""
    def count() -> None:
        try:
            progress.counted(max(0, count_inputs(cfg.input, cfg.source) - already_done))
        except Exception as exc:  # only the ETA is lost; the job reads the input itself and says what is wrong
            log.warning("hdvg: input not counted (%s: %s): no ETA until it is all read", type(exc).__name__, exc)

    threading.Thread(target=count, name="hdvg-count-input", daemon=True).start()


def yt_dlp_version() -> str:
    from yt_dlp.version import __version__

    return __version__


def rebuild_captioner(cfg: CaptionConfig) -> CaptionerSpec:
    """The captioner of the released scenes that lack a caption: the configured one where its weights and
    packages are there, else none (those scenes stay uncaptioned and the run says why)."""
    try:
        return resolve_captioner(cfg.model_copy(update={"on_missing_weights": "uncaptioned"}))
    except ImportError as exc:  # a curation node without the caption extra
        return CaptionerSpec(cfg, f"none:not-installed:{cfg.name}", uncaptioned_reason=f"captioner.name: {exc}")


def run_curation(cfg: CurateConfig) -> dict:
    """Curate `cfg.input` into `cfg.output`; resumes what an earlier run of the same OUT left."""
    started = time.monotonic()
    # missing weights fail first, before OUT is touched; a rebuild that keeps the released captions captions
    # only the released scenes without one, and goes on without where the captioner cannot run
    if cfg.source.recaption or not is_release_input(cfg.input):
        spec = resolve_captioner(cfg.captioner)
    else:
        spec = rebuild_captioner(cfg.captioner)
    store = Store(cfg.output, cfg.run.scratch_dir)  # a local folder or an s3:// / gs:// URI (hdvg.storage)
    with OutLock(store, cfg.run.lock_ttl_s).acquire(force=cfg.run.force_unlock):
        done, first_shard = recover(store, cfg.run.retry_failed)
        ray_started = time.monotonic()
        init_ray(cfg)
        ray_start_s = time.monotonic() - ray_started
        cpus = ray.cluster_resources().get("CPU", 0)
        if cfg.run.cpus_per_video > cpus:
            raise ConfigError(f"invalid configuration:\n  run.cpus_per_video: {cfg.run.cpus_per_video} CPUs per "
                              f"video, but the Ray cluster has {cpus:g}")
        max_inflight = cfg.run.max_inflight_videos or max(2, int(2 * cpus / cfg.run.cpus_per_video))
        stages = Stages(cfg, spec, first_shard)
        todo = (item for item in list_inputs(cfg.input, cfg.source) if item.video_id not in done)
        scheduler = Scheduler(cfg, stages, read_ahead(todo, cfg.run.lookahead, local_size), max_inflight)
        count_in_background(cfg, scheduler.progress, already_done=len(done))
        progress = scheduler.run()
        remove_uncommitted(store)  # what writers lost with their node left mid-publish
        wall = time.monotonic() - started
        tally = progress.tally
        run = {"videos": tally.videos, "clips": tally.clips, "wall_s": round(wall, 3),
               "video_seconds_per_wall_second": round(tally.seconds_in / wall, 4),
               "clips_per_second": round(tally.clips / wall, 4), "ray_start_s": round(ray_start_s, 3),
               "ray_cpus": cpus, "captioner": spec.name, "writers": len(scheduler.writers),
               "yt_dlp": yt_dlp_version()}
        if scheduler.youtube:  # what downloaded from YouTube: yt-dlp, its JS runtime and challenge solver
            run["youtube"] = scheduler.youtube
        if spec.uncaptioned_reason:
            run["uncaptioned"] = spec.uncaptioned_reason
        if stages.captioners:
            run["captioner_busy"] = [_busy(c) for c in stages.captioners]
        return write_stats(store, run)
