"""BLIP-2 through `transformers`: weight resolution, CPU-side keyframe preprocessing, GPU-side generation.

The paper captions each clip's centre keyframe with BLIP-2 (VideoFactory, Sec. 3: it beat mPLUG-2 on
CLIPSIM). We use `transformers`' `Blip2ForConditionalGeneration` + `Blip2Processor`, not
`salesforce-lavis` (which pins transformers<4.27, numpy<2 and an old OpenCV, and downloads
bert-base-uncased while building). The work is split so a GPU never waits for JPEG decoding:

    KeyframePreprocessor  (CPU task)   JPEG bytes -> float32 pixel arrays (N, 3, H, W)
    Blip2Captioner        (GPU actor)  pixel arrays -> captions

`resolve_weights` runs once on the driver before any work starts: it finds the weights (a local folder,
the Hugging Face cache, or the hub when reachable) and pins the exact revision every actor loads.
"""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hdvg.config import CaptionConfig, ConfigError


class WeightsMissing(ConfigError):
    """The BLIP-2 weights are neither local nor reachable; the message says how to provide them."""


@dataclass(frozen=True)
class Weights:
    load_from: str      # local folder or hub repo id, what `from_pretrained` gets
    revision: str       # hub commit sha, or "local" for a folder
    cache_dir: str      # the Hugging Face hub cache actors read and download into


