"""Typed configuration of the x4 super-resolution model: RCAN sizes, Real-ESRGAN degradation ranges, training.

Two shipped configs: `paper` (VideoFactory Sec. 4 "Super-Resolution Towards Higher Quality" and Sec. 5.1: RCAN,
vanilla GAN, Real-ESRGAN's high-order degradations; where the paper gives no number, the numbers of RCAN and of
Real-ESRGAN's `options/train_realesrnet_x4plus.yml` / `train_realesrgan_x4plus.yml`) and `tiny` (trains on a CPU in
seconds). A config is built from one of them or a YAML/JSON file, then `--set section.field=value` overrides, and
is validated once; an error names the bad field (`sr: degrade.first.jpeg_range: ...`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdvg.config import ConfigError as UsageError

# The model is x4 (two x2 pixel shuffles; VideoFactory Sec. 4: 344x192 -> 1376x768), so the degradation
# shrinks by 4: a constant, not a field that could be set to anything else.
SCALE = 4
KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


class ConfigError(UsageError):
    """A bad config value; the message starts with the dotted field name (a usage error: hdvg exits 2)."""


@dataclass
class RCANConfig:
    """RCAN (Zhang et al. 2018): residual groups of residual channel-attention blocks (RCABs).

    VideoFactory says "RCAN with 8 residual blocks". RCAN's own paper names its two levels "residual group" and
    "residual channel attention block", so "8 residual blocks" is read as 8 RCABs per group, with RCAN's 10
    groups kept: 80 RCABs, 6.66 M parameters. The other reading (8 groups of RCAN's 20 RCABs, 160 RCABs, 12.5 M)
    is `num_groups=8, blocks_per_group=20`. The chosen reading is also the cheaper one for upscaling every frame
    of every generated video."""

    num_groups: int = 10          # RCAN paper Sec. 4.1: 10 residual groups
    blocks_per_group: int = 8     # VideoFactory Sec. 5.1 "8 residual blocks" (RCAN itself: 20)
    num_features: int = 64        # RCAN paper Sec. 4.1: 64 filters
    squeeze: int = 16             # RCAN paper Sec. 4.1: channel-attention reduction ratio 16
    img_range: float = 255.0      # RCAN works on the 0-255 scale (its MeanShift with rgb_range 255)
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # RCAN's DIV2K mean, subtracted by MeanShift


@dataclass
class DegradeOrder:
    """One order of Real-ESRGAN's degradation: blur -> random resize -> noise -> JPEG."""

    blur_prob: float = 1.0                                   # x4plus: the first order always blurs
    kernel_sizes: tuple[int, ...] = tuple(range(7, 22, 2))   # x4plus: odd sizes 7..21
    kernel_types: tuple[str, ...] = KERNEL_TYPES
    kernel_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)  # x4plus kernel_prob
    sinc_prob: float = 0.1                                   # x4plus sinc_prob
    blur_sigma: tuple[float, float] = (0.2, 3.0)             # x4plus blur_sigma
    betag_range: tuple[float, float] = (0.5, 4.0)            # x4plus betag_range (generalised Gaussian)
    betap_range: tuple[float, float] = (1.0, 2.0)            # x4plus betap_range (plateau)
    resize_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)  # x4plus resize_prob: up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)          # x4plus resize_range
    gaussian_noise_prob: float = 0.5                         # x4plus gaussian_noise_prob (else Poisson)
    noise_range: tuple[float, float] = (1.0, 30.0)           # x4plus noise_range (sigma on the 0-255 scale)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)   # x4plus poisson_scale_range
    gray_noise_prob: float = 0.4                             # x4plus gray_noise_prob
    jpeg_range: tuple[float, float] = (30.0, 95.0)           # x4plus jpeg_range


