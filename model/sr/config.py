"""Typed configuration of the x4 super-resolution model: RCAN sizes, Real-ESRGAN degradation ranges, training.

Two shipped configs: `paper` (VideoFactory Sec. 4 "Super-Resolution Towards Higher Quality" and Sec. 5.1: RCAN,
vanilla GAN, Real-ESRGAN's high-order degradations; where the paper gives no number, the numbers of RCAN and of
Real-ESRGAN's `options/train_realesrnet_x4plus.yml` / `train_realesrgan_x4plus.yml`) and `tiny` (trains on a CPU in
seconds). A config is built from one of them or a YAML/JSON file, then `--set section.field=value` overrides.
Built on pydantic like the curation and training configs: every value is checked at start-up and a bad one
raises hdvg's `ConfigError` naming the field (`degrade.second.jpeg_range: ...`; `hdvg train-sr` exits 2).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hdvg.config import ConfigError, _format_errors
from model.train_config import merge_sections, parse_override

# The model is x4 (two x2 pixel shuffles; VideoFactory Sec. 4: 344x192 -> 1376x768), so the degradation
# shrinks by 4: a constant, not a field that could be set to anything else.
SCALE = 4
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")
KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=True)


def _ordered(pair: tuple[float, float], lo: float = 0.0, contains_one: bool = False) -> tuple[float, float]:
    if not lo <= pair[0] <= pair[1]:
        raise ValueError(f"expected {lo} <= low <= high")
    if contains_one and not pair[0] <= 1 <= pair[1]:
        raise ValueError("must contain 1")
    return pair


class RCANConfig(_Section):
    """RCAN (Zhang et al. 2018): residual groups of residual channel-attention blocks (RCABs).

    VideoFactory says "RCAN with 8 residual blocks". RCAN's own paper names its two levels "residual group" and
    "residual channel attention block", so "8 residual blocks" is read as 8 RCABs per group, with RCAN's 10
    groups kept: 80 RCABs, 6.66 M parameters. The other reading (8 groups of RCAN's 20 RCABs, 160 RCABs, 12.5 M)
    is `num_groups=8, blocks_per_group=20`. The chosen reading is also the cheaper one for upscaling every frame
    of every generated video."""

    num_groups: int = Field(10, ge=1)        # RCAN paper Sec. 4.1: 10 residual groups
    blocks_per_group: int = Field(8, ge=1)   # VideoFactory Sec. 5.1 "8 residual blocks" (RCAN itself: 20)
    num_features: int = Field(64, ge=1)      # RCAN paper Sec. 4.1: 64 filters
    squeeze: int = Field(16, ge=1)           # RCAN paper Sec. 4.1: channel-attention reduction ratio 16
    img_range: float = Field(255.0, gt=0)    # RCAN works on the 0-255 scale (its MeanShift with rgb_range 255)
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # RCAN's DIV2K mean, subtracted by MeanShift

    @field_validator("squeeze")
    @classmethod
    def _divides_the_features(cls, squeeze: int, info) -> int:
        features = info.data.get("num_features")
        if features is not None and features % squeeze:
            raise ValueError(f"must divide num_features ({features})")
        return squeeze


class DegradeOrder(_Section):
    """One order of Real-ESRGAN's degradation: blur -> random resize -> noise -> JPEG."""

    blur_prob: float = Field(1.0, ge=0, le=1)                # x4plus: the first order always blurs
    kernel_sizes: tuple[int, ...] = tuple(range(7, 22, 2))   # x4plus: odd sizes 7..21
    kernel_types: tuple[KernelType, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # x4plus kernel_prob
    sinc_prob: float = Field(0.1, ge=0, le=1)                # x4plus sinc_prob
    blur_sigma: tuple[float, float] = (0.2, 3.0)             # x4plus blur_sigma
    betag_range: tuple[float, float] = (0.5, 4.0)            # x4plus betag_range (generalised Gaussian)
    betap_range: tuple[float, float] = (1.0, 2.0)            # x4plus betap_range (plateau)
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # x4plus resize_prob: up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)          # x4plus resize_range
    gaussian_noise_prob: float = Field(0.5, ge=0, le=1)      # x4plus gaussian_noise_prob (else Poisson)
    noise_range: tuple[float, float] = (1.0, 30.0)           # x4plus noise_range (sigma on the 0-255 scale)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)   # x4plus poisson_scale_range
    gray_noise_prob: float = Field(0.4, ge=0, le=1)          # x4plus gray_noise_prob
    jpeg_range: tuple[float, float] = (30.0, 95.0)           # x4plus jpeg_range

    @field_validator("kernel_sizes")
    @classmethod
    def _odd_sizes(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if not sizes or any(k % 2 == 0 or k < 3 for k in sizes):
            raise ValueError("odd sizes >= 3")
        return sizes

    @field_validator("kernel_probs")
    @classmethod
    def _one_weight_per_type(cls, probs: tuple[float, ...], info) -> tuple[float, ...]:
        types = info.data.get("kernel_types", ())
        if len(probs) != len(types) or any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError(f"one non-negative weight per kernel type ({len(types)})")
        return probs

    @field_validator("resize_probs")
    @classmethod
    def _resize_weights(cls, probs: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(p < 0 for p in probs) or sum(probs) <= 0:
            raise ValueError("three non-negative weights (up, down, keep)")
        return probs

    @field_validator("blur_sigma")
    @classmethod
    def _sigma(cls, pair: tuple[float, float]) -> tuple[float, float]:
        return _ordered(pair, lo=1e-3)

    @field_validator("betag_range", "betap_range", "resize_range")
    @classmethod
    def _around_one(cls, pair: tuple[float, float]) -> tuple[float, float]:
        return _ordered(pair, lo=1e-3, contains_one=True)

    @field_validator("noise_range", "poisson_scale_range")
    @classmethod
    def _non_negative(cls, pair: tuple[float, float]) -> tuple[float, float]:
        return _ordered(pair)

    @field_validator("jpeg_range")
    @classmethod
    def _qualities(cls, pair: tuple[float, float]) -> tuple[float, float]:
        if not 1 <= pair[0] <= pair[1] <= 100:
            raise ValueError("qualities 1 <= low <= high <= 100")
        return pair


def _second_order() -> DegradeOrder:
    return DegradeOrder(blur_prob=0.8,                       # x4plus second_blur_prob
                        blur_sigma=(0.2, 1.5),               # x4plus blur_sigma2
                        resize_probs=(0.3, 0.4, 0.3),        # x4plus resize_prob2
                        resize_range=(0.3, 1.2),             # x4plus resize_range2
                        noise_range=(1.0, 25.0),             # x4plus noise_range2
                        poisson_scale_range=(0.05, 2.5))     # x4plus poisson_scale_range2


class DegradeConfig(_Section):
    """Real-ESRGAN's second-order degradation (its x4plus defaults; VideoFactory Sec. 4 uses it so that SR also
    removes the artefacts of diffusion and of the autoencoder)."""

    first: DegradeOrder = Field(default_factory=DegradeOrder)
    second: DegradeOrder = Field(default_factory=_second_order)
    final_sinc_prob: float = Field(0.8, ge=0, le=1)  # x4plus final_sinc_prob: the last resize is followed by a sinc
    max_kernel_size: int = 21        # x4plus blur_kernel_size: every kernel is zero-padded to this size

    @field_validator("max_kernel_size")
    @classmethod
    def _holds_every_kernel(cls, size: int, info) -> int:
        largest = max((max(order.kernel_sizes) for name in ("first", "second")
                       if (order := info.data.get(name)) is not None), default=3)
        if size % 2 == 0 or size < largest:
            raise ValueError(f"an odd size, at least the largest of first/second.kernel_sizes ({largest})")
        return size


class DataConfig(_Section):
    """HR patches cut from decoded clip frames."""

    # x4plus gt_size; the discriminator halves the patch three times and the LR patch is patch / 4
    patch_size: int = Field(256, ge=32, multiple_of=8)
    frames_per_clip: int = Field(4, ge=1)  # random frames decoded per clip (a clip's frames are near-duplicates)
    hflip: bool = True               # x4plus use_hflip
    workers: int = Field(4, ge=0)
    shuffle: int = Field(64, ge=0)   # shuffle buffer of frames


class LossConfig(_Section):
    """Losses of the GAN stage (x4plus); the L1 stage uses `l1` only."""

    l1: float = Field(1.0, ge=0, allow_inf_nan=False)   # x4plus pixel_opt loss_weight
    perceptual: float = Field(1.0, ge=0, allow_inf_nan=False)  # x4plus perceptual_weight (VGG19, before ReLU)
    gan: float = Field(0.1, ge=0, allow_inf_nan=False)  # x4plus gan_opt loss_weight, vanilla GAN
    vgg_path: str | None = None      # local VGG19 state dict (torchvision layout); none -> perceptual loss off
    disc_features: int = Field(64, ge=1)  # x4plus network_d: UNetDiscriminatorSN num_feat 64


class TrainConfig(_Section):
    """Optimisation: an L1-only stage, then the GAN stage (Real-ESRNet then Real-ESRGAN)."""

    l1_steps: int = Field(1_000_000, ge=0)   # train_realesrnet_x4plus total_iter
    gan_steps: int = Field(400_000, ge=0)    # train_realesrgan_x4plus total_iter
    batch_size: int = Field(48, ge=1)        # x4plus: 12 per GPU x 4 GPUs
    lr_l1: float = Field(2e-4, gt=0)         # train_realesrnet_x4plus optim_g lr
    lr_gan: float = Field(1e-4, gt=0)        # train_realesrgan_x4plus optim_g / optim_d lr
    betas: tuple[float, float] = (0.9, 0.99)  # x4plus Adam betas
    ema_decay: float = Field(0.999, ge=0, lt=1)  # x4plus ema_decay
    seed: int = 0                            # x4plus manual_seed
    log_every: int = Field(100, ge=1)        # x4plus print_freq
    checkpoint_every: int = Field(5000, ge=1)  # x4plus save_checkpoint_freq

    @field_validator("betas")
    @classmethod
    def _betas(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("two values in [0, 1)")
        return betas


class SRConfig(_Section):
    rcan: RCANConfig = Field(default_factory=RCANConfig)
    degrade: DegradeConfig = Field(default_factory=DegradeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def paper() -> SRConfig:
    return SRConfig()


def tiny() -> SRConfig:
    """A few-thousand-parameter RCAN and discriminator, 64-pixel patches: trains on a CPU in seconds."""
    return SRConfig(rcan=RCANConfig(num_groups=2, blocks_per_group=2, num_features=16, squeeze=4),
                    data=DataConfig(patch_size=64, frames_per_clip=4, workers=0, shuffle=16),
                    loss=LossConfig(disc_features=8),
                    train=TrainConfig(l1_steps=20, gan_steps=10, batch_size=4, lr_l1=1e-3, lr_gan=1e-4,
                                      log_every=5, checkpoint_every=10))


PRESETS = {"paper": paper, "tiny": tiny}


def from_dict(values: dict[str, Any]) -> SRConfig:
    """A config from nested sections (a file, or the `config.json` saved beside a run); hdvg's ConfigError
    names every bad field."""
    try:
        return SRConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(name_or_path: str, overrides: list[str] | None = None) -> SRConfig:
    """`paper`, `tiny` or a YAML/JSON file (sections as `SRConfig`, missing fields from `paper`), then the
    `section.field=value` overrides (values read as YAML)."""
    if name_or_path in PRESETS:
        tree = PRESETS[name_or_path]().to_dict()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"invalid configuration:\n  config: neither a preset ({', '.join(PRESETS)}) nor a "
                              f"file: {name_or_path}")
        text = path.read_text()
        loaded = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        tree = merge_sections(paper().to_dict(), loaded or {})
    for item in overrides or []:
        merge_sections(tree, parse_override(item))
    return from_dict(tree)
