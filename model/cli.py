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
    tr = sub.add_parser("train-sr", help="train the x4 RCAN super-resolution model on the shards' frames")
    tr.add_argument("--config", default="tiny", help="tiny | paper | FILE.yaml/json (default tiny)")
    tr.add_argument("--shards", required=True, action="append", metavar="PATTERN",
                    help="shard pattern, e.g. 'OUT/shards/*.tar' (repeat to mix sets equally)")
    tr.add_argument("--output", required=True, metavar="RUN", help="run folder (checkpoints, log.jsonl, upscaler.pt)")
    tr.add_argument("--steps", type=int, metavar="N", help="train until step N (default l1_steps + gan_steps)")
    tr.add_argument("--resume", action="store_true", help="continue from RUN's newest checkpoint")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field, e.g. --set loss.vgg_path=vgg19.pth (repeatable)")
    tr.add_argument("--device", help="default: cuda when available, else cpu")

    def cmd_train_sr(args: argparse.Namespace) -> int:
        import logging

        from model.sr.config import load_config
        from model.sr.train import train_sr

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cfg = load_config(args.config, args.set)  # a ConfigError (ValueError) names the field; hdvg exits 2
        result = train_sr(cfg, args.shards, args.output, steps=args.steps, resume=args.resume, device=args.device)
        print(f"hdvg train-sr: step {result['step']} in {args.output}")
        return 0

    up = sub.add_parser("upscale", help="4x every frame of a video with a train-sr run (H.264 out)")
    up.add_argument("input", metavar="IN.mp4")
    up.add_argument("output", metavar="OUT.mp4")
    up.add_argument("--checkpoint", required=True, metavar="RUN", help="a train-sr run folder")
    up.add_argument("--tile", type=int, default=0, metavar="N",
                    help="tile LR frames larger than N x N (0: whole frames)")
    up.add_argument("--tile-pad", type=int, default=16, metavar="P", help="LR context pixels around each tile")
    up.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    up.add_argument("--crf", type=int, default=18, help="x264 CRF of the output")
    up.add_argument("--device", help="default: cuda when available, else cpu")

    def cmd_upscale(args: argparse.Namespace) -> int:
        from model.sr.upscale import load_upscaler, upscale_video

        upscaler = load_upscaler(args.checkpoint, args.device, tile=args.tile, tile_pad=args.tile_pad,
                                 batch_size=args.batch_size)
        n = upscale_video(args.input, args.output, upscaler, crf=args.crf)
        print(f"hdvg upscale: {n} frames -> {args.output}")
        return 0

    return {"train-sr": cmd_train_sr, "upscale": cmd_upscale}


def _evaluation(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """eval (FVD, CLIPSIM)."""
    return {}


def register(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the model commands to `hdvg`'s subparsers; return their handlers by command name."""
    return {**_video_diffusion(sub), **_super_resolution(sub), **_evaluation(sub)}