def _second_order() -> DegradeOrder:
    return DegradeOrder(blur_prob=0.8,                       # x4plus second_blur_prob
                        blur_sigma=(0.2, 1.5),               # x4plus blur_sigma2
                        resize_probs=(0.3, 0.4, 0.3),        # x4plus resize_prob2
                        resize_range=(0.3, 1.2),             # x4plus resize_range2
                        noise_range=(1.0, 25.0),             # x4plus noise_range2
                        poisson_scale_range=(0.05, 2.5))     # x4plus poisson_scale_range2


@dataclass
class DegradeConfig:
    """Real-ESRGAN's second-order degradation (its x4plus defaults; VideoFactory Sec. 4 uses it so that SR also
    removes the artefacts of diffusion and of the autoencoder)."""

    first: DegradeOrder = field(default_factory=DegradeOrder)
    second: DegradeOrder = field(default_factory=_second_order)
    final_sinc_prob: float = 0.8     # x4plus final_sinc_prob: the last resize is followed by a sinc filter
    max_kernel_size: int = 21        # x4plus blur_kernel_size: every kernel is zero-padded to this size


@dataclass
class DataConfig:
    """HR patches cut from decoded clip frames."""

    patch_size: int = 256            # x4plus gt_size
    frames_per_clip: int = 4         # random frames decoded per clip (a clip's frames are near-duplicates)
    hflip: bool = True               # x4plus use_hflip
    workers: int = 4
    shuffle: int = 64                # shuffle buffer of frames


@dataclass
class LossConfig:
    """Losses of the GAN stage (x4plus); the L1 stage uses `l1` only."""

    l1: float = 1.0                  # x4plus pixel_opt loss_weight
    perceptual: float = 1.0          # x4plus perceptual_opt perceptual_weight (VGG19, before-ReLU features)
    gan: float = 0.1                 # x4plus gan_opt loss_weight, vanilla GAN
    vgg_path: str | None = None      # local VGG19 state dict (torchvision layout); none -> perceptual loss off
    disc_features: int = 64          # x4plus network_d: UNetDiscriminatorSN num_feat 64


@dataclass
class TrainConfig:
    """Optimisation: an L1-only stage, then the GAN stage (Real-ESRNet then Real-ESRGAN)."""

    l1_steps: int = 1_000_000        # train_realesrnet_x4plus total_iter
    gan_steps: int = 400_000         # train_realesrgan_x4plus total_iter
    batch_size: int = 48             # x4plus: 12 per GPU x 4 GPUs
    lr_l1: float = 2e-4              # train_realesrnet_x4plus optim_g lr
    lr_gan: float = 1e-4             # train_realesrgan_x4plus optim_g / optim_d lr
    betas: tuple[float, float] = (0.9, 0.99)  # x4plus Adam betas
    ema_decay: float = 0.999         # x4plus ema_decay
    seed: int = 0                    # x4plus manual_seed
    log_every: int = 100             # x4plus print_freq
    checkpoint_every: int = 5000     # x4plus save_checkpoint_freq


@dataclass
class SRConfig:
    rcan: RCANConfig = field(default_factory=RCANConfig)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def paper() -> SRConfig:
    return validate(SRConfig())


def tiny() -> SRConfig:
    """A few-thousand-parameter RCAN and discriminator, 64-pixel patches: trains on a CPU in seconds."""
    cfg = SRConfig(rcan=RCANConfig(num_groups=2, blocks_per_group=2, num_features=16, squeeze=4),
                   data=DataConfig(patch_size=64, frames_per_clip=4, workers=0, shuffle=16),
                   loss=LossConfig(disc_features=8),
                   train=TrainConfig(l1_steps=20, gan_steps=10, batch_size=4, lr_l1=1e-3, lr_gan=1e-4,
                                     log_every=5, checkpoint_every=10))
    return validate(cfg)


PRESETS = {"paper": paper, "tiny": tiny}


# ----------------------------------------------------------------------------------------------------------------
# Building from dicts and files, overrides, validation
# ----------------------------------------------------------------------------------------------------------------

