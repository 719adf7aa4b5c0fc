"""Super-resolution benchmarks (model/sr): prints one JSON line per measurement and writes bench/results/sr.json.

    python bench/bench_sr.py [--shards 'data/sample/shards/*.tar'] [--heldout VIDEO] [--train-steps N] [--quick]

1. Upscaling throughput, frames/s, 344x192 -> 1376x768 with the paper's RCAN (10 groups x 8 RCABs, 64 features),
   random weights (speed does not depend on them): on CPU in fp32, and on the GPU in bf16 and fp16 when one is
   there, whole frames and 128-pixel tiles. Baseline in the same run: bicubic interpolation of the same frames.
   Target (GPU): the paper's 16-frame 344x192 clip in under 1 s.
2. Degradation throughput, images/s, Real-ESRGAN's second-order pipeline (x4plus defaults) on 256x256 HR
   batches of 16, per device.
3. Quality: the tiny RCAN (32 features) trained `--train-steps` steps on the shards (L1 stage, `train_sr`),
   then PSNR / SSIM against bicubic on held-out degraded frames: frames of `--heldout` (a real video that is not
   in the shards), degraded with a fixed seed.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.sr.config import load_config, paper  # noqa: E402
from model.sr.degrade import degrade  # noqa: E402
from model.sr.rcan import RCAN  # noqa: E402
from model.sr.upscale import Upscaler  # noqa: E402

RESULTS: list[dict] = []
HELDOUT = ROOT.parent / "shared" / "data" / "repo_videos" / "imageio_test_images" / "cockatoo.mp4"


def emit(**row) -> None:
    RESULTS.append(row)
    print(json.dumps(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device, repeat: int, warmup: bool = True) -> float:
    """Seconds per call, after one warm-up call (always on GPU: kernel selection, allocator)."""
    if warmup or device.type == "cuda":
        fn()
        sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def bench_upscale(device: torch.device, frames: int, repeat: int, tiles: tuple[int, ...], warmup: bool) -> None:
    torch.manual_seed(0)
    model = RCAN(paper().rcan)
    clip = np.random.default_rng(0).integers(0, 256, (frames, 192, 344, 3), dtype=np.uint8)
    lr = torch.from_numpy(clip).permute(0, 3, 1, 2).float().div(255).to(device)
    bicubic_s = timed(lambda: F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False), device, repeat,
                      warmup)
    dtypes = [torch.float32] if device.type == "cpu" else [torch.bfloat16, torch.float16]
    for dtype in dtypes:
        for tile in tiles:
            upscaler = Upscaler(model, device, dtype=dtype, tile=tile, tile_pad=16, batch_size=frames)
            seconds = timed(lambda: upscaler.upscale(clip), device, repeat, warmup)
            row = dict(bench="upscale", device=str(device), dtype=str(dtype).replace("torch.", ""), tile=tile,
                       frames=frames, lr="344x192", hr="1376x768", seconds_per_clip=round(seconds, 4),
                       frames_per_s=round(frames / seconds, 3),
                       bicubic_frames_per_s=round(frames / bicubic_s, 1),
                       ratio_to_bicubic=round(bicubic_s / seconds, 5))
            if device.type == "cuda":
                row["gpu"] = torch.cuda.get_device_name()
                row["seconds_per_16_frames"] = round(seconds * 16 / frames, 4)
                row["target_16_frames_under_1s"] = row["seconds_per_16_frames"] < 1.0
            emit(**row)


def bench_degrade(device: torch.device, batch: int, repeat: int, warmup: bool) -> None:
    cfg = paper().degrade
    hr = torch.rand(batch, 3, 256, 256, device=device)
    g = torch.Generator(device).manual_seed(0)
    seconds = timed(lambda: degrade(hr, cfg, g), device, repeat, warmup)
    emit(bench="degrade", device=str(device), batch=batch, size="256x256", images_per_s=round(batch / seconds, 2),
         seconds_per_batch=round(seconds, 4))


def heldout_frames(path: Path, count: int, size: int) -> np.ndarray:
    """`count` frames spread over the video, centre-cropped to size x size (uint8)."""
    from model.data import VideoBytes

    video = VideoBytes(path.read_bytes())
    try:
        picks = np.linspace(0, video.num_frames - 1, count).round().astype(int).tolist()
        frames = video.decode(picks)
    finally:
        video.close()
    h, w = frames.shape[1:3]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top:top + size, left:left + size]


def psnr_ssim(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    from kornia.metrics import psnr, ssim

    out = out.clamp(0, 1)
    return float(psnr(out, ref, 1.0)), float(ssim(out, ref, 11).mean())


def bench_quality(shards: str, heldout: Path, steps: int) -> None:
    from model.sr.train import train_sr
    from model.sr.upscale import load_upscaler

    if not glob.glob(shards):
        emit(bench="quality", skipped=f"no shards match {shards!r} (run `make shards` or pass --shards)")
        return
    if not heldout.is_file():
        emit(bench="quality", skipped=f"held-out video {heldout} absent (pass --heldout VIDEO)")
        return
    # the tiny RCAN at 32 features (at 16 its held-out PSNR wanders around bicubic's for hundreds of steps)
    cfg = load_config("tiny", ["rcan.num_features=32", f"train.l1_steps={steps}", "train.gan_steps=0",
                               f"train.log_every={max(steps, 1)}", f"train.checkpoint_every={max(steps, 1)}"])
    frames = heldout_frames(heldout, 8, 192)
    hr = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    lr = degrade(hr, cfg.degrade, torch.Generator().manual_seed(1234))
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        train_sr(cfg, shards, run, device="cpu")
        train_s = time.perf_counter() - start
        upscaler = load_upscaler(run, "cpu")
        sr = upscaler.upscale_tensor(lr)
    p_sr, s_sr = psnr_ssim(sr, hr)
    p_bi, s_bi = psnr_ssim(bicubic, hr)
    emit(bench="quality", config="tiny, 32 features", train_steps=steps, train_seconds=round(train_s, 1),
         heldout=heldout.name, frames=len(frames), crop="192x192", psnr_sr=round(p_sr, 3),
         psnr_bicubic=round(p_bi, 3), psnr_gain_db=round(p_sr - p_bi, 3), ssim_sr=round(s_sr, 4),
         ssim_bicubic=round(s_bi, 4), ssim_ratio=round(s_sr / s_bi, 4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default=str(ROOT / "data" / "sample" / "shards" / "*.tar"))
    parser.add_argument("--heldout", type=Path, default=HELDOUT)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--quick", action="store_true",
                        help="CPU: 1 frame, one run without warm-up, no tiles (proves the bench runs)")
    args = parser.parse_args()
    repeat, warmup = (1, False) if args.quick else (3, True)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        cpu = device.type == "cpu"
        bench_upscale(device, frames=(1 if args.quick else 2) if cpu else 16, repeat=repeat,
                      tiles=(0,) if args.quick and cpu else (0, 128), warmup=warmup)
        bench_degrade(device, batch=16, repeat=repeat, warmup=warmup)
    bench_quality(args.shards, args.heldout, args.train_steps)
    out = ROOT / "bench" / "results" / "sr.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "quick": args.quick, "results": RESULTS}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
