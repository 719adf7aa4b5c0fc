"""Table 2 cost columns of the Swap-CA U-Net: parameters, peak memory and forward+backward time per training
step, for the no-fusion baseline, global Swap-CA, window Swap-CA (3DW-MCA) and the fixed query directions.

    .venv/bin/python bench/bench_swapca.py [--width 320|32] [--frames 16] [--size 32] [--batch 1] [--repeat 5]
                                           [--sdpa auto|math] [--variants window,global,...]

The input is Table 2's: 4 x 16 x 32 x 32 latents (C x F x H x W). On a GPU the model has the paper's widths
(block_out_channels 320-640-1280-1280) in bf16 and peak memory is torch.cuda.max_memory_allocated. On CPU it
runs at a reduced width (--width 32: 32-64-128-128) in fp32, and peak memory is the worker process's peak
resident set size (getrusage ru_maxrss) minus its resident size before the model was built; each variant runs
in a fresh process so one high-water mark never hides another. Parameter counts are always also given at the
paper's widths. Ratios are against the global-attention and no-fusion models of the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from model.config import UNetConfig  # noqa: E402
from model.unet import VideoUNet, parameter_count  # noqa: E402

VARIANTS = {
    "no_fusion": dict(fusion="none"),
    "global": dict(fusion_attention="global"),
    "window": dict(),
    "spatial_queries": dict(fusion="spatial_queries"),
    "temporal_queries": dict(fusion="temporal_queries"),
}
# Table 2: parameters (G), memory (GB), time (ms) per training step.
PAPER = {"no_fusion": (1.48, 9.37, 135), "global": (1.60, 22.96, 202), "window": (1.60, 9.83, 148)}
TARGETS = {"window_vs_global_memory": 0.45, "window_vs_global_time": 0.75, "window_vs_no_fusion_time": 1.10}
PAPER_RATIOS = {"window_vs_global_memory": 9.83 / 22.96, "window_vs_global_time": 148 / 202,
                "window_vs_no_fusion_time": 148 / 135}
TEXT_TOKENS = 77  # CLIP's context length


def config_for(width: int, overrides: dict) -> UNetConfig:
    """The paper's config at --width 320; otherwise every width scaled by width / 320, with one head per
    `width` channels (the paper's 5-10-20-20 heads become 1-2-4-4)."""
    if width == 320:
        return UNetConfig.paper(**overrides)
    return UNetConfig.paper(block_out_channels=(width, 2 * width, 4 * width, 4 * width), attention_head_dim=width,
                            fusion_head_dim=width, transformer_in_head_dim=max(1, width // 5),
                            cross_attention_dim=1024 * width // 320, norm_num_groups=min(32, width), **overrides)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def measure(variant: str, args: argparse.Namespace) -> dict:
    """One variant in this process: build, warm up, time `repeat` training steps, report peak memory."""
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    torch.manual_seed(0)
    rss_before = _rss_bytes()
    cfg = config_for(args.width, VARIANTS[variant])
    with torch.device(device):  # initialised where it runs: 1.6 G parameters initialise in seconds on a GPU
        unet = VideoUNet(cfg)
    unet = unet.to(dtype=dtype).train()
    sample = torch.randn(args.batch, cfg.in_channels, args.frames, args.size, args.size, device=device, dtype=dtype)
    text = torch.randn(args.batch, TEXT_TOKENS, cfg.cross_attention_dim, device=device, dtype=dtype)
    timestep = torch.randint(0, 1000, (args.batch,), device=device)

    def step() -> None:
        # --sdpa math: every attention materialises its weights, as implementations without fused
        # (flash / memory-efficient) kernels do; auto lets torch pick its fused kernels.
        with sdpa_kernel(SDPBackend.MATH) if args.sdpa == "math" else contextlib.nullcontext():
            unet(sample, timestep, text).float().square().mean().backward()
        unet.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if cuda else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {"variant": variant, "params": sum(p.numel() for p in unet.parameters()),
            "paper_width_params": parameter_count(UNetConfig.paper(**VARIANTS[variant])), "peak_memory_bytes": peak,
            "step_ms": 1000 * statistics.median(times), "step_ms_all": [round(1000 * t, 1) for t in times]}


def device_name() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name()} (bf16)"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"CPU {model}, {torch.get_num_threads()} threads (fp32)"


def ratios_of(results: dict[str, dict]) -> dict[str, float]:
    """Window Swap-CA against global attention and against the no-fusion model, where both were measured."""
    window, global_, base = (results.get(k) for k in ("window", "global", "no_fusion"))
    ratios = {}
    if window and global_:
        ratios["window_vs_global_memory"] = window["peak_memory_bytes"] / global_["peak_memory_bytes"]
        ratios["window_vs_global_time"] = window["step_ms"] / global_["step_ms"]
    if window and base:
        ratios["window_vs_no_fusion_time"] = window["step_ms"] / base["step_ms"]
    return ratios


def write_results(args: argparse.Namespace, results: dict[str, dict]) -> None:
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "device": device_name(), "width": args.width, "sdpa": args.sdpa,
        "input": {"batch": args.batch, "channels": 4, "frames": args.frames, "height": args.size, "width": args.size},
        "memory_method": "torch.cuda.max_memory_allocated" if torch.cuda.is_available()
        else "worker peak RSS (ru_maxrss) minus RSS before building the model",
        "repeat": args.repeat, "results": results, "ratios": ratios_of(results), "targets": TARGETS,
        "paper": {k: dict(zip(("params_g", "memory_gb", "time_ms"), v)) for k, v in PAPER.items()},
    }, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=None, help="first block width (default 320 on GPU, 32 on CPU)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=32, help="latent height = width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sdpa", choices=("auto", "math"), default="auto",
                        help="attention kernels: torch's choice (fused), or the materialising math kernel")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "swapca.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.width is None:
        args.width = 320 if torch.cuda.is_available() else 32
    if args.worker:
        print(json.dumps(measure(args.worker, args)))
        return 0

    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; known {list(VARIANTS)}")
    common = ["--width", str(args.width), "--frames", str(args.frames), "--size", str(args.size),
              "--batch", str(args.batch), "--warmup", str(args.warmup), "--repeat", str(args.repeat),
              "--sdpa", args.sdpa]
    results: dict[str, dict] = {}
    for variant in variants:
        proc = subprocess.run([sys.executable, __file__, "--worker", variant, *common], capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{variant} failed: {proc.stderr[-2000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        write_results(args, results)  # after every variant: a long run interrupted keeps what it measured

    print(f"Swap-CA cost, {device_name()}, width {args.width}, latents {args.batch} x 4 x {args.frames} x "
          f"{args.size} x {args.size}, sdpa {args.sdpa}, median of {args.repeat} steps")
    print(f"{'variant':<18}{'params (G)':>11}{'paper-width (G)':>16}{'peak mem (GB)':>15}{'step (ms)':>11}"
          f"{'   paper: G / GB / ms':<24}")
    for name, r in results.items():
        paper = " / ".join(map(str, PAPER[name])) if name in PAPER else ""
        print(f"{name:<18}{r['params'] / 1e9:>11.4f}{r['paper_width_params'] / 1e9:>16.3f}"
              f"{r['peak_memory_bytes'] / 1e9:>15.3f}{r['step_ms']:>11.1f}   {paper}")
    for key, value in ratios_of(results).items():
        verdict = "meets" if value <= TARGETS[key] else "MISSES"
        print(f"{key}: {value:.3f} ({verdict} target <= {TARGETS[key]}; paper {PAPER_RATIOS[key]:.3f})")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
