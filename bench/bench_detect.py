"""Shot-detection benchmark: every detector on the spliced set of real footage (tests/spliced.py: 21
single-shot pieces of ../shared/data at 1280x720, 30 fps, joined by 10 hard cuts, 7 dissolves of 10-20
frames and 3 fades through black at known frames).

    .venv/bin/python bench/bench_detect.py [--threads 1] [--size 1280x720]

For each detector: precision, recall and F1 of its transitions (a detection counts within the transition
+/- 2 frames), what it finds of each kind, how many of the scenes between its transitions lie inside one
shot, and its CPU seconds per video-second over the decode (the decode itself, shared with the cutter, is
measured alone and left out). TransNetV2's other rows read the same model scores with other rules: its
single-frame head alone (`predictions_to_scenes` at 0.5), and both heads at the package's 0.5. With a
GPU, TransNetV2's frames/s per GPU (batched windows) is measured too. Results go to bench/results/detect.json,
and the constants `hdvg plan` reads also to hdvg/measured.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "detect.json"

from hdvg.config import DetectConfig  # noqa: E402
from hdvg.frames import SmallFrames  # noqa: E402
from hdvg.plan import record_measured  # noqa: E402
from hdvg.scenes import DecodedVideo, Span, make_finder, scan_of, scenes_between  # noqa: E402
from hdvg.transnet import STEP, Transitions, Windows, cached_network, predict_windows  # noqa: E402
from tests.spliced import PIECES, build_spliced, scores, shots_of, spans_outside_shots  # noqa: E402

# 10 cuts, 7 dissolves of 10-20 frames, 3 fades through black, mixed along the video
JOINS = [("cut", 0), ("fade", 15), ("cut", 0), ("fadeblack", 12), ("fade", 10), ("cut", 0), ("fade", 20),
         ("cut", 0), ("fadeblack", 16), ("cut", 0), ("fade", 12), ("cut", 0), ("fade", 18), ("cut", 0),
         ("fadeblack", 10), ("cut", 0), ("fade", 14), ("cut", 0), ("fade", 16), ("cut", 0)]
TOLERANCE = 2
HDVG_ROW = "TransNetV2 (hdvg: single-frame > 0.4, all-frames > 0.3)"


def decode_cpu(path: Path, threads: int) -> float:
    t0 = time.process_time()
    with DecodedVideo(path, threads) as video:
        for _ in video:
            pass
    return time.process_time() - t0


def run_finder(path: Path, cfg: DetectConfig, threads: int) -> tuple[list[Span], int, float]:
    """(transitions, frames, CPU s) of one detector over one decode of `path`."""
    t0 = time.process_time()
    found: list[Span] = []
    with DecodedVideo(path, threads) as video:
        finder = make_finder(cfg, video.rate, threads)
        for index, frame, _ in video:
            found += finder.push(index, frame)
        found += finder.finish()
    cpu = time.process_time() - t0
    return scan_of(found, list(range(video.decoded))).transitions, video.decoded, cpu


def transnet_scores(path: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """TransNetV2's per-frame (single-frame, all-frames) scores, for the rows that read them differently."""
    import torch

    torch.set_num_threads(threads)
    net, small, windows, got = cached_network(None, "cpu"), SmallFrames(), Windows(), []
    with DecodedVideo(path, threads) as video:
        for _, frame, _ in video:
            w = windows.push(small(frame))
            if w is not None:
                got.append(predict_windows(net, w[None]))
    got += [predict_windows(net, w[None]) for w in windows.finish()]
    n = windows.pushed
    return (np.concatenate([s.reshape(-1) for s, _ in got])[:n], np.concatenate([m.reshape(-1) for _, m in got])[:n])


def rule_transitions(single: np.ndarray, many: np.ndarray, single_threshold: float,
                     many_threshold: float) -> list[Span]:
    t = Transitions(single_threshold, many_threshold)
    return t.add(single, many) + t.finish()


def single_head_transitions(single: np.ndarray, threshold: float = 0.5) -> list[Span]:
    """The package's `predictions_to_scenes`: frames over the threshold end a scene (the first of a run is
    the scene's last frame), the next scene starts after the run."""
    t = Transitions(threshold, 1.0)  # the all-frames head never marks a frame
    runs = t.add(single, np.zeros_like(single)) + t.finish()
    return [Span(s.start + 1, s.end) if s.num_frames > 1 else s for s in runs]


