"""`hdvg eval`: generate samples with the sampler (seeded, resumable, split across ranks), score them with
FVD and CLIPSIM, write `REPORT_DIR/report.json` and a `grid.png` of sample frames.

    REPORT_DIR/samples.jsonl     every sample of the evaluation: index, prompt, seed (written first)
    REPORT_DIR/videos/NNNNNN.mp4 sample NNNNNN, written atomically; a rerun generates only what is missing
    REPORT_DIR/report.json       the metrics and everything they depend on
    REPORT_DIR/grid.png          the first scored clips, 4 frames each

`--videos DIR_OR_SHARDS` scores existing videos instead: a REPORT_DIR of an earlier run, a folder of MP4s
(captions from same-named .txt files), or curation shards (each clip's central 16 frames and its caption).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from tqdm import tqdm

from hdvg.config import ConfigError, _format_errors
from model.data import Clip, SkipSample, VideoBytes, central_indices, expand_shards, iter_clips
from model.eval.clipsim import CLIPSIM_MODEL, CROP_POLICIES, ClipScorer
from model.eval.frames import CLIP_FRAMES, RESIZE_POLICIES
from model.eval.frechet import FeatureStats
from model.eval.fvd import FVD_CLIPS, batches, i3d_features, real_stats
from model.eval.i3d import KINETICS_CLASSES, I3DDetector
from model.eval.prompts import Sample, build_samples, load_prompts, protocol_size
from model.eval.report import save_grid, sha256_of, write_json

MANIFEST, VIDEOS_DIR, REPORT, GRID = "samples.jsonl", "videos", "report.json", "grid.png"
METRICS = ("fvd", "clipsim")
GRID_CLIPS = 8


class EvalConfig(BaseModel):
    """One evaluation. Exactly one of `checkpoint` (generate, then score) and `videos` (score only). Built on
    pydantic like the other configs: `EvalConfig.build(...)` raises hdvg's ConfigError naming every bad field
    (`hdvg eval` exits 2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    output: str
    checkpoint: str | None = None
    videos: str | None = None
    prompts: str = "ucf101"
    annotations: str | None = None  # the msrvtt / webvid annotation file
    real: str | None = None  # real clips for FVD: a shard pattern or a folder of shards
    i3d: str | None = None  # i3d_torchscript.pt or i3d_pretrained_400.pt
    clip: str = CLIPSIM_MODEL  # folder or hub name of a transformers CLIP
    metrics: tuple[str, ...] = METRICS
    # Samples generated and scored. None: the whole protocol of ucf101 (10,100) and msrvtt (2,990, D.3),
    # else FVD_CLIPS (StyleGAN-V's 2048 a side).
    num_samples: int | None = Field(None, ge=1)
    real_count: int | None = Field(None, ge=1)  # real clips for FVD (default: num_samples, "2048 a side")
    resize: str = "full"  # FVD's 224x224 policy: the TF FVD / StyleGAN-V resize of the whole frame
    clip_crop: str = "center-crop"  # CLIPSIM's policy: the CLIP processor's own
    steps: int = Field(50, ge=1)  # DDIM steps (appendix D.2)
    guidance: float = 9.0  # classifier-free guidance scale (appendix D.2)
    seed: int = 0  # sample i is generated with seed + i
    batch_size: int = Field(4, ge=1)  # videos per sampler call
    score_batch: int = Field(8, ge=1)  # clips per detector call
    device: str | None = None  # default: this rank's GPU if there is one, else cpu
    stats_cache: str = Field(default_factory=lambda: str(Path.home() / ".cache" / "hdvg" / "fvd"))
    rank: int = Field(0, ge=0)
    world_size: int = Field(1, ge=1)

    @field_validator("resize", "clip_crop")
    @classmethod
    def _policy(cls, policy: str, info: ValidationInfo) -> str:
        choices = {"resize": RESIZE_POLICIES, "clip_crop": CROP_POLICIES}[info.field_name]
        if policy not in choices:
            raise ValueError(f"one of {choices}")
        return policy

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        if not metrics or set(metrics) - set(METRICS):
            raise ValueError(f"a comma list of {METRICS}")
        return metrics

    @field_validator("world_size")
    @classmethod
    def _rank_in_world(cls, world_size: int, info) -> int:
        if info.data.get("rank", 0) >= world_size:
            raise ValueError(f"must be above rank ({info.data.get('rank')})")
        return world_size

    @model_validator(mode="after")
    def _one_source_and_fvd_inputs(self) -> "EvalConfig":
        if (self.checkpoint is None) == (self.videos is None):
            raise ValueError("give exactly one of --checkpoint RUN (generate and score) and --videos "
                             "DIR_OR_SHARDS (score existing videos)")
        if "fvd" in self.metrics and (self.real is None or self.i3d is None):
            raise ValueError("FVD needs --real 'SHARDS' (real clips) and --i3d PATH (the I3D detector); "
                             "pass --metrics clipsim to score CLIPSIM only")
        return self

    @classmethod
    def build(cls, **values) -> "EvalConfig":
        try:
            return cls(**values)
        except ValidationError as err:
            raise ConfigError(_format_errors(err)) from None


# ------------------------------------------------------------------------------------------- generation

def video_path(output: Path, index: int) -> Path:
    return output / VIDEOS_DIR / f"{index:06d}.mp4"


def write_manifest(output: Path, samples: list[Sample]) -> None:
    """Record the samples; an output that already holds other samples at the same indices is refused, so
    a rerun can extend or resume an evaluation but never mix two."""
    path = output / MANIFEST
    if path.is_file():
        old = [Sample(**json.loads(line)) for line in path.read_text().splitlines() if line]
        for before, now in zip(old, samples):
            if before != now:
                raise ValueError(f"{output} holds another evaluation (sample {before.index}: "
                                 f"{before.prompt!r} seed {before.seed}, now {now.prompt!r} seed "
                                 f"{now.seed}); use a new --output")
        if len(old) >= len(samples):
            return
    write_lines = "".join(json.dumps(asdict(s)) + "\n" for s in samples)
    tmp = path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
    output.mkdir(parents=True, exist_ok=True)
    tmp.write_text(write_lines)
    tmp.replace(path)


def generate(cfg: EvalConfig, samples: list[Sample], device: str) -> int:
    """Generate this rank's missing samples (index mod world_size == rank); returns how many."""
    output = Path(cfg.output)
    todo = [s for s in samples if s.index % cfg.world_size == cfg.rank
            and not video_path(output, s.index).is_file()]
    if not todo:
        return 0
    from model.sample import Sampler, write_video

    sampler = Sampler.load(cfg.checkpoint, device=device)
    (output / VIDEOS_DIR).mkdir(parents=True, exist_ok=True)
    # 16 frames (the protocol's clip) at the size the run was trained at (the paper's runs: 344x192)
    width, height = sampler.cfg.data.width, sampler.cfg.data.height
    # a progress line with ETA on a terminal, none in a log file
    progress = tqdm(total=len(todo), desc="eval: generate", unit="video", dynamic_ncols=True,
                    disable=not sys.stderr.isatty())
    for batch in progress_batches(todo, cfg.batch_size, progress):
        frames = sampler.generate([s.prompt for s in batch], [s.seed for s in batch], steps=cfg.steps,
                                  guidance=cfg.guidance, num_frames=CLIP_FRAMES, width=width,
                                  height=height)  # uint8 (B, 16, H, W, 3)
        for sample, clip in zip(batch, frames):
            path = video_path(output, sample.index)
            tmp = path.with_name(f".{path.stem}.tmp.mp4")
            write_video(clip, str(tmp))
            tmp.replace(path)
    return len(todo)


def progress_batches(items, size: int, progress):
    """`batches(items, size)`, advancing `progress` by each batch's length once the caller is done with it."""
    with progress:
        for batch in batches(items, size):
            yield batch
            progress.update(len(batch))


# ------------------------------------------------------------------------------------------ clip sources

def read_clip_file(path: Path) -> np.ndarray:
    """The central 16 frames of an MP4 file (all of a 16-frame sample), uint8 (16, H, W, 3)."""
    video = VideoBytes(path.read_bytes())
    try:
        return video.decode(central_indices(video.num_frames, CLIP_FRAMES))
    except SkipSample as exc:
        raise type(exc)(f"{path}: {exc}") from exc
    finally:
        video.close()


def iter_source(source: str) -> Iterator[Clip]:
    """Clips to score, in a fixed order: a REPORT_DIR (its manifest's order), a folder of MP4s (sorted by
    name), or shards (shard order, through `model.data.iter_clips`)."""
    path = Path(source)
    if path.is_dir() and (path / MANIFEST).is_file():
        for line in (path / MANIFEST).read_text().splitlines():
            sample = Sample(**json.loads(line))
            yield Clip(f"{sample.index:06d}", sample.prompt, read_clip_file(video_path(path, sample.index)))
    elif path.is_dir() and any(path.glob("[!.]*.mp4")):
        for mp4 in sorted(path.glob("[!.]*.mp4")):  # not the temporary files of an interrupted writer
            txt = mp4.with_suffix(".txt")
            caption = txt.read_text(encoding="utf-8").strip() if txt.is_file() else None
            yield Clip(mp4.stem, caption or None, read_clip_file(mp4))
    else:
        pattern = str(path / "*.tar") if path.is_dir() else source
        yield from iter_clips(pattern, num_frames=CLIP_FRAMES, split=False)


# --------------------------------------------------------------------------------------------- scoring

def score(cfg: EvalConfig, source: str, device: str) -> tuple[list[dict], list[np.ndarray]]:
    """FVD and/or CLIPSIM of the first `num_samples` clips of `source`; returns the metric records and the
    clips of the grid. Real clips under 16 frames are left out of FVD's reference statistics (appendix D.3
    selects "sequences that consist of at least 16 frames") and counted in its record."""
    detector = I3DDetector(cfg.i3d, device) if "fvd" in cfg.metrics else None
    scorer = ClipScorer(cfg.clip, device, cfg.clip_crop) if "clipsim" in cfg.metrics else None
    generated = FeatureStats(KINETICS_CLASSES)
    sim_sum, sim_frames, sim_samples, uncaptioned = 0.0, 0, 0, 0
    grid: list[np.ndarray] = []
    progress = tqdm(total=cfg.num_samples, desc=f"eval: score {Path(source).name}", unit="clip", dynamic_ncols=True,
                    disable=not sys.stderr.isatty())
    for batch in progress_batches(itertools.islice(iter_source(source), cfg.num_samples), cfg.score_batch, progress):
        grid += [c.frames for c in batch][:GRID_CLIPS - len(grid)]
        if detector is not None:
            generated.add(i3d_features(detector, [c.frames for c in batch], cfg.resize))
        if scorer is not None:
            captioned = [c for c in batch if c.caption]
            uncaptioned += len(batch) - len(captioned)
            if captioned:
                sims = scorer.frame_similarities([c.frames for c in captioned], [c.caption for c in captioned])
                sim_sum += float(sum(s.sum() for s in sims))
                sim_frames += sum(len(s) for s in sims)
                sim_samples += len(captioned)
    if not grid:
        raise ValueError(f"no clips to score in {source}")
    records = []
    if detector is not None:
        shards = expand_shards(str(Path(cfg.real) / "*.tar") if Path(cfg.real).is_dir() else cfg.real)
        detector_sha = sha256_of(cfg.i3d)
        short: list[str] = []
        real_clips = iter_clips(shards, CLIP_FRAMES, split=False, short_clips=short)
        real, provenance = real_stats(shards, (c.frames for c in real_clips), detector, detector_sha, cfg.resize,
                                      cfg.real_count or cfg.num_samples, Path(cfg.stats_cache), cfg.score_batch,
                                      short_clips=short)
        records.append({
            "metric": "FVD", "value": generated.distance(real),
            "generated_clips": generated.count, "real_clips": real.count,
            "real_short_clips_left_out": provenance["short_clips_left_out"],
            "frames": f"central {CLIP_FRAMES} of every clip (all of a {CLIP_FRAMES}-frame sample), both sides",
            "resize": cfg.resize, "detector": {"path": cfg.i3d, "kind": detector.kind, "sha256": detector_sha},
            "real_shards": shards, "real_stats": {"cache": provenance["cache"], "cached": provenance["cached"]},
        })
    if scorer is not None:
        clip_path = Path(cfg.clip)
        records.append({
            "metric": "CLIPSIM", "value": sim_sum / sim_frames if sim_frames else None,
            "samples": sim_samples, "frames": sim_frames, "uncaptioned_skipped": uncaptioned,
            "scale": "mean cosine similarity, 0-1 (not x100, not clipped)", "crop": cfg.clip_crop,
            "clip": {"name_or_path": cfg.clip, "sha256": sha256_of(clip_path) if clip_path.exists() else None},
        })
    return records, grid


# ------------------------------------------------------------------------------------------ the command

def default_device(rank: int) -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', rank)) % torch.cuda.device_count()}"
    return "cpu"


def evaluate(cfg: EvalConfig) -> dict | None:
    """Run one evaluation; returns the report (None on a rank other than 0, which only generates)."""
    output = Path(cfg.output)
    device = cfg.device or default_device(cfg.rank)
    if cfg.checkpoint is not None:
        prompts, per_prompt = load_prompts(cfg.prompts, cfg.annotations)
        if cfg.num_samples is None:
            cfg = cfg.model_copy(update={"num_samples": protocol_size(cfg.prompts, prompts, per_prompt, FVD_CLIPS)})
    elif cfg.num_samples is None:
        cfg = cfg.model_copy(update={"num_samples": FVD_CLIPS})
    report: dict = {"num_samples": cfg.num_samples}
    if cfg.checkpoint is not None:
        samples = build_samples(prompts, per_prompt, cfg.num_samples, cfg.seed)
        write_manifest(output, samples)
        written = generate(cfg, samples, device)
        print(f"hdvg eval: rank {cfg.rank} of {cfg.world_size} generated {written} of {len(samples)} samples "
              f"(the others were written before or are other ranks' share)")
        barrier(cfg)
        if cfg.rank != 0:
            return None
        missing = [s.index for s in samples if not video_path(output, s.index).is_file()]
        if missing:
            raise RuntimeError(f"{len(missing)} samples are not generated yet (first {missing[0]:06d}): "
                               f"the other ranks have not finished; rerun rank 0 when they have")
        protocol = len(prompts) * per_prompt
        report.update(prompts=cfg.prompts, annotations=cfg.annotations, protocol_samples=protocol,
                      complete_protocol=cfg.num_samples >= protocol,
                      checkpoint=checkpoint_record(cfg.checkpoint),
                      generation={"steps": cfg.steps, "guidance": cfg.guidance, "seed": cfg.seed,
                                  "sampler": "DDIM"})
        source = str(output)
    else:
        report.update(videos=cfg.videos)
        source = cfg.videos
    records, grid = score(cfg, source, device)
    report["metrics"] = records
    save_grid(grid, output / GRID)
    report["grid"] = GRID
    write_json(output / REPORT, report)
    for record in records:
        value = "n/a" if record["value"] is None else f"{record['value']:.4f}"
        count = record.get("generated_clips", record.get("samples"))
        print(f"hdvg eval: {record['metric']} = {value} over {count} samples -> {output / REPORT}")
    return report


def checkpoint_record(run_dir: str) -> dict:
    """The run and the hashes of what the sampler loaded: its config, its newest checkpoint and the frozen
    components (VAE, text encoder) the config names, when they are a local folder."""
    import yaml

    from model.checkpoint import latest_checkpoint
    from model.sample import TRAIN_CONFIG, is_exported

    if is_exported(run_dir):  # `hdvg export`: the U-Net's safetensors and the run's config beside it
        checkpoint, config = Path(run_dir) / "unet" / "diffusion_pytorch_model.safetensors", Path(run_dir) / TRAIN_CONFIG
    else:
        checkpoint, config = latest_checkpoint(run_dir), Path(run_dir) / "config.yaml"
    components = str(yaml.safe_load(config.read_text()).get("components", ""))
    return {"run": run_dir, "file": str(checkpoint), "sha256": sha256_of(checkpoint),
            "config_sha256": sha256_of(config), "components": components,
            "components_sha256": sha256_of(components) if components and Path(components).is_dir() else None}


def barrier(cfg: EvalConfig) -> None:
    """Under torchrun, every rank waits until all have generated."""
    if cfg.world_size > 1 and "MASTER_ADDR" in os.environ:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", rank=cfg.rank, world_size=cfg.world_size)
        dist.barrier()
