"""The video diffusion trainer's typed configuration: pydantic sections whose defaults are the paper's
(VideoFactory appendix D.1-D.2), the `paper` and `tiny` presets, YAML files (`base: paper|tiny` plus
overrides; the three training stages ship as model/configs/stage{1,2,3}.yaml) and `section.field=value`
overrides from the command line. Built on pydantic like the curation config (hdvg.config): every value is
checked at start-up and a bad one raises hdvg's `ConfigError` naming the field (`hdvg train` exits 2)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from hdvg.config import ConfigError, _format_errors
from model.config import UNetConfig

CONFIGS_DIR = Path(__file__).parent / "configs"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    # Shard sets (patterns for model.data.expand_shards; `$VARS` expanded) and their mixing weights.
    shards: list[str] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    # Read-time filter per shard set: a DuckDB predicate over the set's OUT index and score tables (`hdvg
    # filter`, docs/scores.md), "" for none; one for every set, or none at all. Only the selected clips are
    # streamed; the others are skipped unread by the decoder and counted as `where`.
    where: list[str] = Field(default_factory=list)
    # 16 frames per clip at 344x192 (Sec. 5.1 / appendix D.1: 43x24 latents of an f=8 VAE).
    num_frames: int = Field(16, ge=1)
    width: int = Field(344, ge=8, multiple_of=8)  # multiples of the VAE's factor 8
    height: int = Field(192, ge=8, multiple_of=8)
    # Frames between two sampled frames; the paper does not state it. 2 keeps ~1 s of a 30 fps clip in 16
    # frames, so motion is visible while HD-VG's short clips (avg 5.7 s) still fit.
    frame_stride: int = Field(2, ge=1)
    # Uncaptioned clips: "skip" (counted) or "empty" (trained as unconditional samples, as CFG dropout does).
    uncaptioned: Literal["skip", "empty"] = "skip"
    # Raw samples held per loader worker for shuffling (~1.3 MB each for 720p clips).
    shuffle_buffer: int = Field(100, ge=1)
    # Loader processes per GPU (bench/bench_loader.py measures how many one GPU needs).
    num_workers: int = Field(4, ge=0)
    # Resume: "exact" fast-forwards every worker's stream to its saved position (reads the skipped tar
    # members again, decodes none); "reseed" starts fresh streams (seed + step): no re-reading at scale.
    resume: Literal["exact", "reseed"] = "exact"
    # The shards hold precomputed latents (`hdvg encode-latents`): no VAE encoding in the trainer.
    latents: bool = False

    @field_validator("weights")
    @classmethod
    def _one_positive_weight_per_set(cls, weights: list[float], info: ValidationInfo) -> list[float]:
        if any(w <= 0 for w in weights):
            raise ValueError("must be > 0")
        shards = info.data.get("shards", [])
        if weights and len(weights) != len(shards):
            raise ValueError(f"needs one weight per shard set ({len(shards)})")
        return weights

    @field_validator("where")
    @classmethod
    def _one_predicate_per_set(cls, where: list[str], info: ValidationInfo) -> list[str]:
        shards = info.data.get("shards", [])
        if where and len(where) != len(shards):
            raise ValueError(f"needs one predicate per shard set ({len(shards)}), \"\" for none")
        return where


class DiffusionConfig(_Section):
    # DDPM with 1000 steps (D.1).
    num_train_timesteps: int = Field(1000, ge=1)
    beta_start: float = Field(0.00085, gt=0)
    beta_end: float = Field(0.0120, gt=0)
    # D.1 says "linear", D.2 "scaled linear". Scaled linear (linear in sqrt(beta)) is what these betas mean
    # in LDM / Stable Diffusion / ModelScope, whose weights the paper starts from: a different schedule would
    # change the noise levels the pretrained U-Net was trained on.
    beta_schedule: Literal["linear", "scaled_linear"] = "scaled_linear"
    # Epsilon prediction (D.1); "v_prediction" as an option.
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"
    # Classifier-free guidance: the caption is dropped to the empty text with probability 0.2 (D.1).
    p_uncond: float = Field(0.2, ge=0, le=1)


class OptimConfig(_Section):
    # AdamW, lr 1e-5, betas (0.9, 0.9), weight decay 0.3 (D.1).
    lr: float = Field(1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = Field(0.3, ge=0)
    # diffusers.optimization.get_scheduler name; the paper states a constant rate.
    lr_schedule: str = "constant"
    warmup_steps: int = Field(0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    # Batch 128 = 4 per GPU x 32 GPUs (D.1); fewer GPUs accumulate gradients to keep 128.
    batch_size: int = Field(128, ge=1)
    batch_per_gpu: int = Field(4, ge=1)
    # EMA of the U-Net weights, the weights the sampler uses (LDM's 0.9999).
    ema_decay: float = Field(0.9999, ge=0, lt=1)
    # A non-finite loss or gradient skips the optimiser step; this many in a row stop the run (not in the
    # paper: a run that keeps producing NaN has diverged, and more skipped steps only burn GPU hours).
    max_bad_steps: int = Field(10, ge=1)


class TrainConfig(_Section):
    unet: dict[str, Any] = Field(default_factory=lambda: UNetConfig.paper().to_dict())
    # diffusers pipeline folder or hub id with vae/, text_encoder/, tokenizer/: ModelScope's text-to-video
    # release, the paper's start (Sec. 4.3; OpenCLIP ViT-H/14 text states of width 1024).
    components: str = "damo-vilab/text-to-video-ms-1.7b"
    # U-Net start (model.train.load_start): a previous stage's RUN, a diffusers U-Net folder / hub pipeline
    # id (ModelScope's, as the paper starts, Sec. 4.3), or none (random init).
    pretrained: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    # Optimiser steps (stage 1 of the paper: 18k, D.1).
    steps: int = Field(18000, ge=1)
    gradient_checkpointing: bool = True
    # bf16 autocast on GPU ("no" for full fp32); always fp32 on CPU.
    mixed_precision: Literal["bf16", "no"] = "bf16"
    seed: int = 0
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    # Metrics: TensorBoard event files in RUN/tb/, "wandb" (imported only then) or "none".
    report_to: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    # Previews (not in the paper): every sample_every steps (0: never) the EMA model samples these prompts with
    # sample_steps DDIM steps at the training frame size, into RUN/samples/step_N/ and the metrics.
    sample_every: int = Field(1000, ge=0)
    sample_steps: int = Field(50, ge=1)  # the sampler's 50 DDIM steps (D.2)
    sample_prompts: list[str] = Field(default_factory=lambda: [
        "a dog running on a beach", "a timelapse of clouds over a city skyline", "a person playing the guitar",
        "waves crashing against rocks at sunset"])

    @field_validator("unet")
    @classmethod
    def _unet_fields(cls, unet: dict[str, Any]) -> dict[str, Any]:
        return UNetConfig.from_dict(unet).to_dict()  # a ValueError names an unknown or bad UNetConfig field

    @model_validator(mode="after")
    def _prompts_when_sampling(self) -> "TrainConfig":
        if self.sample_every and not self.sample_prompts:
            raise ValueError("sample_prompts: needs at least one prompt when sample_every > 0")
        return self

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimiser step so that batch_per_gpu x world_size x it = batch_size."""
        return self.optim.batch_size // (self.optim.batch_per_gpu * world_size)

    def validate(self, world_size: int = 1) -> "TrainConfig":
        """The checks that depend on the number of processes (the rest ran when the config was built)."""
        o = self.optim
        if o.batch_size % (o.batch_per_gpu * world_size):
            raise ConfigError(f"invalid configuration:\n  optim.batch_size: must be a multiple of batch_per_gpu x "
                              f"GPUs = {o.batch_per_gpu} x {world_size} (got {o.batch_size})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


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


def merge_sections(tree: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`values` laid over `tree`, section by section (a file or an override sets some fields of a section)."""
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge_sections(tree[key], value)
        else:
            tree[key] = value
    return tree


def _build(tree: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def parse_override(text: str) -> dict[str, Any]:
    """`optim.lr=2e-5` -> {"optim": {"lr": 2e-5}} (the value read as YAML)."""
    if "=" not in text:
        raise ConfigError(f"invalid configuration:\n  --set {text!r}: expected section.field=value")
    path, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for part in reversed(path.strip().split(".")):
        value = {part: value}
    return value


def load_config(name_or_file: str, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name (`paper`, `tiny`), a shipped stage (`stage1`), or a YAML file of `base:` + overrides."""
    if name_or_file in PRESETS:
        tree = PRESETS[name_or_file]().to_dict()
    else:
        path = Path(name_or_file)
        if not path.exists() and (CONFIGS_DIR / f"{name_or_file}.yaml").exists():
            path = CONFIGS_DIR / f"{name_or_file}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"no preset or config file {name_or_file!r} (presets: {sorted(PRESETS)})")
        values = yaml.safe_load(path.read_text()) or {}
        base = values.pop("base", "paper")
        if base not in PRESETS:
            raise ConfigError(f"invalid configuration:\n  {path}: base must be one of {sorted(PRESETS)}, "
                              f"not {base!r}")
        tree = merge_sections(PRESETS[base]().to_dict(), values)
    for text in overrides or []:
        merge_sections(tree, parse_override(text))
    cfg = _build(tree)
    cfg.data.shards = [os.path.expandvars(s) for s in cfg.data.shards]
    if cfg.pretrained:
        cfg.pretrained = os.path.expandvars(cfg.pretrained)
    return cfg


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """The inverse of `TrainConfig.to_dict` (a RUN's saved config)."""
    return _build(merge_sections(TrainConfig().to_dict(), values))
