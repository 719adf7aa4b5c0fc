"""`caption`: the pluggable captioner interface over batches of keyframes.

A captioner turns JPEG keyframes into captions, one per keyframe, in order. It is built once per Ray
actor (`build_captioner`) so model weights load once; `caption` is the plain function the pipeline and
the tests call. `name` is recorded in every clip's json as `captioner`.
"""
from __future__ import annotations

from typing import Protocol

from hdvg.config import CaptionConfig


class Captioner(Protocol):
    name: str  # recorded per clip, e.g. "none" or "blip2:Salesforce/blip2-opt-2.7b@<revision>"

    def __call__(self, keyframes: list[bytes]) -> list[str | None]: ...


class NoCaptioner:
    """Leaves captions empty: the clip json says `caption: null, captioner: "none"` and `txt` is empty."""

    name = "none"

    def __call__(self, keyframes: list[bytes]) -> list[str | None]:
        return [None] * len(keyframes)


def build_captioner(cfg: CaptionConfig) -> Captioner:
    if cfg.name == "none":
        return NoCaptioner()
    raise ValueError(f"captioner.name: unknown captioner {cfg.name!r}")


def caption(captioner: Captioner, keyframes: list[bytes], batch_size: int) -> list[str | None]:
    """Caption `keyframes` in batches of `batch_size`; one caption (or None) per keyframe, in order."""
    out: list[str | None] = []
    for i in range(0, len(keyframes), batch_size):
        batch = keyframes[i:i + batch_size]
        got = captioner(batch)
        if len(got) != len(batch):
            raise RuntimeError(f"captioner {captioner.name} returned {len(got)} captions for {len(batch)} images")
        out += got
    return out
