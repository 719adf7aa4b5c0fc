"""Typed configuration of the curation job.

Every field has a default that reproduces the HD-VG-130M recipe (VideoFactory, Sec. 3) where the paper
gives a number, and a documented engineering choice where it does not. A config is built from defaults,
then a YAML/JSON file (`--config`), then command-line flags, then `--set section.field=value`; pydantic
validates the result once at start-up and names the bad field in its error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FilterConfig(_Section):
    """Which source videos are kept (paper: 720p, widescreen)."""

    min_height: int = Field(720, ge=1, description="minimum displayed short side in pixels (HD-VG: 720p)")
    aspect_ratio: float = Field(16 / 9, gt=0, description="target displayed width/height (HD-VG: widescreen 16:9)")
    aspect_tolerance: float = Field(0.05, ge=0, description="accepted relative deviation from aspect_ratio")
    min_duration_s: float = Field(1.0, ge=0, description="shorter source videos are filtered")


class DetectConfig(_Section):
    """PySceneDetect settings (paper: PySceneDetect single-scene splitting)."""

    detector: Literal["adaptive", "content"] = Field("adaptive", description="PySceneDetect detector")
    adaptive_threshold: float = Field(3.0, gt=0, description="AdaptiveDetector ratio threshold (library default)")
    min_content_val: float = Field(15.0, ge=0, description="AdaptiveDetector minimum content score (library default)")
    content_threshold: float = Field(27.0, gt=0, description="ContentDetector threshold (library default)")
    min_scene_len: int = Field(15, ge=1, description="frames between two cuts (library default)")
    detect_width: int = Field(256, ge=16, description="frames are downscaled to about this width for detection "
                              "(PySceneDetect's auto-downscale target; accuracy-preserving)")
    frame_skip: int = Field(0, ge=0, description="skip N frames between analysed ones (faster, less exact cuts)")


class ClipConfig(_Section):
    """How scenes become clips (paper: single-scene clips, mostly under 20 s)."""

    min_clip_seconds: float = Field(1.0, ge=0, description="scenes shorter than this are dropped")
    max_clip_seconds: float = Field(20.0, gt=0, description="longer scenes are split into consecutive clips")

    @model_validator(mode="after")
    def _ordered(self) -> "ClipConfig":
        if self.max_clip_seconds < self.min_clip_seconds:
            raise ValueError("max_clip_seconds must be >= min_clip_seconds")
        return self


class EncodeConfig(_Section):
    """Clip encoding (H.264 yuv420p MP4, short side at most 720, source fps kept)."""

    max_short_side: int = Field(720, ge=2, description="clips are scaled down so the short side is at most this")
    crf: int = Field(22, ge=0, le=51, description="x264 CRF")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = Field("veryfast", description="x264 preset")
    ffmpeg_threads: int = Field(0, ge=0, description="threads per ffmpeg process (0: ffmpeg decides)")
    timeout_s: float = Field(3600.0, gt=0, description="wall-clock limit of one video's cutting")


class ShardConfig(_Section):
    """WebDataset output."""

    samples_per_shard: int = Field(256, ge=1, description="a shard closes at the first whole video past this")


class CaptionConfig(_Section):
    """Which captioner runs on the centre keyframes (paper: BLIP-2)."""

    name: Literal["none"] = Field("none", description="captioner to use; 'none' leaves captions empty")
    num_actors: int = Field(1, ge=1, description="size of the captioner actor pool")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per captioner actor (fractions allowed)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per captioner actor running a model "
                            "(the 'none' captioner asks for none)")
    batch_size: int = Field(32, ge=1, description="keyframes per captioner call")


class RunConfig(_Section):
    """Where and how wide the job runs."""

    address: str | None = Field(None, description="Ray address; unset: RAY_ADDRESS or a new local cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local cluster (unset: all)")
    cpus_per_video: float = Field(1.0, gt=0, description="CPUs reserved by one video task; the decoder "
                                  "and x264 are multi-threaded, so neighbours share cores")
    max_inflight_videos: int = Field(0, ge=0, description="videos in flight at once (0: 2 x cluster CPUs / "
                                     "cpus_per_video); bounds memory and scratch disk")
    scratch_dir: str | None = Field(None, description="scratch folder for downloads and cut clips "
                                    "(unset: the system temp dir)")
    limit: int | None = Field(None, ge=1, description="process at most this many input videos")


class CurateConfig(_Section):
    input: str = Field(..., description="directory of videos, or a manifest (.txt/.csv/.jsonl/.parquet)")
    output: str = Field(..., description="output folder OUT")
    run: RunConfig = RunConfig()
    filter: FilterConfig = FilterConfig()
    detect: DetectConfig = DetectConfig()
    clip: ClipConfig = ClipConfig()
    encode: EncodeConfig = EncodeConfig()
    shards: ShardConfig = ShardConfig()
    captioner: CaptionConfig = CaptionConfig()


class ConfigError(ValueError):
    """A configuration that does not validate; the message names each bad field."""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<config>"
        lines.append(f"  {field}: {e['msg']} (got {e.get('input')!r})")
    return "invalid configuration:\n" + "\n".join(lines)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"invalid configuration:\n  {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _parse_scalar(text: str) -> Any:
    """`--set` values are YAML/JSON scalars: 3, 2.5, true, null, "text"; anything else is a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null", "~"):
            return None
        return text


def read_config_file(path: str | Path) -> dict:
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration: {path} must hold a mapping")
    return data


def build_config(file: str | Path | None = None, values: dict[str, Any] | None = None,
                 sets: list[str] | None = None) -> CurateConfig:
    """Defaults < file < `values` (dotted keys from flags) < `sets` ("a.b=value" strings)."""
    tree: dict = read_config_file(file) if file else {}
    for dotted, value in (values or {}).items():
        if value is not None:
            _set_path(tree, dotted, value)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"invalid configuration:\n  --set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), _parse_scalar(raw))
    try:
        return CurateConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def leaf_fields() -> list[tuple[str, Any]]:
    """(dotted name, FieldInfo) of every settable field; the CLI makes one flag of each."""
    out = []
    for name, info in CurateConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [(f"{name}.{sub}", sinfo) for sub, sinfo in ann.model_fields.items()]
        else:
            out.append((name, info))
    return out
