"""Captioning throughput (keyframes/s).

    python bench/bench_caption.py cpu [--videos data/sample_videos]   tiny random BLIP-2 on CPU: the cost
        around the model (JPEG decode, image processor, generate's loop), direct path per batch size and the
        Ray curation job's captioning stage
    python bench/bench_caption.py gpu                                  Salesforce/blip2-opt-2.7b's architecture
        built from its config with random fp16 weights (no download) on the GPU, batch sizes 1 to 128:
        keyframes/s of the model alone and of the streamed path (CPU threads decode and preprocess the next
        batches while the GPU generates), peak GPU memory, and the GPU's busy fraction of the stage's wall
        time (target: at least 90%)

Random weights never say EOS, so every caption runs to max_new_tokens: an upper bound on generation time.
Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hdvg.blip2 import Blip2Captioner, KeyframePreprocessor, Weights  # noqa: E402
from hdvg.blip2_random import random_blip2, save_random_blip2  # noqa: E402
from hdvg.captioning import caption_stream  # noqa: E402
from hdvg.config import CaptionConfig  # noqa: E402


def keyframes(n: int, width: int = 1280, height: int = 720, seed: int = 0) -> list[bytes]:
    """JPEGs the size of a 720p clip's keyframe (what the pipeline hands the captioner)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    out = []
    for i in range(n):  # smooth images (upscaled noise) compress like frames, not like white noise
        img = Image.fromarray(np.roll(base, i, axis=1)).resize((width, height), Image.BILINEAR)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


class GpuBusySampler:
    """NVML's utilisation: the share of each sample period in which a kernel ran, sampled every 20 ms."""

    def __init__(self):
        import pynvml

        pynvml.nvmlInit()
        self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples) / 100, 3) if self.samples else None


def stream(captioner, preprocess, frames, batch_size):
    """Caption `frames` through the streamed path; (keyframes/s, busy fraction, wall s)."""
    captioner.busy_s = 0.0
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    started = time.perf_counter()
    n = sum(len(c) for c in caption_stream(captioner, preprocess, batches))
    wall = time.perf_counter() - started
    return n / wall, captioner.busy_s / wall, wall


def bench_cpu(videos: str | None, batch_sizes: list[int]) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random_blip2(Path(tmp) / "tiny-blip2")
        cfg = CaptionConfig(name="blip2", model=str(folder))
        weights = Weights(str(folder), "local", tmp)
        captioner = Blip2Captioner.load(cfg, weights, "blip2:tiny@local")
        preprocess = KeyframePreprocessor(weights)
        frames = keyframes(64)
        t = time.perf_counter()
        preprocess(frames)
        emit(device="cpu", model="tiny", stage="jpeg decode + image processor", threads=torch.get_num_threads(),
             keyframes_per_s=round(len(frames) / (time.perf_counter() - t), 1))
        for bs in batch_sizes:
            rate, busy, wall = stream(captioner, preprocess, frames, bs)
            emit(device="cpu", model="tiny", path="direct (caption_stream)", batch_size=bs,
                 keyframes_per_s=round(rate, 2), model_busy=round(busy, 3), wall_s=round(wall, 2))
        if videos:
            from hdvg.config import build_config
            from hdvg.pipeline import run_curation

            out = Path(tmp) / "out"
            run = build_config(values={"input": videos, "output": str(out), "captioner.name": "blip2",
                                       "captioner.model": str(folder), "captioner.num_cpus": 0.5})
            stats = run_curation(run)["last_run"]
            busy = stats["captioner_busy"][0]
            emit(device="cpu", model="tiny", path="ray curation job", clips=stats["clips"], wall_s=stats["wall_s"],
                 captioner_busy_s=round(busy["busy_s"], 3), captioning_span_s=round(busy["span_s"], 3),
                 clips_per_s=stats["clips_per_second"])


def bench_gpu(batch_sizes: list[int], frames_per_size: int) -> None:
    import torch

    t = time.perf_counter()
    model, processor = random_blip2("opt-2.7b", device="cuda", dtype=torch.float16)
    emit(device=torch.cuda.get_device_name(0), torch=torch.__version__, model="blip2-opt-2.7b arch, random fp16",
         params_b=round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
         build_s=round(time.perf_counter() - t, 1), attn=model.config._attn_implementation)
    cfg = CaptionConfig(name="blip2", model="random")
    captioner = Blip2Captioner(model, processor, cfg, "blip2:random@none")
    image_processor = processor.image_processor

    def preprocess(jpgs):
        from hdvg.blip2 import decode_jpegs

        return np.ascontiguousarray(image_processor(decode_jpegs(jpgs), return_tensors="np")["pixel_values"],
                                    dtype=np.float32)

    frames = keyframes(max(batch_sizes) * 2)
    captioner(preprocess(frames[:2]))  # warm-up: kernels, allocator
    for bs in batch_sizes:
        n = max(bs * 2, min(frames_per_size, len(frames)) // bs * bs)
        pixels = preprocess(frames[:bs])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        captioner(pixels)
        torch.cuda.synchronize()
        model_rate = bs / (time.perf_counter() - t)
        peak = torch.cuda.max_memory_allocated() / 2**30
        with GpuBusySampler() as nvml:
            rate, busy, wall = stream(captioner, preprocess, frames[:n], bs)
        emit(batch_size=bs, keyframes=n, model_only_keyframes_per_s=round(model_rate, 2),
             streamed_keyframes_per_s=round(rate, 2), peak_gpu_gib=round(peak, 2),
             gpu_busy_in_generate=round(busy, 3), nvml_utilisation=nvml.mean, wall_s=round(wall, 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", choices=["cpu", "gpu"])
    parser.add_argument("--videos", help="cpu: also run the Ray curation job on these videos")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (cpu: 1,4,16; gpu: 1,2,...,128)")
    parser.add_argument("--frames", type=int, default=256, help="gpu: keyframes per batch size, streamed path")
    args = parser.parse_args()
    default = "1,4,16" if args.device == "cpu" else "1,2,4,8,16,32,64,128"
    sizes = [int(s) for s in (args.batch_sizes or default).split(",")]
    bench_cpu(args.videos, sizes) if args.device == "cpu" else bench_gpu(sizes, args.frames)


if __name__ == "__main__":
    main()
