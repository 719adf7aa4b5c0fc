"""Shard loader benchmark (model/data.py): real 720p clips curated from ../shared/data into shards, read as
`hdvg train` reads them (16 frames x 344 x 192, frame stride 2, random start).

    .venv/bin/python bench/bench_loader.py [--clips 40] [--step-ms 150]

1. clips/s per loader worker: one worker process (single-threaded decode), wall and CPU time; the target
   is >= 4 clips/s per core. Frames decoded per frame used comes from the loader's own counts.
2. data-wait fraction of a training step: the real trainer loop (tiny U-Net, tiny random VAE/CLIP) with
   one loader worker, as measured; and modelled for the paper's step (`--step-ms`, Table 2's 148 ms
   forward+backward of 4 x 16 frames at 32x32 latents, ~the 43x24 ones): the cores one GPU needs.
3. GOP: a real clip re-encoded with the curation encoder's settings (x264 veryfast, CRF 22) at GOP 250
   (x264's default, what curation writes) and shorter GOPs: bytes, and decode CPU per used frame for
   random 16 x stride-2 windows (decoding starts at the last keyframe before the window).
Everything goes to bench/results/loader.json.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "loader.json"
VIDEOS = ["repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4", "pyscenedetect_resources/testvideo.mp4"]  # 1280x720
TARGET_CLIPS_PER_CORE = 4.0

import numpy as np  # noqa: E402

from model.data import ShardSet, ShardStream, VideoBytes, VideoClips, frame_indices  # noqa: E402
from model.train_config import TrainConfig  # noqa: E402


def curate(out: Path) -> Path:
    """Real 720p clips cut by the curation CPU stages and committed as shards (no Ray)."""
    from hdvg.config import build_config
    from hdvg.process import process_video
    from hdvg.shards import write_shards
    from hdvg.sources import WorkItem

    cfg = build_config(values={"input": str(SHARED), "output": str(out), "captioner.name": "none"})
    videos = []
    for relative in VIDEOS:
        path = SHARED / relative
        result = process_video(WorkItem(video_id=path.stem, source=str(path)), cfg)
        clips = [(c.meta | {"caption": "a caption", "captioner": "bench"}, c.jpg, c.mp4) for c in result.clips]
        videos.append((result.row, clips))
    write_shards(out, videos, samples_per_shard=4)
    return out / "shards"


def loader_throughput(shards: Path, clips: int) -> dict:
    """One worker's stream, in this process (= one DataLoader worker): clips/s and decode counts."""
    stream = iter(ShardStream([ShardSet(str(shards / "*.tar"))], VideoClips(16, 2, 344, 192), batch_size=1,
                              seed=0, shuffle_buffer=4))
    next(stream)  # open, first decode
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(clips):
        batch = next(stream)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    counts = batch["counts"]
    return {"clips": clips, "clips_per_s_wall": clips / wall, "clips_per_cpu_s": clips / cpu,
            "frames_decoded_per_frame_used": counts["frames_decoded"] / counts["frames_used"],
            "skipped": {k: v for k, v in counts.items() if k in ("too_short", "undecodable")}}


def trainer_wait(shards: Path, steps: int) -> dict:
    """The real training loop with one loader worker: measured data-wait fraction and step time."""
    from model.train import Trainer
    from model.train_config import load_config
    from model.tiny import save_tiny_components

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config("tiny", [f"components={save_tiny_components(Path(tmp) / 'c')}",
                                   f"data.shards=['{shards / '*.tar'}']", "data.num_frames=16", "data.width=344",
                                   "data.height=192", "data.num_workers=1", "optim.batch_per_gpu=1",
                                   "optim.batch_size=1", f"steps={steps + 1}", f"checkpoint_every={steps + 10}",
                                   "log_every=1000", "unet.block_out_channels=[8, 16]",
                                   "unet.attention_levels=[true, false]", "unet.norm_num_groups=4"])
        trainer = Trainer(cfg, Path(tmp) / "run")
        trainer.train_step()  # worker start-up and first batches
        records = [trainer.train_step() for _ in range(steps)]
    return {"steps": steps, "step_s": float(np.mean([1 / r["clips_per_s"] for r in records])),
            "data_wait": float(np.mean([r["data_wait"] for r in records]))}


