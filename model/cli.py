"""The models' `hdvg` subcommands. Parsers only: each handler imports torch, diffusers and the model code
when it runs, so `hdvg curate` on a curation node never needs the model stack."""
from __future__ import annotations

import argparse
from typing import Callable

Handler = Callable[[argparse.Namespace], int]


def _video_diffusion(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """train, sample-video, encode-latents (the Swap-CA text-to-video model)."""
    tr = sub.add_parser("train", help="train the Swap-CA text-to-video model on shards (torchrun for multi-GPU)")
    tr.add_argument("--config", default="tiny",
                    help="tiny | paper | stage1 | stage2 | stage3 | FILE.yaml (default tiny)")
    tr.add_argument("--shards", action="append", metavar="PATTERN",
                    help="shard set, e.g. 'OUT/shards/*.tar' (repeat to mix sets; replaces the config's)")
    tr.add_argument("--weights", action="append", type=float, metavar="W",
                    help="mixing weight of each --shards set, in order (default equal)")
    tr.add_argument("--where", action="append", metavar="SQL",
                    help="stream only the clips this predicate over the set's OUT index and scores keeps, e.g. "
                         "\"aesthetic >= 4.75 AND duplicate_of IS NULL\" (docs/scores.md); one for all sets or one "
                         "per --shards")
    tr.add_argument("--output", required=True, metavar="RUN", help="run folder (config.yaml, log.jsonl, checkpoints/)")
    tr.add_argument("--steps", type=int, metavar="N", help="train until optimiser step N")
    tr.add_argument("--resume", action="store_true", help="continue from RUN's newest checkpoint (exact)")
    tr.add_argument("--pretrained", metavar="PATH", help="U-Net start: a previous stage's RUN or a step_*.pt file")
    tr.add_argument("--components", metavar="PATH",
                    help="folder or hub id with vae/, text_encoder/, tokenizer/ (diffusers pipeline layout)")
    tr.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override a config field, e.g. --set optim.lr=2e-5 --set data.uncaptioned=empty")
    tr.add_argument("--report-to", choices=("tensorboard", "wandb", "none"),
                    help="metrics: TensorBoard events in RUN/tb/ (default), Weights & Biases, or none")

    def cmd_train(args: argparse.Namespace) -> int:
        import json
        import sys

        from model.checkpoint import NoLoadableCheckpoint
        from model.train import Trainer, main
        from model.train_config import load_config

        try:  # usage errors (a bad field, no shards, an existing RUN) in one line; training errors in full
            if args.weights and (not args.shards or len(args.weights) != len(args.shards)):
                raise ValueError(f"--weights: give one per --shards ({len(args.shards or [])}), got {args.weights}")
            # the flags as overrides (JSON is YAML): one validation, the weights checked against the shards
            sets = list(args.set) + ([f"data.shards={json.dumps(args.shards)}",
                                      f"data.weights={json.dumps(args.weights or [])}"] if args.shards else [])
            if args.where:  # one predicate for every set, or one per set
                count = len(args.shards) if args.shards else None
                where = args.where * count if count and len(args.where) == 1 else args.where
                sets.append(f"data.where={json.dumps(where)}")
            sets += [f"{name}={json.dumps(getattr(args, name))}"
                     for name in ("steps", "pretrained", "components", "report_to") if getattr(args, name) is not None]
            trainer = Trainer(load_config(args.config, sets), args.output, resume=args.resume)
        except (ValueError, FileNotFoundError, FileExistsError, NoLoadableCheckpoint) as exc:
            print(f"hdvg train: {exc}", file=sys.stderr)
            return 2
        return main(trainer)

    sv = sub.add_parser("sample-video", help="generate a 16-frame 344x192 H.264 MP4 from a prompt (DDIM)")
    sv.add_argument("prompt")
    sv.add_argument("--checkpoint", required=True, metavar="RUN",
                    help="a `hdvg train` run folder or a folder written by `hdvg export`")
    sv.add_argument("--output", required=True, metavar="OUT.mp4")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50, appendix D.2)")
    sv.add_argument("--guidance", type=float, default=9.0, help="classifier-free guidance scale (default 9.0, D.2)")
    sv.add_argument("--fps", type=int, default=8, help="frame rate written to the MP4")
    sv.add_argument("--device", help="default: cuda when available, else cpu")
    sv.add_argument("--upscale", metavar="SR_RUN",
                    help="a `hdvg train-sr` run: 4x the frames (344x192 -> 1376x768, the paper's final output)")

    def cmd_sample_video(args: argparse.Namespace) -> int:
        import sys

        from model.sample import Sampler, write_video

        try:
            sampler = Sampler.load(args.checkpoint, args.device)
        except FileNotFoundError as exc:
            print(f"hdvg sample-video: {exc}", file=sys.stderr)
            return 2
        frames = sampler.generate([args.prompt], [args.seed], steps=args.steps, guidance=args.guidance)
        if args.upscale:
            from model.sr.upscale import load_upscaler

            frames = load_upscaler(args.upscale, args.device).upscale(frames[0])[None]  # (1, F, 4H, 4W, 3)
        write_video(frames[0], args.output, fps=args.fps)
        print(f"hdvg sample-video: {frames.shape[1]} frames {frames.shape[3]}x{frames.shape[2]} -> {args.output}")
        return 0

    el = sub.add_parser("encode-latents", help="write latent shards (frozen VAE) that `hdvg train` reads instead")
    el.add_argument("--shards", required=True, metavar="PATTERN", help="video shards, e.g. 'OUT/shards/*.tar'")
    el.add_argument("--output", required=True, metavar="LATENT_OUT", help="folder of the latent shards")
    el.add_argument("--config", default="paper", help="train config whose components and frame size to use")
    el.add_argument("--components", metavar="PATH", help="override the config's components folder")
    el.add_argument("--device", help="default: cuda when available, else cpu")

    def cmd_encode_latents(args: argparse.Namespace) -> int:
        from model.latents import encode_latents
        from model.train_config import load_config

        cfg = load_config(args.config)
        n = encode_latents(args.shards, args.output, args.components or cfg.components,
                           size=(cfg.data.width, cfg.data.height), device=args.device)
        print(f"hdvg encode-latents: {n} clips -> {args.output}")
        return 0

    ex = sub.add_parser("export", help="write a run's inference weights as diffusers/safetensors folders "
                                       "(a train run: a pipeline folder; a train-sr run: config + safetensors)")
    ex.add_argument("run", metavar="RUN", help="a `hdvg train` or `hdvg train-sr` run folder")
    ex.add_argument("output", metavar="DIR", help="new folder to write")

    def cmd_export(args: argparse.Namespace) -> int:
        import sys
        from pathlib import Path

        from model.sample import export_pipeline
        from model.sr.upscale import WEIGHTS_FILE, export_upscaler

        try:
            sr_run = (Path(args.run) / WEIGHTS_FILE).is_file()
            out = (export_upscaler if sr_run else export_pipeline)(args.run, args.output)
        except (FileNotFoundError, FileExistsError) as exc:
            print(f"hdvg export: {exc}", file=sys.stderr)
            return 2
        print(f"hdvg export: {'train-sr' if sr_run else 'train'} run {args.run} -> {out}")
        return 0

    return {"train": cmd_train, "sample-video": cmd_sample_video, "encode-latents": cmd_encode_latents,
            "export": cmd_export}


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
        cfg = load_config(args.config, args.set)  # a ConfigError names the field; hdvg exits 2
        result = train_sr(cfg, args.shards, args.output, steps=args.steps, resume=args.resume, device=args.device)
        stopped = f" (stopped by {result['stopped_by']}; --resume continues)" if result["stopped_by"] else ""
        print(f"hdvg train-sr: step {result['step']} in {args.output}{stopped}")
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
    ev = sub.add_parser("eval", help="generate samples and score them (FVD, CLIPSIM), or score existing videos")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="RUN", help="training run to sample from (model.sample)")
    source.add_argument("--videos", metavar="DIR_OR_SHARDS",
                        help="score existing videos: a REPORT_DIR, a folder of MP4s (+ .txt captions) or shards")
    ev.add_argument("--prompts", default="ucf101", help="ucf101 | msrvtt | webvid | FILE.txt (default ucf101)")
    ev.add_argument("--annotations", metavar="FILE", help="annotation file of --prompts msrvtt / webvid")
    ev.add_argument("--real", metavar="SHARDS", help="real clips for FVD: shard pattern or folder of shards")
    ev.add_argument("--output", required=True, metavar="REPORT_DIR")
    ev.add_argument("--i3d", metavar="PATH", help="i3d_torchscript.pt (StyleGAN-V) or i3d_pretrained_400.pt")
    ev.add_argument("--clip", metavar="PATH", help="CLIP folder or hub name (default openai/clip-vit-base-patch32)")
    ev.add_argument("--metrics", default="fvd,clipsim", help="comma list of fvd, clipsim (default both)")
    ev.add_argument("--num-samples", type=int, metavar="N",
                    help="samples generated and scored (default: the protocol of ucf101, 10100, and msrvtt, "
                         "one per video; 2048 otherwise)")
    ev.add_argument("--real-count", type=int, metavar="N", help="real clips for FVD (default --num-samples)")
    ev.add_argument("--resize", help="FVD 224x224 policy: full | center-crop (default full)")
    ev.add_argument("--clip-crop", help="CLIPSIM policy: center-crop | full (default center-crop)")
    ev.add_argument("--steps", type=int, help="DDIM steps (default 50, appendix D.2)")
    ev.add_argument("--guidance", type=float, help="classifier-free guidance (default 9.0, appendix D.2)")
    ev.add_argument("--seed", type=int, help="sample i uses seed + i (default 0)")
    ev.add_argument("--batch-size", type=int, help="videos per sampler call (default 4)")
    ev.add_argument("--device", help="default: this rank's GPU, else cpu")
    ev.add_argument("--stats-cache", metavar="DIR", help="real FVD statistics cache (default ~/.cache/hdvg/fvd)")
    ev.add_argument("--rank", type=int, help="this process's share of the samples (default $RANK or 0)")
    ev.add_argument("--world-size", type=int, help="number of sharing processes (default $WORLD_SIZE or 1)")

    def cmd_eval(args: argparse.Namespace) -> int:
        import os

        from hdvg.config import ConfigError
        from model.eval.run import EvalConfig, evaluate

        given = {k: v for k, v in vars(args).items() if k not in ("command", "metrics") and v is not None}
        given.setdefault("rank", int(os.environ.get("RANK", 0)))
        given.setdefault("world_size", int(os.environ.get("WORLD_SIZE", 1)))
        cfg = EvalConfig.build(metrics=tuple(m for m in args.metrics.split(",") if m), **given)  # exits 2 if bad
        try:  # a bad prompt set or REPORT_DIR: the message names it and hdvg exits 2
            evaluate(cfg)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return 0

    return {"eval": cmd_eval}


def register(sub: argparse._SubParsersAction) -> dict[str, Handler]:
    """Add the model commands to `hdvg`'s subparsers; return their handlers by command name."""
    return {**_video_diffusion(sub), **_super_resolution(sub), **_evaluation(sub)}