def _coerce(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {value!r}")
        return _build(hint, value, name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        item_hints = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(item_hints) != len(value):
            raise ConfigError(f"{name}: expected {len(item_hints)} values, got {len(value)}")
        return tuple(_coerce(v, h, f"{name}[{i}]") for i, (v, h) in enumerate(zip(value, item_hints)))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], name)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true/false, got {value!r}")
        return value
    if hint in (int, float):
        try:
            number = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
        if hint is int and float(value) != number:
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return number
    if hint is str:
        return str(value)
    return value


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown field (known: {sorted(names)})")
    base = cls()
    kwargs = {}
    for name in names:
        full = f"{prefix}.{name}" if prefix else name
        if name in values:
            current = getattr(base, name)
            value = values[name]
            if dataclasses.is_dataclass(current) and isinstance(value, dict):
                value = {**dataclasses.asdict(current), **value}
            kwargs[name] = _coerce(value, hints[name], full)
    return dataclasses.replace(base, **kwargs)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.field=value")
    key, raw = item.split("=", 1)
    try:
        import yaml
        value = yaml.safe_load(raw)
    except Exception:  # a value YAML cannot read is kept as the raw string
        value = raw
    return key.strip().split("."), value


def load_config(name_or_path: str, overrides: list[str] | None = None) -> SRConfig:
    """`paper`, `tiny` or a YAML/JSON file (sections as `SRConfig`, missing fields from `paper`), then the
    `section.field=value` overrides; validated."""
    if name_or_path in PRESETS:
        values = PRESETS[name_or_path]().to_dict()
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"config: neither a preset ({', '.join(PRESETS)}) nor a file: {name_or_path}")
        text = path.read_text()
        if path.suffix == ".json":
            loaded = json.loads(text)
        else:
            import yaml
            loaded = yaml.safe_load(text)
        values = _merge(paper().to_dict(), loaded or {})
    for item in overrides or []:
        keys, value = _parse_override(item)
        update: dict[str, Any] = {keys[-1]: value}
        for key in reversed(keys[:-1]):
            update = {key: update}
        values = _merge(values, update)
    return validate(_build(SRConfig, values))


def from_dict(values: dict[str, Any]) -> SRConfig:
    """The config saved beside a run (`config.json`)."""
    return validate(_build(SRConfig, values))


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


def _check_range(pair: tuple[float, float], name: str, lo: float = 0.0) -> None:
    _check(lo <= pair[0] <= pair[1], name, f"expected {lo} <= low <= high, got {list(pair)}")


def _check_prob(p: float, name: str) -> None:
    _check(0.0 <= p <= 1.0, name, f"a probability in [0, 1], got {p}")


def _validate_order(order: DegradeOrder, name: str, max_kernel: int) -> None:
    _check_prob(order.blur_prob, f"{name}.blur_prob")
    _check(len(order.kernel_sizes) > 0 and all(k % 2 == 1 and 3 <= k <= max_kernel for k in order.kernel_sizes),
           f"{name}.kernel_sizes", f"odd sizes in [3, max_kernel_size={max_kernel}], got {list(order.kernel_sizes)}")
    bad = [t for t in order.kernel_types if t not in KERNEL_TYPES]
    _check(not bad and len(order.kernel_types) > 0, f"{name}.kernel_types", f"choose from {KERNEL_TYPES}, got {bad}")
    _check(len(order.kernel_probs) == len(order.kernel_types) and all(p >= 0 for p in order.kernel_probs)
           and sum(order.kernel_probs) > 0, f"{name}.kernel_probs",
           f"one non-negative weight per kernel type ({len(order.kernel_types)}), got {list(order.kernel_probs)}")
    _check_prob(order.sinc_prob, f"{name}.sinc_prob")
    _check_range(order.blur_sigma, f"{name}.blur_sigma", lo=1e-3)
    _check_range(order.betag_range, f"{name}.betag_range", lo=1e-3)
    _check(order.betag_range[0] <= 1 <= order.betag_range[1], f"{name}.betag_range", "must contain 1")
    _check_range(order.betap_range, f"{name}.betap_range", lo=1e-3)
    _check(order.betap_range[0] <= 1 <= order.betap_range[1], f"{name}.betap_range", "must contain 1")
    _check(all(p >= 0 for p in order.resize_probs) and sum(order.resize_probs) > 0, f"{name}.resize_probs",
           f"three non-negative weights (up, down, keep), got {list(order.resize_probs)}")
    _check_range(order.resize_range, f"{name}.resize_range", lo=1e-3)
    _check(order.resize_range[0] <= 1 <= order.resize_range[1], f"{name}.resize_range", "must contain 1")
    _check_prob(order.gaussian_noise_prob, f"{name}.gaussian_noise_prob")
    _check_range(order.noise_range, f"{name}.noise_range")
    _check_range(order.poisson_scale_range, f"{name}.poisson_scale_range")
    _check_prob(order.gray_noise_prob, f"{name}.gray_noise_prob")
    _check(1 <= order.jpeg_range[0] <= order.jpeg_range[1] <= 100, f"{name}.jpeg_range",
           f"qualities 1 <= low <= high <= 100, got {list(order.jpeg_range)}")


