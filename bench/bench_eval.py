"""Evaluation cost: feature-extraction throughput of the two detectors, and the full UCF-101 protocol's wall
time extrapolated from it.

* I3D: `model.eval.i3d.InceptionI3d` with random weights (the real architecture, 12.7 M parameters; the
  published weights are not downloaded), 16 x 224 x 224 clips, after the frame preparation it measures too
  (a 720p clip's 16 frames resized to 224x224, the `full` policy).
* CLIP ViT-B/32: `transformers.CLIPModel(CLIPConfig())` (CLIPConfig's defaults are ViT-B/32's), random
  weights; a clip is 16 frames through the processor and the image tower, plus its text.
* On CPU, and on CUDA when there is a GPU. The protocol estimate: UCF-101 (appendix D.3) is 10,100 generated
  samples scored by both detectors, plus the real statistics (computed once, then cached); generation time
  is an ASSUMPTION (`--sampler-s-per-video`, see its help), not measured here.

    python bench/bench_eval.py [--clips N] [--sampler-s-per-video S]   ->   bench/results/eval.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.eval.frames import resize_frames  # noqa: E402
from model.eval.i3d import InceptionI3d  # noqa: E402

UCF101_SAMPLES = 10_100  # 101 prompts x 100 (appendix D.3)
# Assumed seconds per generated video on one A100 at the paper's size: 50 DDIM steps x 2 U-Net passes
# (classifier-free guidance); Table 2 gives 148 ms forward+backward for 4 videos of 16 x 32 x 32 latents,
# a forward pass being ~1/3 of that: ~12 ms per video per pass -> 1.2 s, plus ~0.3 s VAE decoding.
SAMPLER_S_PER_VIDEO = 1.5


def timed(fn, repeat: int) -> float:
    """Seconds per call: one warm-up call, then the mean of `repeat` calls."""
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def bench_device(device: str, batch: int, repeat: int) -> dict:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    i3d = InceptionI3d().to(device).eval()
    clips = torch.randint(0, 256, (batch, 3, 16, 224, 224), dtype=torch.uint8, device=device)

    @torch.no_grad()
    def run_i3d():
        i3d(clips.float() / 127.5 - 1)

    clip_model = CLIPModel(CLIPConfig()).to(device).eval()
    processor = CLIPImageProcessor()  # 224 short side, 224 centre crop, as openai/clip-vit-base-patch32's
    frames = list(rng.integers(0, 256, (16 * batch, 192, 344, 3), dtype=np.uint8))
    tokens = torch.randint(0, 49406, (batch, 20), device=device)

    @torch.no_grad()
    def run_clip():
        pixels = processor(images=frames, return_tensors="pt")["pixel_values"].to(device)
        clip_model.get_image_features(pixel_values=pixels)
        clip_model.get_text_features(input_ids=tokens)

    i3d_s = timed(run_i3d, repeat) / batch
    clip_s = timed(run_clip, repeat) / batch
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
            "i3d_clips_per_s": 1 / i3d_s, "clip_clips_per_s": 1 / clip_s, "batch": batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2, help="clips per detector call (default 2)")
    parser.add_argument("--repeat", type=int, default=2, help="timed calls after a warm-up (default 2)")
    parser.add_argument("--sampler-s-per-video", type=float, default=SAMPLER_S_PER_VIDEO,
                        help=f"assumed generation seconds per video on one GPU (default {SAMPLER_S_PER_VIDEO}: "
                             "Table 2's forward time, 100 U-Net passes, plus VAE decoding)")
    parser.add_argument("--real-clips", type=int, default=2048, help="real clips for FVD statistics (cached)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "eval.json"))
    args = parser.parse_args()

    hd_clip = np.random.default_rng(1).integers(0, 256, (16, 720, 1280, 3), dtype=np.uint8)
    prep_s = timed(lambda: resize_frames(hd_clip, 224, "full"), args.repeat)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"prepare_720p_clip_s": prep_s, "devices": [bench_device(d, args.batch, args.repeat) for d in devices]}

    best = results["devices"][-1]
    score_s = UCF101_SAMPLES * (1 / best["i3d_clips_per_s"] + 1 / best["clip_clips_per_s"] + prep_s)
    real_s = args.real_clips * (1 / best["i3d_clips_per_s"] + prep_s)
    generate_s = UCF101_SAMPLES * args.sampler_s_per_video
    results["ucf101_protocol"] = {
        "samples": UCF101_SAMPLES, "scoring_device": best["device"], "scoring_s": score_s,
        "real_stats_s_once": real_s, "real_clips": args.real_clips,
        "generation_s_assumed": generate_s, "sampler_s_per_video_assumed": args.sampler_s_per_video,
        "total_hours": (score_s + real_s + generate_s) / 3600,
        "scoring_share_of_total": score_s / (score_s + real_s + generate_s),
        "note": "decoding the real 720p clips is not included; generation time is an assumption",
    }
    print(f"frame preparation: {prep_s:.3f} s per 720p clip (16 frames -> 224x224, antialiased)")
    for d in results["devices"]:
        print(f"{d['device']}: I3D {d['i3d_clips_per_s']:.2f} clips/s, CLIP ViT-B/32 {d['clip_clips_per_s']:.2f} "
              f"clips/s (16 frames + text), batch {d['batch']}")
    p = results["ucf101_protocol"]
    print(f"UCF-101 protocol ({UCF101_SAMPLES} samples): scoring {p['scoring_s'] / 3600:.2f} h on "
          f"{p['scoring_device']}, real stats {p['real_stats_s_once'] / 3600:.2f} h once, generation "
          f"{p['generation_s_assumed'] / 3600:.2f} h assumed ({args.sampler_s_per_video} s/video) -> "
          f"{p['total_hours']:.2f} h; scoring is {p['scoring_share_of_total']:.0%} of it")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