def gpu_frames_per_s(batch: int = 64, seconds: float = 10.0) -> float | None:
    """TransNetV2 scored frames per second on one GPU, windows in batches of `batch` (None without a GPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    net = cached_network(None, "cuda")
    windows = np.random.default_rng(0).integers(0, 256, (batch, 100, 27, 48, 3), dtype=np.uint8)
    predict_windows(net, windows)
    torch.cuda.synchronize()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        predict_windows(net, windows)  # returns numpy: synchronised
        done += batch * STEP
    return done / (time.perf_counter() - start)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="decoder and TransNetV2 threads (a video task's "
                    "reservation: run.cpus_per_video, 1 by default)")
    ap.add_argument("--size", default="1280x720", help="size of the spliced video")
    args = ap.parse_args()
    pieces = PIECES[:len(JOINS) + 1]
    missing = [p.path for p in pieces if not (SHARED / p.path).exists()]
    if missing:
        print(f"bench needs ../shared/data (missing: {missing[:2]})")
        return 1
    w, h = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="hdvg-detect-") as tmp:
        video = Path(tmp) / "spliced.mp4"
        boundaries, num_frames = build_spliced(SHARED, pieces, JOINS, video, size=(w, h))
        seconds = num_frames / 30
        kinds = {k: sum(b.kind == k for b in boundaries) for k in ("cut", "fade", "fadeblack")}
        print(f"spliced set: {num_frames} frames ({seconds:.1f} s) at {w}x{h}, 30 fps; {kinds['cut']} cuts, "
              f"{kinds['fade']} dissolves, {kinds['fadeblack']} fades through black; {args.threads} thread(s)")
        decode = decode_cpu(video, args.threads)
        shots = shots_of(boundaries, num_frames)
        rows = {}

        def row(name: str, found: list[Span], cpu: float | None) -> None:
            scenes = [s for s in scenes_between(found, num_frames) if s.num_frames > 0]
            inside = len(scenes) - len(spans_outside_shots(scenes, shots, TOLERANCE))
            rows[name] = {**scores(found, boundaries, TOLERANCE), "scenes": len(scenes), "scenes_in_one_shot": inside,
                          "cpu_s_per_video_s": None if cpu is None else round(cpu / seconds, 4)}

        for name, cfg in (("PySceneDetect AdaptiveDetector", DetectConfig(detector="adaptive")),
                          ("PySceneDetect ContentDetector", DetectConfig(detector="content")),
                          (HDVG_ROW, DetectConfig(detector="transnetv2"))):
            found, frames, cpu = run_finder(video, cfg, args.threads)
            assert frames == num_frames, (frames, num_frames)
            row(name, found, cpu - decode)
        single, many = transnet_scores(video, args.threads)
        row("TransNetV2, heads at 0.5 / 0.5", rule_transitions(single, many, 0.5, 0.5), None)
        row("TransNetV2, single-frame head only (predictions_to_scenes 0.5)", single_head_transitions(single), None)
    gpu = gpu_frames_per_s()

    print(f"\n{'detector':<64}{'P':>6}{'R':>6}{'F1':>6}{'cuts':>7}{'dissolves':>11}{'fades':>7}"
          f"{'scenes in 1 shot':>18}{'CPU s/video-s':>15}")
    for name, r in rows.items():
        k = r["by_kind"]
        cpu = "-" if r["cpu_s_per_video_s"] is None else f"{r['cpu_s_per_video_s']:.3f}"
        print(f"{name:<64}{r['precision']:>6.2f}{r['recall']:>6.2f}{r['f1']:>6.2f}"
              f"{'%d/%d' % k.get('cut', (0, 0)):>7}{'%d/%d' % k.get('fade', (0, 0)):>11}"
              f"{'%d/%d' % k.get('fadeblack', (0, 0)):>7}"
              f"{'%d/%d' % (r['scenes_in_one_shot'], r['scenes']):>18}{cpu:>15}")
    print(f"(decode alone, left out above: {decode / seconds:.3f} CPU s/video-s)")
    print(f"TransNetV2 on GPU: {gpu:,.0f} frames/s" if gpu else "TransNetV2 on GPU: no GPU here")
    transnet = rows[HDVG_ROW]
    result = {"date": time.strftime("%Y-%m-%d"), "size": args.size, "threads": args.threads, "frames": num_frames,
              "decode_cpu_s_per_video_s": round(decode / seconds, 4),
              "rows": {n: {**r, "by_kind": {k: list(v) for k, v in r["by_kind"].items()}} for n, r in rows.items()},
              "transnetv2_cpu_s_per_video_s": transnet["cpu_s_per_video_s"]}
    if gpu:
        result["transnetv2_gpu_frames_per_s"] = round(gpu)
    elif RESULTS.exists() and "transnetv2_gpu_frames_per_s" in json.loads(RESULTS.read_text()):
        old = json.loads(RESULTS.read_text())  # keep the last GPU measurement, with its date
        result["transnetv2_gpu_frames_per_s"] = old["transnetv2_gpu_frames_per_s"]
        result["gpu_date"] = old.get("gpu_date", old["date"])
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    record_measured({"transnetv2_cpu_s_per_video_s": result["transnetv2_cpu_s_per_video_s"]}, "bench/bench_detect.py",
                    result["date"])
    if gpu:
        record_measured({"transnetv2_gpu_frames_per_s": result["transnetv2_gpu_frames_per_s"]},
                        "bench/bench_detect.py", result["date"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