def validate(cfg: SRConfig) -> SRConfig:
    r = cfg.rcan
    for key in ("num_groups", "blocks_per_group", "num_features", "squeeze"):
        _check(getattr(r, key) >= 1, f"rcan.{key}", f"must be >= 1, got {getattr(r, key)}")
    _check(r.num_features % r.squeeze == 0, "rcan.squeeze",
           f"must divide num_features ({r.num_features}), got {r.squeeze}")
    _check(r.img_range > 0, "rcan.img_range", f"must be > 0, got {r.img_range}")
    d = cfg.degrade
    _check(d.max_kernel_size % 2 == 1 and d.max_kernel_size >= 3, "degrade.max_kernel_size",
           f"an odd size >= 3, got {d.max_kernel_size}")
    _check_prob(d.final_sinc_prob, "degrade.final_sinc_prob")
    _validate_order(d.first, "degrade.first", d.max_kernel_size)
    _validate_order(d.second, "degrade.second", d.max_kernel_size)
    p = cfg.data.patch_size
    # the discriminator halves the patch three times and the LR patch is patch / 4
    _check(p >= 32 and p % 8 == 0, "data.patch_size", f"a multiple of 8, at least 32, got {p}")
    _check(cfg.data.frames_per_clip >= 1, "data.frames_per_clip", f"must be >= 1, got {cfg.data.frames_per_clip}")
    _check(cfg.data.workers >= 0, "data.workers", f"must be >= 0, got {cfg.data.workers}")
    _check(cfg.data.shuffle >= 0, "data.shuffle", f"must be >= 0, got {cfg.data.shuffle}")
    for key in ("l1", "perceptual", "gan"):
        value = getattr(cfg.loss, key)
        _check(value >= 0 and math.isfinite(value), f"loss.{key}", f"a weight >= 0, got {value}")
    _check(cfg.loss.disc_features >= 1, "loss.disc_features", f"must be >= 1, got {cfg.loss.disc_features}")
    t = cfg.train
    _check(t.l1_steps >= 0, "train.l1_steps", f"must be >= 0, got {t.l1_steps}")
    _check(t.gan_steps >= 0, "train.gan_steps", f"must be >= 0, got {t.gan_steps}")
    _check(t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(t.lr_l1 > 0, "train.lr_l1", f"must be > 0, got {t.lr_l1}")
    _check(t.lr_gan > 0, "train.lr_gan", f"must be > 0, got {t.lr_gan}")
    _check(all(0 <= b < 1 for b in t.betas), "train.betas", f"two values in [0, 1), got {list(t.betas)}")
    _check(0 <= t.ema_decay < 1, "train.ema_decay", f"in [0, 1), got {t.ema_decay}")
    _check(t.log_every >= 1, "train.log_every", f"must be >= 1, got {t.log_every}")
    _check(t.checkpoint_every >= 1, "train.checkpoint_every", f"must be >= 1, got {t.checkpoint_every}")
    return cfg