def hub_cache_dir() -> str:
    """The hub cache as `huggingface_hub` would pick it, read from the environment now (its own
    constants are frozen when it is imported, which may be before a caller sets HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_weights(cfg: CaptionConfig) -> Weights:
    """Where `cfg.model` is: a local folder, a cached snapshot, or a hub repo that answers now.
    Raises `WeightsMissing` otherwise; nothing is downloaded here."""
    from huggingface_hub import HfApi, snapshot_download

    cache = hub_cache_dir()
    if Path(cfg.model).is_dir():
        if not (Path(cfg.model) / "config.json").exists():
            raise WeightsMissing(f"invalid configuration:\n  captioner.model: {cfg.model} is a folder without "
                                 f"config.json (expected a BLIP-2 checkpoint saved with save_pretrained)")
        return Weights(str(Path(cfg.model).resolve()), "local", cache)
    try:  # a complete snapshot in the cache, whatever HF_HUB_OFFLINE says
        path = snapshot_download(cfg.model, revision=cfg.revision, cache_dir=cache, local_files_only=True)
        return Weights(cfg.model, Path(path).name, cache)
    except Exception as exc:  # LocalEntryNotFoundError, or a repo id that is not valid
        cached_error = exc
    if not hub_offline():
        try:
            sha = HfApi().model_info(cfg.model, revision=cfg.revision, timeout=10).sha
            return Weights(cfg.model, sha or (cfg.revision or "main"), cache)
        except Exception as exc:  # no network, no such repo, gated repo without a token
            online_error = f"the hub did not answer ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    else:
        online_error = "the hub is not asked (HF_HUB_OFFLINE is set)"
    raise WeightsMissing(
        f"invalid configuration:\n  captioner.model: BLIP-2 weights {cfg.model!r}"
        f"{'@' + cfg.revision if cfg.revision else ''} are neither a local folder nor in the Hugging Face "
        f"cache {cache} (HF_HOME={os.environ.get('HF_HOME', '<unset>')}; {type(cached_error).__name__}), and "
        f"{online_error}.\n  Provide them before the run: pass a local folder saved with save_pretrained "
        f"(--captioner-model /path/to/blip2), or download once where the hub is reachable "
        f"(`hf download {cfg.model}`) and point HF_HOME at that cache.\n  To go on without captions, set "
        f"captioner.on_missing_weights=uncaptioned (clips are then marked uncaptioned).")


def decode_jpegs(keyframes: list[bytes]) -> list[Image.Image]:
    return [Image.open(io.BytesIO(b)).convert("RGB") for b in keyframes]


class KeyframePreprocessor:
    """CPU side: JPEG bytes -> the processor's pixel arrays, (N, 3, H, W) float32. Loads only the image
    processor of the checkpoint (no model weights)."""

    def __init__(self, weights: Weights):
        from transformers import AutoImageProcessor

        revision = None if weights.revision == "local" else weights.revision
        self.image_processor = AutoImageProcessor.from_pretrained(weights.load_from, revision=revision,
                                                                  cache_dir=weights.cache_dir)

    def __call__(self, keyframes: list[bytes]) -> np.ndarray:
        if not keyframes:
            return np.zeros((0, 3, 1, 1), np.float32)
        pixels = self.image_processor(decode_jpegs(keyframes), return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(pixels, dtype=np.float32)


def pick_device_dtype(dtype: str):
    """GPU when this process sees one (a Ray actor sees only the GPUs it was given), else CPU.
    'auto' is float16 on GPU (BLIP-2's released precision) and float32 on CPU (half is slow there)."""
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        return device, (torch.float16 if device.type == "cuda" else torch.float32)
    return device, getattr(torch, dtype)


class Blip2Captioner:
    """GPU side: holds the model (loaded once) and turns pixel arrays into captions."""

    def __init__(self, model, processor, cfg: CaptionConfig, name: str):
        import torch

        self.model, self.processor, self.cfg, self.name = model.eval(), processor, cfg, name
        self.device, self.dtype = next(model.parameters()).device, next(model.parameters()).dtype
        self.prompt_ids = None
        if cfg.prompt:  # e.g. "a photo of": the caption continues it; the prompt is cut off again
            tok = processor(text=cfg.prompt, return_tensors="pt")["input_ids"]
            image_ids = torch.full((1, model.config.num_query_tokens), model.config.image_token_index)
            self.prompt_ids = torch.cat([image_ids, tok], 1).to(self.device)
        self.busy_s = 0.0  # seconds inside generate, synchronised: the GPU's busy time for the bench
        self.first_start = self.last_end = None

    @classmethod
    def load(cls, cfg: CaptionConfig, weights: Weights, name: str) -> "Blip2Captioner":
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        device, dtype = pick_device_dtype(cfg.dtype)
        revision = None if weights.revision == "local" else weights.revision
        kw = dict(revision=revision, cache_dir=weights.cache_dir)
        model = Blip2ForConditionalGeneration.from_pretrained(weights.load_from, dtype=dtype,
                                                              attn_implementation="sdpa", **kw).to(device)
        return cls(model, Blip2Processor.from_pretrained(weights.load_from, **kw), cfg, name)

    def generate_kwargs(self) -> dict:
        c = self.cfg
        kwargs = dict(do_sample=False, num_beams=c.num_beams, max_new_tokens=c.max_new_tokens,
                      min_new_tokens=c.min_new_tokens, repetition_penalty=c.repetition_penalty)
        if c.kv_cache == "static":  # fixed shapes: transformers compiles the decoding step on a GPU
            kwargs["cache_implementation"] = "static"
        return kwargs

    def __call__(self, pixels: np.ndarray) -> list[str]:
        import torch

        if len(pixels) == 0:
            return []
        started = time.perf_counter()
        with torch.inference_mode():
            pixel_values = torch.from_numpy(np.asarray(pixels)).to(self.device, self.dtype, non_blocking=True)
            kwargs = {}
            if self.prompt_ids is not None:
                kwargs["input_ids"] = self.prompt_ids.expand(len(pixels), -1)
            ids = self.model.generate(pixel_values=pixel_values, **kwargs, **self.generate_kwargs())
            # decoder-only generate returns the inputs (query tokens, BOS, prompt) before the new tokens
            prefix = self.model.config.num_query_tokens + 1 if self.prompt_ids is None else self.prompt_ids.shape[1]
            texts = self.processor.batch_decode(ids[:, prefix:].cpu(), skip_special_tokens=True)
        ended = time.perf_counter()
        self.busy_s += ended - started
        self.first_start = self.first_start or started
        self.last_end = ended
        return [t.strip() for t in texts]
