"""Shard writer throughput: MB/s of clip bytes one `ShardWriter` commits into a local OUT (tar, index part,
videos part; every file and its folder fsynced), against, in the same run on the same disk, the floor of
writing and fsyncing the same bytes as plain files.

    .venv/bin/python bench/bench_writer.py [--mb 256] [--clip-mb 1.0] [--samples-per-shard 64] [--repeat 3] [--dir DIR]

`hdvg plan` reads `writer_mb_s` (recorded in hdvg/measured.json too): how many writers the output rate of the
full build needs (the job runs one per node, `shards.writers`).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "writer.json"

from hdvg.contract import CLIP_FIELDS  # noqa: E402
from hdvg.plan import record_measured  # noqa: E402
from hdvg.shards import ShardWriter  # noqa: E402


def clip(video: int, k: int, mp4: bytes, jpg: bytes) -> tuple[dict, bytes, bytes]:
    meta = {f: None for f in CLIP_FIELDS}
    meta.update(clip_id=f"v{video}.{k}", video_id=f"v{video}", source=f"/v/v{video}.mp4", start_frame=0,
                end_frame=250, start_time=0.0, end_time=10.0, fps=25.0, width=1280, height=720, num_frames=250,
                caption="a man walking on a street at night", captioner="bench")
    return meta, jpg, mp4


def row(video: int, clips: int) -> dict:
    return {"video_id": f"v{video}", "source": f"/v/v{video}.mp4", "status": "ok", "reason": None, "failure": None,
            "num_clips": clips, "duration": 100.0, "clip_seconds": 10.0 * clips, "width": 1280, "height": 720,
            "fps": 25.0, "wall_s": 1.0, "format": None, "attempts": None, "note": None}


def bench_writer(out: Path, mp4: bytes, jpg: bytes, clips: int, per_video: int, samples_per_shard: int) -> float:
    writer = ShardWriter(out, samples_per_shard)
    started = time.perf_counter()
    for video in range(clips // per_video):
        writer.add(row(video, per_video), [clip(video, k, mp4, jpg) for k in range(per_video)])
    writer.commit()
    return time.perf_counter() - started


def bench_floor(folder: Path, mp4: bytes, jpg: bytes, clips: int, samples_per_shard: int) -> float:
    """The same bytes as one file per shard, written and fsynced with its folder: the disk's own rate."""
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for shard in range(0, clips, samples_per_shard):
        path = folder / f"{shard:06d}.bin"
        with path.open("wb") as f:
            for _ in range(min(samples_per_shard, clips - shard)):
                f.write(mp4)
                f.write(jpg)
            f.flush()
            os.fsync(f.fileno())
    fd = os.open(folder, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=256.0, help="clip bytes to write in all")
    parser.add_argument("--clip-mb", type=float, default=1.0, help="bytes of one clip's MP4 (720p, ~4 s: ~1 MB)")
    parser.add_argument("--samples-per-shard", type=int, default=64)
    parser.add_argument("--dir", help="where to write (default: the system temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the fastest counts (a shared disk)")
    args = parser.parse_args()
    mp4, jpg = os.urandom(int(args.clip_mb * 1e6)), os.urandom(30_000)  # incompressible, like H.264 and JPEG
    clips = max(args.samples_per_shard, int(args.mb / args.clip_mb))
    per_video = 8
    clips -= clips % per_video
    floors, writers = [], []
    for _ in range(args.repeat):  # alternating, so that both see the same disk and page cache
        with tempfile.TemporaryDirectory(prefix="hdvg-bench-writer-", dir=args.dir) as tmp:
            floors.append(bench_floor(Path(tmp) / "floor", mp4, jpg, clips, args.samples_per_shard))
            shutil.rmtree(Path(tmp) / "floor")
            writers.append(bench_writer(Path(tmp) / "out", mp4, jpg, clips, per_video, args.samples_per_shard))
    floor_s, writer_s = min(floors), min(writers)
    mb = clips * (len(mp4) + len(jpg)) / 1e6
    result = {"date": time.strftime("%Y-%m-%d"), "clips": clips, "mb": round(mb, 1),
              "samples_per_shard": args.samples_per_shard, "repeat": args.repeat,
              "writer_mb_s": round(mb / writer_s, 1), "disk_floor_mb_s": round(mb / floor_s, 1),
              "writer_vs_floor": round(floor_s / writer_s, 3)}
    print(f"shard writer: {result['writer_mb_s']} MB/s ({clips} clips, {mb:.0f} MB, fsynced commits); disk floor "
          f"{result['disk_floor_mb_s']} MB/s; writer at {result['writer_vs_floor']:.2f}x the floor")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    record_measured({"writer_mb_s": result["writer_mb_s"]}, "bench/bench_writer.py", result["date"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
