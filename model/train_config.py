"""The video diffusion trainer's typed configuration: nested dataclasses whose defaults are the paper's
(VideoFactory appendix D.1-D.2), the `paper` and `tiny` presets, YAML files (`base: paper|tiny` plus
overrides; the three training stages ship as model/configs/stage{1,2,3}.yaml) and `section.field=value`
overrides from the command line. Every value is checked at start-up and an error names the field."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from model.config import UNetConfig

CONFIGS_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    # Shard sets (patterns for model.data.expand_shards; `$VARS` expanded) and their mixing weights.
    shards: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    # 16 frames per clip at 344x192 (Sec. 5.1 / appendix D.1: 43x24 latents of an f=8 VAE).
    num_frames: int = 16
    width: int = 344
    height: int = 192
    # Frames between two sampled frames; the paper does not state it. 2 keeps ~1 s of a 30 fps clip in 16
    # frames, so motion is visible while HD-VG's short clips (avg 5.7 s) still fit.
    frame_stride: int = 2
    # Uncaptioned clips: "skip" (counted) or "empty" (trained as unconditional samples, as CFG dropout does).
    uncaptioned: str = "skip"
    # Raw samples held per loader worker for shuffling (~1.3 MB each for 720p clips).
    shuffle_buffer: int = 100
    # Loader processes per GPU (bench/bench_loader.py measures how many one GPU needs).
    num_workers: int = 4
    # Resume: "exact" fast-forwards every worker's stream to its saved position (reads the skipped tar
    # members again, decodes none); "reseed" starts fresh streams (seed + step): no re-reading at scale.
    resume: str = "exact"
    # The shards hold precomputed latents (`hdvg encode-latents`): no VAE encoding in the trainer.
    latents: bool = False


@dataclass
class DiffusionConfig:
    # DDPM with 1000 steps (D.1).
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.0120
    # D.1 says "linear", D.2 "scaled linear". Scaled linear (linear in sqrt(beta)) is what these betas mean
    # in LDM / Stable Diffusion / ModelScope, whose weights the paper starts from: a different schedule would
    # change the noise levels the pretrained U-Net was trained on.
    beta_schedule: str = "scaled_linear"
    # Epsilon prediction (D.1); "v_prediction" as an option.
    prediction_type: str = "epsilon"
    # Classifier-free guidance: the caption is dropped to the empty text with probability 0.2 (D.1).
    p_uncond: float = 0.2


@dataclass
class OptimConfig:
    # AdamW, lr 1e-5, betas (0.9, 0.9), weight decay 0.3 (D.1).
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.3
    # diffusers.optimization.get_scheduler name; the paper states a constant rate.
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    # Batch 128 = 4 per GPU x 32 GPUs (D.1); fewer GPUs accumulate gradients to keep 128.
    batch_size: int = 128
    batch_per_gpu: int = 4
    # EMA of the U-Net weights, the weights the sampler uses (LDM's 0.9999).
    ema_decay: float = 0.9999
    # A non-finite loss or gradient skips the optimiser step; this many in a row stop the run (not in the
    # paper: a run that keeps producing NaN has diverged, and more skipped steps only burn GPU hours).
    max_bad_steps: int = 10


@dataclass
class TrainConfig:
    unet: dict[str, Any] = field(default_factory=lambda: UNetConfig.paper().to_dict())
    # diffusers pipeline folder or hub id with vae/, text_encoder/, tokenizer/: ModelScope's text-to-video
    # release, the paper's start (Sec. 4.3; OpenCLIP ViT-H/14 text states of width 1024).
    components: str = "damo-vilab/text-to-video-ms-1.7b"
    # U-Net start (model.train.load_start): a previous stage's RUN, a diffusers U-Net folder / hub pipeline
    # id (ModelScope's, as the paper starts, Sec. 4.3), or none (random init).
    pretrained: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    # Optimiser steps (stage 1 of the paper: 18k, D.1).
    steps: int = 18000
    gradient_checkpointing: bool = True
    # bf16 autocast on GPU ("no" for full fp32); always fp32 on CPU.
    mixed_precision: str = "bf16"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    # Metrics: TensorBoard event files in RUN/tb/, "wandb" (imported only then) or "none".
    report_to: str = "tensorboard"
    # Previews (not in the paper): every sample_every steps (0: never) the EMA model samples these prompts with
    # sample_steps DDIM steps at the training frame size, into RUN/samples/step_N/ and the metrics.
    sample_every: int = 1000
    sample_steps: int = 50  # the sampler's 50 DDIM steps (D.2)
    sample_prompts: list[str] = field(default_factory=lambda: [
        "a dog running on a beach", "a timelapse of clouds over a city skyline", "a person playing the guitar",
        "waves crashing against rocks at sunset"])

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step so that batch_per_gpu x world_size x it = batch_size."""
        return self.optim.batch_size // (self.optim.batch_per_gpu * world_size)

    def validate(self, world_size: int = 1) -> "TrainConfig":
        def bad(name: str, value: Any, why: str) -> ValueError:
            return ValueError(f"train config {name}={value!r}: {why}")

        UNetConfig.from_dict(self.unet)
        d, df, o = self.data, self.diffusion, self.optim
        if d.weights and len(d.weights) != len(d.shards):
            raise bad("data.weights", d.weights, f"needs one weight per shard set ({len(d.shards)})")
        if any(w <= 0 for w in d.weights):
            raise bad("data.weights", d.weights, "must be > 0")
        for name in ("num_frames", "width", "height", "frame_stride", "shuffle_buffer"):
            if getattr(d, name) < 1:
                raise bad(f"data.{name}", getattr(d, name), "must be >= 1")
        if d.width % 8 or d.height % 8:
            raise bad("data.width/height", (d.width, d.height), "must be multiples of 8 (the VAE's factor)")
        if d.uncaptioned not in ("skip", "empty"):
            raise bad("data.uncaptioned", d.uncaptioned, "must be 'skip' or 'empty'")
        if d.resume not in ("exact", "reseed"):
            raise bad("data.resume", d.resume, "must be 'exact' or 'reseed'")
        if d.num_workers < 0:
            raise bad("data.num_workers", d.num_workers, "must be >= 0")
        if df.beta_schedule not in ("linear", "scaled_linear"):
            raise bad("diffusion.beta_schedule", df.beta_schedule, "must be 'linear' or 'scaled_linear'")
        if df.prediction_type not in ("epsilon", "v_prediction"):
            raise bad("diffusion.prediction_type", df.prediction_type, "must be 'epsilon' or 'v_prediction'")
        if not 0 <= df.p_uncond <= 1:
            raise bad("diffusion.p_uncond", df.p_uncond, "must be in [0, 1]")
        if o.lr <= 0:
            raise bad("optim.lr", o.lr, "must be > 0")
        if o.max_bad_steps < 1:
            raise bad("optim.max_bad_steps", o.max_bad_steps, "must be >= 1")
        if o.batch_size % (o.batch_per_gpu * world_size):
            raise bad("optim.batch_size", o.batch_size,
                      f"must be a multiple of batch_per_gpu x GPUs = {o.batch_per_gpu} x {world_size}")
        if self.mixed_precision not in ("bf16", "no"):
            raise bad("mixed_precision", self.mixed_precision, "must be 'bf16' or 'no'")
        for name in ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_steps"):
            if getattr(self, name) < 1:
                raise bad(name, getattr(self, name), "must be >= 1")
        if self.report_to not in ("tensorboard", "wandb", "none"):
            raise bad("report_to", self.report_to, "must be 'tensorboard', 'wandb' or 'none'")
        if self.sample_every < 0:
            raise bad("sample_every", self.sample_every, "must be >= 0 (0: no previews)")
        if self.sample_every and not self.sample_prompts:
            raise bad("sample_prompts", self.sample_prompts, "needs at least one prompt when sample_every > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paper() -> TrainConfig:
    """The paper's model and optimisation (stage 1 length; the stage files set each stage)."""
    return TrainConfig()


def tiny() -> TrainConfig:
    """Trains on a CPU in seconds: the tiny U-Net, small frames, batch 2, every clip kept."""
    cfg = TrainConfig(unet=UNetConfig.tiny().to_dict(), components="", steps=20, gradient_checkpointing=False,
                      log_every=1, checkpoint_every=10, mixed_precision="no", sample_every=10, sample_steps=2,
                      sample_prompts=["a dog running on a beach", "a city at night"])
    cfg.data = DataConfig(num_frames=4, width=64, height=40, frame_stride=2, shuffle_buffer=8, num_workers=0)
    cfg.optim = OptimConfig(lr=1e-3, batch_size=2, batch_per_gpu=2, ema_decay=0.99)
    return cfg


PRESETS = {"paper": paper, "tiny": tiny}


def _merge(target: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Set dataclass fields from a nested dict; unknown names are an error naming them."""
    names = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"train config: unknown field {prefix}{key} (known: {sorted(names)})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"train config {prefix}{key}: expected a mapping, got {value!r}")
            _merge(current, value, f"{prefix}{key}.")
        elif key == "unet" and isinstance(value, dict):
            setattr(target, key, {**current, **value})
        else:
            setattr(target, key, _coerce(f"{prefix}{key}", current, value))


def _coerce(name: str, current: Any, value: Any) -> Any:
    """`value` as the type of the field's current value (YAML reads 3e-3 as a string, lists for tuples)."""
    try:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise TypeError
        elif isinstance(current, int):
            if isinstance(value, bool) or int(value) != float(value):
                raise TypeError
            value = int(value)
        elif isinstance(current, float):
            value = float(value)
        elif isinstance(current, tuple):
            value = tuple(type(c)(v) for c, v in zip(current, value)) if len(value) == len(current) else None
            if value is None:
                raise TypeError
    except (TypeError, ValueError):
        raise ValueError(f"train config {name}={value!r}: expected {type(current).__name__} like {current!r}") from None
    return value


def parse_override(text: str) -> dict[str, Any]:
    """`optim.lr=2e-5` -> {"optim": {"lr": 2e-5}} (the value read as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must be section.field=value")
    path, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for part in reversed(path.strip().split(".")):
        value = {part: value}
    return value


def load_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name (`paper`, `tiny`), a shipped stage (`stage1`), or a YAML file of `base:` + overrides."""
    if name_or_file in PRESETS:
        cfg = PRESETS[name_or_file]()
    else:
        path = Path(name_or_file)
        if not path.exists() and (CONFIGS_DIR / f"{name_or_file}.yaml").exists():
            path = CONFIGS_DIR / f"{name_or_file}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"no preset or config file {name_or_file!r} (presets: {sorted(PRESETS)})")
        values = yaml.safe_load(path.read_text()) or {}
        base = values.pop("base", "paper")
        if base not in PRESETS:
            raise ValueError(f"{path}: base must be one of {sorted(PRESETS)}, not {base!r}")
        cfg = PRESETS[base]()
        _merge(cfg, values)
    for text in overrides or []:
        _merge(cfg, parse_override(text))
    cfg.data.shards = [os.path.expandvars(s) for s in cfg.data.shards]
    if cfg.pretrained:
        cfg.pretrained = os.path.expandvars(cfg.pretrained)
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """The inverse of `TrainConfig.to_dict` (a RUN's saved config)."""
    cfg = TrainConfig()
    _merge(cfg, values)
    return cfg
