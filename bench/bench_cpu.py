"""CPU path benchmark: hdvg's curation (probe, detect, cut, keyframe, shard on local Ray) against, in the
same run on the same videos, (1) the PySceneDetect command line as users run it and (2) the floor: one
ffmpeg decode of each video plus one x264 encode of its frames at the pipeline's clip settings.

    .venv/bin/python bench/bench_cpu.py [--jobs 2] [--repeat 1] [--keep]

Figures are input-video seconds per wall-second; ratios are against the baselines measured in this run.
Cut precision/recall use the cut lists of ../shared/data/ground_truth (see TRUTH below for provenance).
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from hdvg.config import build_config  # noqa: E402
from hdvg.cutting import clip_size  # noqa: E402
from hdvg.probe import probe  # noqa: E402

# Six real HD videos of ../shared/data and their cut lists, with where each list comes from.
TRUTH = {
    "repo_videos/video2dataset/test_video.mp4": ([2096, 2698, 2785, 3015],
                                                 "video2dataset test: ContentDetector(5) scenes"),
    "repo_videos/moviepy/big_buck_bunny_0_30.webm": ([31, 139, 283, 376, 551], "local AdaptiveDetector run"),
    "pyscenedetect_resources/testvideo.mp4": ([30, 180, 394, 691], "PySceneDetect golden, AdaptiveDetector"),
    "repo_videos/imageio_test_images/cockatoo.mp4": ([], "local AdaptiveDetector run (no cut)"),
    "repo_videos/moviepy/smpte-2997.mp4": ([], "colour bars, no cut"),
    "repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4": ([], "HD-VG-130M metadata: a single scene"),
}
TOLERANCE = 2  # frames


def run_all(commands: list[list[str]], jobs: int) -> float:
    """Run `commands` `jobs` at a time; wall seconds."""
    start = time.monotonic()
    with ThreadPoolExecutor(jobs) as pool:
        for proc in pool.map(lambda c: subprocess.run(c, capture_output=True, text=True), commands):
            if proc.returncode:
                raise RuntimeError(f"{commands[0][0]} failed: {proc.stderr[-500:]}")
    return time.monotonic() - start


def precision_recall(found: dict[str, list[int]], truth: dict[str, list[int]]) -> tuple[float, float]:
    tp_found = sum(any(abs(f - t) <= TOLERANCE for t in truth[v]) for v in truth for f in found[v])
    tp_truth = sum(any(abs(f - t) <= TOLERANCE for f in found[v]) for v in truth for t in truth[v])
    n_found, n_truth = sum(map(len, found.values())), sum(map(len, truth.values()))
    return (tp_found / n_found if n_found else 1.0), (tp_truth / n_truth if n_truth else 1.0)


def cli_cuts(scene_csv: Path) -> list[int]:
    rows = list(csv.reader(scene_csv.read_text().splitlines()[1:]))  # first line: timecode list
    return [int(r[1]) - 1 for r in rows[2:]]  # "Start Frame" is 1-based; scene 1 starts at frame 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="baseline processes in parallel (this machine: 2 cores)")
    ap.add_argument("--repeat", type=int, default=1, help="take each video N times (under other names), so that "
                    "the job's constant start-up weighs as it does on longer inputs")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    videos = {rel: SHARED / rel for rel in TRUTH}
    missing = [str(p) for p in videos.values() if not p.exists()]
    if missing:
        print(f"bench needs ../shared/data (missing: {missing[:2]})")
        return 1
    work = Path(tempfile.mkdtemp(prefix="hdvg-bench-"))
    inputs = work / "inputs"
    inputs.mkdir()
    for rel, p in videos.items():
        for k in range(args.repeat):
            (inputs / (p.name if k == 0 else f"r{k}_{p.name}")).symlink_to(p)
    infos = {rel: probe(p) for rel, p in videos.items()}
    seconds = sum(i.duration for i in infos.values()) * args.repeat
    cfg = build_config(values={"input": str(inputs), "output": str(work / "hdvg"), "captioner.name": "none"})
    print(f"{len(videos) * args.repeat} videos, {seconds:.1f} s of input; encode libx264 {cfg.encode.preset} "
          f"CRF {cfg.encode.crf}; {args.jobs} baseline processes at a time")

    # (0) decode only
    decode = run_all([["ffmpeg", "-v", "error", "-i", str(p), "-map", "0:v:0", "-f", "null", "-"]
                      for p in videos.values()] * args.repeat, args.jobs)
    # (2) the floor: decode + one x264 encode at the clip settings (short side <= 720)
    floor_cmds = []
    for (rel, p), k in ((v, k) for k in range(args.repeat) for v in videos.items()):
        w, h = clip_size(infos[rel].width, infos[rel].height, cfg.encode.max_short_side)
        floor_cmds.append(["ffmpeg", "-v", "error", "-y", "-i", str(p), "-map", "0:v:0", "-vf",
                           f"scale={w}:{h}", "-c:v", "libx264", "-preset", cfg.encode.preset, "-crf",
                           str(cfg.encode.crf), "-pix_fmt", "yuv420p", str(work / f"floor_{k}_{p.stem}.mp4")])
    floor = run_all(floor_cmds, args.jobs)
    # (1) the PySceneDetect CLI as users run it (list-scenes added to read its cuts; it costs nothing)
    scenedetect = str(Path(sys.executable).with_name("scenedetect"))
    cli_cmds = [[scenedetect, "-i", str(p), "-o", str(work / f"cli_{k}_{p.stem}"), "detect-adaptive", "list-scenes",
                 "split-video", "save-images", "-n", "1"] for k in range(args.repeat) for p in videos.values()]
    cli = run_all(cli_cmds, args.jobs)
    cli_found = {rel: cli_cuts(next((work / f"cli_0_{p.stem}").glob("*-Scenes.csv"))) for rel, p in videos.items()}

    # hdvg: the real job on a local Ray cluster, start-up included
    from hdvg.pipeline import run_curation
    import pyarrow.parquet as pq
    import ray

    start = time.monotonic()
    stats = run_curation(cfg)
    hdvg_wall = time.monotonic() - start
    ray_start = stats["last_run"]["ray_start_s"]
    ray.shutdown()
    index = pq.read_table(work / "hdvg" / "index").to_pylist()
    found = {rel: sorted({r["start_frame"] for r in index if r["source"].endswith("/" + p.name)} - {0})
             for rel, p in videos.items()}
    # clip starts also come from max_clip_seconds splits: count as found cuts only those the detector made
    from hdvg.config import DetectConfig
    from hdvg.scenes import detect_scenes

    det = {rel: detect_scenes(p, DetectConfig()).cuts for rel, p in videos.items()}
    truth = {rel: t for rel, (t, _) in TRUTH.items()}
    hp, hr = precision_recall(det, truth)
    cp, cr = precision_recall(cli_found, truth)
    missed_in_clips = {rel: [t for t in truth[rel] if not any(abs(t - s) <= TOLERANCE for s in found[rel])]
                       for rel in truth}

    rate = lambda wall: seconds / wall  # noqa: E731
    print(f"\n{'path':<46}{'wall s':>9}{'video-s/s':>11}")
    for name, wall in [("ffmpeg decode only", decode), ("floor: decode + x264 encode at clip settings", floor),
                       ("PySceneDetect CLI (detect-adaptive split-video save-images)", cli),
                       ("hdvg curate (local Ray, start-up included)", hdvg_wall),
                       ("  of which Ray start-up", ray_start),
                       ("hdvg curate once Ray is up", hdvg_wall - ray_start)]:
        shown = "" if name.startswith("  of which") else f"{rate(wall):>11.2f}"  # a cost, not a path
        print(f"{name[:46]:<46}{wall:>9.1f}{shown}")
    print(f"\nhdvg vs CLI:   {cli / hdvg_wall:.2f}x   (target >= 1.4x)")
    print(f"hdvg vs floor: {hdvg_wall / floor:.2f}x slower than decode+encode (target <= 1.2x); "
          f"{(hdvg_wall - ray_start) / floor:.2f}x once Ray is up")
    print(f"cuts vs ground truth (+/-{TOLERANCE} frames): hdvg precision {hp:.2f} recall {hr:.2f}; "
          f"CLI precision {cp:.2f} recall {cr:.2f}")
    print(f"true cuts not starting an hdvg clip: {sum(map(len, missed_in_clips.values()))}")
    print("note: the CLI encodes at source resolution (1080p sources stay 1080p); hdvg and the floor encode "
          "with the short side at most 720.")
    print(json.dumps({"videos": len(videos) * args.repeat, "input_s": round(seconds, 1), "decode_s": round(decode, 1),
                      "floor_s": round(floor, 1), "cli_s": round(cli, 1), "hdvg_s": round(hdvg_wall, 1), "ray_start_s": round(ray_start, 1),
                      "hdvg_vs_cli": round(cli / hdvg_wall, 3), "hdvg_vs_floor": round(hdvg_wall / floor, 3)}))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
