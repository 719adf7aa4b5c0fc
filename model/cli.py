"""The models' `hdvg` subcommands. Parsers only: each handler imports torch, diffusers and the model code
when it runs, so `hdvg curate` on a curation node never needs the model stack."""
from __future__ import annotations

import argparse
from typing import Callable

Handler = Callable[[argparse.Namespace], int]


def _video_diffusion(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """train, sample-video, encode-latents (the Swap-CA text-to-video model)."""
    return {}


def _super_resolution(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """train-sr, upscale (the x4 RCAN model)."""
    return {}


def _evaluation(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """eval (FVD, CLIPSIM)."""
    return {}


def register(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the model commands to `hdvg`'s subparsers; return their handlers by command name."""
    return {**_video_diffusion(sub), **_super_resolution(sub), **_evaluation(sub)}