def encode(frames: np.ndarray, gop: int) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "22", "g": str(gop)}
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode(None))
    return buffer.getvalue()


def gop_study(shards: Path, gops: list[int], windows: int) -> list[dict]:
    from model.data import expand_shards, iter_tar_samples

    sample = max(iter_tar_samples(expand_shards(str(shards / "*.tar"))), key=lambda s: len(s["mp4"]))
    source = VideoBytes(sample["mp4"])
    frames = source.decode(list(range(source.num_frames)))  # (N, 720, 1280, 3)
    rows = []
    for gop in gops:
        data = encode(frames, gop)
        rng = np.random.default_rng(0)
        decoded, cpu = 0, time.process_time()
        for _ in range(windows):
            video = VideoBytes(data)
            video.decode(frame_indices(video.num_frames, 16, 2, rng), size=(344, 194))
            decoded += video.frames_decoded
        cpu = time.process_time() - cpu
        rows.append({"gop": gop, "bytes": len(data), "frames": len(frames),
                     "frames_decoded_per_frame_used": decoded / (16 * windows),
                     "cpu_ms_per_clip": 1000 * cpu / windows})
    base = rows[0]
    for r in rows:
        r["bytes_vs_gop250"] = r["bytes"] / base["bytes"]
        r["decode_cpu_vs_gop250"] = r["cpu_ms_per_clip"] / base["cpu_ms_per_clip"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=40, help="clips timed through one loader worker")
    ap.add_argument("--steps", type=int, default=6, help="trainer steps timed for the data-wait fraction")
    ap.add_argument("--windows", type=int, default=20, help="random windows decoded per GOP setting")
    ap.add_argument("--step-ms", type=float, default=148.0,
                    help="the paper's GPU step for 4 clips per GPU (Table 2: window Swap-CA, 148 ms)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = curate(Path(tmp) / "out")
        loader = loader_throughput(shards, args.clips)
        wait = trainer_wait(shards, args.steps)
        gop = gop_study(shards, [250, 32, 16], args.windows)
    clips_per_gpu_s = 4 / (args.step_ms / 1000)
    per_core = loader["clips_per_cpu_s"]
    workers = TrainConfig().data.num_workers
    # the loader keeps up when its workers make a step's 4 clips within the step; otherwise the GPU waits
    modelled_wait = max(0.0, 1 - workers * per_core * args.step_ms / 1000 / 4)
    result = {
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "loader": loader, "target_clips_per_core": TARGET_CLIPS_PER_CORE,
        "meets_target": per_core >= TARGET_CLIPS_PER_CORE,
        "trainer_cpu_tiny_model": wait,
        "paper_step": {"step_ms": args.step_ms, "clips_per_gpu_s": clips_per_gpu_s,
                       "loader_cores_per_gpu": clips_per_gpu_s / per_core, "default_workers": workers,
                       "modelled_data_wait_default_workers": modelled_wait},
        "gop": gop,
    }
    print(f"loader: {loader['clips_per_s_wall']:.2f} clips/s wall, {per_core:.2f} clips per CPU-second "
          f"(target {TARGET_CLIPS_PER_CORE}: {'met' if result['meets_target'] else 'NOT met'}), "
          f"{loader['frames_decoded_per_frame_used']:.2f} frames decoded per frame used")
    print(f"trainer (tiny model, CPU, 1 worker): step {wait['step_s']:.2f} s, data-wait {wait['data_wait']:.1%}")
    print(f"paper step {args.step_ms:.0f} ms for 4 clips -> {clips_per_gpu_s:.1f} clips/s per GPU -> "
          f"{result['paper_step']['loader_cores_per_gpu']:.1f} loader cores per GPU; with the default "
          f"{workers} workers the GPU would wait {modelled_wait:.0%} of a step")
    for r in gop:
        print(f"GOP {r['gop']:>3}: {r['bytes'] / 1e6:.2f} MB ({r['bytes_vs_gop250']:.2f}x), "
              f"{r['frames_decoded_per_frame_used']:.2f} decoded/used, {r['cpu_ms_per_clip']:.0f} ms CPU per clip "
              f"({r['decode_cpu_vs_gop250']:.2f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {RESULTS}")


if __name__ == "__main__":
    main()
