"""CPU path benchmark: hdvg's curation (probe, detect, cut, keyframe, shard on local Ray) at --detector
adaptive against, in the same run on the same videos, (1) the PySceneDetect command line, as users run it by
default and at hdvg's settings (same scale, video only, same x264 settings: the row every ratio and target
is against), and (2) the floor: one ffmpeg decode of each video plus one x264 encode of its frames at the pipeline's clip settings;
then hdvg with its default detector (TransNetV2, on CPU here), with its ratio to the floor.

    .venv/bin/python bench/bench_cpu.py [--jobs 2] [--repeat 1] [--rounds 1] [--keep] [--no-stages]

Figures are input-video seconds per wall-second, and CPU seconds per video-second (all processes of a path:
on a shared machine wall time is noisy, CPU time much less). Cut precision/recall are those of the clips the
timed hdvg run wrote (its index), and of the CLI's scene lists, against the cut lists of
../shared/data/ground_truth (see TRUTH for where each comes from). A per-stage CPU profile of the video task
(probe, decode, detect, measures, scale, encode, keyframes) follows, with the measures' share of it; everything goes to bench/results/cpu.json (with
--repeat N: cpu_repeatN.json), and `hdvg plan`'s constants (`cut_gpu_detect_cpu_s_per_video_s`, `probe_cpu_s_per_video_s`)
also to hdvg/measured.json, which ships in the package.
The VM's speed drifts from minute to minute, so --rounds N measures every path N times, one round after
another, and reports each round's ratios and the round with the median hdvg / floor ratio in full.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results" / "cpu.json"

from hdvg.config import build_config  # noqa: E402
from hdvg.cutting import clip_size  # noqa: E402
from hdvg.plan import record_measured  # noqa: E402
from hdvg.probe import probe  # noqa: E402
from hdvg.scenes import clip_length_limits  # noqa: E402

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
# the speed targets: hdvg within 1.15x of the floor (1.08x over --repeat 3), at least 1.3x the CLI at equal settings
TARGETS = {"hdvg_vs_floor": 1.15, "hdvg_vs_cli_equal": 1.3, "hdvg_vs_floor_repeat3": 1.08,
           # the default detector (TransNetV2) on CPU; its production path is a GPU actor pool (docs/shots.md)
           "default_vs_floor": 1.6,
           # the cutter's cheap scores (hdvg.measures): at most 5% of the video task's CPU
           "measures_share": 0.05}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _process_kind(pid: int) -> str:
    """What a Ray process is: gcs_server, raylet, dashboard.py, ..., an agent, or a worker (tasks, actors)."""
    try:
        argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):  # a worker's title names what it runs now
        return first if first.endswith("Agent") else "workers (tasks, actors)"
    script = next((a.decode() for a in argv[1:3] if a.endswith(b".py")), None)
    return Path(script or first).name


def descendants() -> dict[int, float]:
    """CPU seconds of every live descendant of this process, by pid, with their own reaped children (/proc):
    the Ray processes of a local cluster, whose workers are children of the raylet and never reaped by us."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited meanwhile
            parent[int(entry.name)] = int(fields[1])
            cpu[int(entry.name)] = sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    ours, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {p for p, pp in parent.items() if pp in frontier} - ours
        ours |= frontier
    return {p: cpu[p] for p in ours}


def by_kind(procs: dict[int, float]) -> dict[str, float]:
    """CPU seconds of `procs` (from `descendants`) summed by kind of process."""
    kinds: dict[str, float] = {}
    for p, cpu in procs.items():
        kind = _process_kind(p)
        kinds[kind] = kinds.get(kind, 0.0) + cpu
    return kinds


def stop_leftovers(pids, grace_s: float = 5.0) -> None:
    """Wait for `pids` to exit, then kill those left: Ray's agents outlive `ray.shutdown` by up to a minute,
    and would run beside the next path measured."""
    deadline = time.monotonic() + grace_s
    while (alive := [p for p in pids if (Path("/proc") / str(p)).exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def run_all(commands: list[list[str]], jobs: int) -> tuple[float, float]:
    """Run `commands` `jobs` at a time; (wall seconds, CPU seconds of the processes)."""
    start, cpu0 = time.monotonic(), children_cpu()
    with ThreadPoolExecutor(jobs) as pool:
        for proc in pool.map(lambda c: subprocess.run(c, capture_output=True, text=True), commands):
            if proc.returncode:
                raise RuntimeError(f"{commands[0][0]} failed: {proc.stderr[-500:]}")
    return time.monotonic() - start, children_cpu() - cpu0


def precision_recall(found: dict[str, list[int]], truth: dict[str, list[int]]) -> tuple[float, float]:
    tp_found = sum(any(abs(f - t) <= TOLERANCE for t in truth[v]) for v in truth for f in found[v])
    tp_truth = sum(any(abs(f - t) <= TOLERANCE for f in found[v]) for v in truth for t in truth[v])
    n_found, n_truth = sum(map(len, found.values())), sum(map(len, truth.values()))
    return (tp_found / n_found if n_found else 1.0), (tp_truth / n_truth if n_truth else 1.0)


def cli_cuts(scene_csv: Path) -> list[int]:
    rows = list(csv.reader(scene_csv.read_text().splitlines()[1:]))  # first line: timecode list
    return [int(r[1]) - 1 for r in rows[2:]]  # "Start Frame" is 1-based; scene 1 starts at frame 0


def index_cuts(clips: list[dict], num_frames: int, max_len: int) -> list[int]:
    """The cuts the clips of one video show: every clip start and end, except the video's own ends and the
    boundaries of `max_clip_seconds` splits (a clip of exactly max_len frames ends there)."""
    splits = {c["end_frame"] for c in clips if c["end_frame"] - c["start_frame"] == max_len}
    bounds = {c["start_frame"] for c in clips} | {c["end_frame"] for c in clips}
    return sorted(b for b in bounds - splits if 0 < b < num_frames)


def stage_cpu(path: str) -> dict:
    """CPU seconds of each stage of the video task on one video, in this process (every thread counted).
    Each stage runs alone over the video's one decode, so a stage is the difference to decoding alone."""
    import av

    from hdvg.cutting import FrameScaler
    from hdvg.frames import SmallFrames
    from hdvg.keyframes import clip_keyframe
    from hdvg.measures import ClipMeasures, measure_frames
    from hdvg.process import process_video, task_threads
    from hdvg.scenes import DecodedVideo, make_finder
    from hdvg.sources import WorkItem

    cfg = build_config(values={"input": "-", "output": "-", "captioner.name": "none"})
    threads = task_threads(cfg)  # as in the video task
    cpu = time.process_time
    c0, t0 = children_cpu(), cpu()
    info = probe(path)
    out = {"probe": cpu() - t0 + children_cpu() - c0}  # ffprobe is a child process
    t0 = cpu()
    with DecodedVideo(path, threads) as video:
        for _ in video:
            pass
    out["decode"] = cpu() - t0
    t0 = cpu()
    with DecodedVideo(path, threads) as video:
        finder = make_finder(cfg.detect, video.rate, threads)
        for index, frame, _ in video:
            finder.push(index, frame)
        finder.finish()
    out["detect"] = cpu() - t0 - out["decode"]
    t0 = cpu()
    with DecodedVideo(path, threads) as video:  # what a video task does when TransNetV2 runs on a GPU actor
        small = SmallFrames()
        for _, frame, _ in video:
            small(frame)
    out["feed"] = cpu() - t0 - out["decode"]
    t0 = cpu()
    with DecodedVideo(path, threads) as video:  # the cutter's measures, as if the whole video were one clip
        small = measure_frames(info)
        measures = ClipMeasures(info.fps, info.aspect, info.rotation)
        for _, frame, _ in video:
            measures.push(small(frame) if measures.takes_next() else None)
        measures.result()
    out["measures"] = cpu() - t0 - out["decode"]
    t0 = cpu()
    with DecodedVideo(path, threads) as video:
        scaler = FrameScaler(*clip_size(info.width, info.height, cfg.encode.max_short_side), info.rotation,
                             video.time_base)
        for _, frame, _ in video:
            scaler(frame)
    out["scale"] = cpu() - t0 - out["decode"]
    with tempfile.TemporaryDirectory(prefix="hdvg-stage-") as tmp:
        t0, c0 = cpu(), children_cpu()
        result = process_video(WorkItem("v", path), cfg, tmp)
        total = cpu() - t0 + children_cpu() - c0
        assert result.row["status"] == "ok", result.row
        clip = Path(tmp) / "clip.mp4"
        t0 = cpu()
        for c in result.clips:  # the keyframe: decoding (the reference frames of) half of each clip again
            clip.write_bytes(c.mp4)
            with av.open(str(clip)) as container:
                n = container.streams.video[0].frames
            clip_keyframe(clip, n // 2)
        out["keyframes"] = cpu() - t0
    out["video_task"] = total  # everything process_video does, probe included
    out["encode"] = total - sum(out[k] for k in ("probe", "decode", "detect", "measures", "scale", "keyframes"))
    out["video_task_gpu_detect"] = total - out["detect"] + out["feed"]
    out["duration"] = info.duration
    return out


STAGES = ("probe", "decode", "detect", "feed", "measures", "scale", "encode", "keyframes", "video_task",
          "video_task_gpu_detect")
STAGE_NOTES = {"detect": "the default detector in the task (TransNetV2 on CPU: 48x27 frames + the model)",
               "feed": "48x27 RGB frames alone: a task's detection work when TransNetV2 runs on a GPU actor",
               "measures": "the cheap scores (hdvg.measures: luma of 2 frame pairs a second at 256 px, flow of 1)",
               "encode": "x264 + mux + the cutter's own work (the rest of the task)",
               "video_task": "process_video as a Ray task runs it, probe included",
               "video_task_gpu_detect": "the same with TransNetV2 on a GPU actor (detect replaced by feed)"}


def profile_stages(videos: list[Path], jobs: int) -> dict:
    """Per-stage CPU seconds per video-second over `videos`, `jobs` videos at a time."""
    with ProcessPoolExecutor(jobs) as pool:
        got = list(pool.map(stage_cpu, [str(v) for v in videos]))
    seconds = sum(g["duration"] for g in got)
    return {k: round(sum(g[k] for g in got) / seconds, 4) for k in STAGES}


def print_stages(stages: dict) -> None:
    print("\nvideo task, CPU s per video-second, by stage (in-process, each over the video's one decode):")
    for k in STAGES:
        print(f"  {k:<22}{stages[k]:>8.4f}  {STAGE_NOTES.get(k, '')}")
    print(f"measures: {stages['measures'] / stages['video_task']:.1%} of the video task's CPU, "
          f"{stages['measures'] / stages['video_task_gpu_detect']:.1%} of it with TransNetV2 on a GPU actor "
          f"(target <= {TARGETS['measures_share']:.0%})")


def hdvg_run(cfg) -> tuple[float, dict[str, float], float, list[dict]]:
    """The real job on a local Ray cluster, start-up included: (wall s, CPU s of every process by kind, Ray
    start-up s, index rows)."""
    import pyarrow.parquet as pq
    import ray

    from hdvg.pipeline import run_curation

    start, own0, reaped0 = time.monotonic(), time.process_time(), children_cpu()
    before = sum(descendants().values())  # nothing of ours runs yet: normally 0
    stats = run_curation(cfg)
    wall = time.monotonic() - start
    cluster = descendants()  # before shutdown kills the Ray processes
    cpu = by_kind(cluster)
    cpu["driver"] = time.process_time() - own0
    cpu["reaped children"] = children_cpu() - reaped0 - before
    ray.shutdown()
    stop_leftovers(cluster)
    return wall, cpu, stats["last_run"]["ray_start_s"], pq.read_table(Path(cfg.output) / "index").to_pylist()


def measure_round(out: Path, videos: dict, infos: dict, runs: list, size: dict, x264: list[str], cfg_values: dict,
                  jobs: int) -> dict:
    """Every path once, one after another, in folder `out`: wall and CPU s of each, hdvg's CPU by process,
    its Ray start-up, and the cuts each found. The paths of the targets run next to hdvg (the floor just
    before it, the CLI at equal settings just after), because the VM's speed drifts within minutes."""
    out.mkdir()
    paths: dict[str, tuple[float, float]] = {}  # name -> (wall s, CPU s)
    paths["decode"] = run_all([["ffmpeg", "-v", "error", "-i", str(p), "-map", "0:v:0", "-f", "null", "-"]
                               for _, p, _ in runs], jobs)
    # the floor: decode + one x264 encode at the clip settings (short side <= 720)
    paths["floor"] = run_all([["ffmpeg", "-v", "error", "-y", "-i", str(p), "-map", "0:v:0", "-vf",
                               f"scale={size[rel][0]}:{size[rel][1]}", *x264, str(out / f"floor_{k}_{p.stem}.mp4")]
                              for rel, p, k in runs], jobs)

    # at --detector adaptive hdvg does the CLI's work (the targets); the default detector's row follows
    cfg = build_config(values={**cfg_values, "output": str(out / "hdvg"), "detect.detector": "adaptive"})
    hdvg_wall, hdvg_kinds, ray_start, index = hdvg_run(cfg)
    paths["hdvg"] = (hdvg_wall, sum(hdvg_kinds.values()))

    # the PySceneDetect CLI (list-scenes added to read its cuts; it costs nothing): at hdvg's settings, which
    # the targets are against, and as users run it, which keeps the source size and encodes audio
    scenedetect = str(Path(sys.executable).with_name("scenedetect"))

    def cli(name: str, split_args) -> list[list[str]]:
        return [[scenedetect, "-i", str(p), "-o", str(out / f"{name}_{k}_{p.stem}"), "detect-adaptive",
                 "list-scenes", "split-video", *split_args(rel), "save-images", "-n", "1"] for rel, p, k in runs]

    paths["cli_equal"] = run_all(cli("cli", lambda rel: [
        "-a", " ".join(["-map 0:v:0", f"-vf scale={size[rel][0]}:{size[rel][1]}", *x264])]), jobs)
    paths["cli_default"] = run_all(cli("clidef", lambda rel: []), jobs)
    default_cfg = build_config(values={**cfg_values, "output": str(out / "hdvg_default")})
    default_wall, default_kinds, _, default_index = hdvg_run(default_cfg)
    paths["hdvg_default"] = (default_wall, sum(default_kinds.values()))
    cli_found = {rel: cli_cuts(next((out / f"cli_0_{p.stem}").glob("*-Scenes.csv"))) for rel, p in videos.items()}
    clidef_found = {rel: cli_cuts(next((out / f"clidef_0_{p.stem}").glob("*-Scenes.csv")))
                    for rel, p in videos.items()}

    truth = {rel: t for rel, (t, _) in TRUTH.items()}

    def index_found(rows: list[dict]) -> dict[str, list[int]]:  # from the clips of a timed run (first copies)
        found = {}
        for rel, p in videos.items():
            clips = [r for r in rows if r["source"] == str(Path(cfg.input) / p.name)]
            found[rel] = index_cuts(clips, infos[rel].num_frames, clip_length_limits(infos[rel].fps, cfg.clip)[1])
        return found

    cuts = {"hdvg": precision_recall(index_found(index), truth), "cli_equal": precision_recall(cli_found, truth),
            "cli_default": precision_recall(clidef_found, truth),
            "hdvg_default": precision_recall(index_found(default_index), truth)}
    return {"paths": paths, "hdvg_kinds": hdvg_kinds, "ray_start": ray_start, "cuts": cuts,
            "default_detector": default_cfg.detect.detector}


def round_ratios(r: dict) -> dict[str, float]:
    paths = r["paths"]
    return {"hdvg_vs_floor": paths["hdvg"][0] / paths["floor"][0],
            "hdvg_vs_cli_equal": paths["cli_equal"][0] / paths["hdvg"][0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="baseline processes in parallel (this machine: 2 cores)")
    ap.add_argument("--repeat", type=int, default=1, help="take each video N times (under other names), so that "
                    "the job's constant start-up weighs as it does on longer inputs")
    ap.add_argument("--rounds", type=int, default=1, help="measure every path N times, one round after another, "
                    "and report the round with the median hdvg / floor ratio (the VM's speed drifts between minutes)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--no-stages", action="store_true", help="skip the per-stage CPU profile")
    ap.add_argument("--stages-only", action="store_true", help="only the per-stage CPU profile (printed, not saved)")
    args = ap.parse_args()
    videos = {rel: SHARED / rel for rel in TRUTH}
    missing = [str(p) for p in videos.values() if not p.exists()]
    if missing:
        print(f"bench needs ../shared/data (missing: {missing[:2]})")
        return 1
    if args.stages_only:
        stages = profile_stages(list(videos.values()), args.jobs)
        print_stages(stages)
        print(json.dumps(stages))
        return 0
    work = Path(tempfile.mkdtemp(prefix="hdvg-bench-"))
    inputs = work / "inputs"
    inputs.mkdir()
    for rel, p in videos.items():
        for k in range(args.repeat):
            (inputs / (p.name if k == 0 else f"r{k}_{p.name}")).symlink_to(p)
    infos = {rel: probe(p) for rel, p in videos.items()}
    seconds = sum(i.duration for i in infos.values()) * args.repeat
    cfg_values = {"input": str(inputs), "captioner.name": "none"}
    enc = build_config(values={**cfg_values, "output": "-"}).encode
    x264 = ["-c:v", "libx264", "-preset", enc.preset, "-crf", str(enc.crf), "-pix_fmt", "yuv420p"]
    runs = [(rel, p, k) for k in range(args.repeat) for rel, p in videos.items()]
    size = {rel: clip_size(i.width, i.height, enc.max_short_side) for rel, i in infos.items()}
    print(f"{len(runs)} videos, {seconds:.1f} s of input; encode libx264 {enc.preset} CRF {enc.crf}, short side "
          f"<= {enc.max_short_side}; {args.jobs} baseline processes at a time")

    rounds = [measure_round(work / f"round{k}", videos, infos, runs, size, x264, cfg_values, args.jobs)
              for k in range(args.rounds)]
    # the round with the median hdvg / floor ratio is reported in full (its figures are of one moment)
    chosen = sorted(rounds, key=lambda r: round_ratios(r)["hdvg_vs_floor"])[len(rounds) // 2]
    paths, hdvg_kinds, ray_start, cuts = chosen["paths"], chosen["hdvg_kinds"], chosen["ray_start"], chosen["cuts"]
    hdvg_wall, hdvg_cpu = paths["hdvg"]
    stages = {} if args.no_stages else profile_stages(list(videos.values()), args.jobs)

    names = {"decode": "ffmpeg decode only", "floor": "floor: decode + x264 at clip settings",
             "cli_default": "PySceneDetect CLI, default (source size, audio)",
             "cli_equal": "PySceneDetect CLI at hdvg's settings",
             "hdvg": "hdvg curate --detector adaptive (local Ray, start-up incl.)",
             "hdvg_default": f"hdvg curate, default detector ({chosen['default_detector']}, CPU)"}
    if len(rounds) > 1:
        print(f"\n{len(rounds)} rounds (hdvg / floor, CLI / hdvg): " + "; ".join(
            f"{q['hdvg_vs_floor']:.2f}x, {q['hdvg_vs_cli_equal']:.2f}x" for q in map(round_ratios, rounds))
            + "; the median round follows")
    print(f"\n{'path':<50}{'wall s':>8}{'video-s/s':>11}{'CPU s/video-s':>15}")
    for key, name in names.items():
        wall, cpu = paths[key]
        print(f"{name:<50}{wall:>8.1f}{seconds / wall:>11.2f}{cpu / seconds:>15.3f}")
    print(f"{'  of which Ray start-up':<50}{ray_start:>8.1f}")
    print(f"{'hdvg curate once Ray is up':<50}{hdvg_wall - ray_start:>8.1f}{seconds / (hdvg_wall - ray_start):>11.2f}")
    floor, cli_eq, cli_def = paths["floor"][0], paths["cli_equal"][0], paths["cli_default"][0]
    floor_target = TARGETS["hdvg_vs_floor_repeat3"] if args.repeat >= 3 else TARGETS["hdvg_vs_floor"]
    print(f"\nhdvg vs CLI at equal settings: {cli_eq / hdvg_wall:.2f}x faster "
          f"(target >= {TARGETS['hdvg_vs_cli_equal']}x); CPU {paths['cli_equal'][1] / hdvg_cpu:.2f}x less")
    print(f"hdvg vs CLI default (unequal work: source size, audio): {cli_def / hdvg_wall:.2f}x")
    print(f"hdvg vs floor: {hdvg_wall / floor:.2f}x the floor's wall (target <= {floor_target}x); "
          f"{(hdvg_wall - ray_start) / floor:.2f}x once Ray is up; CPU {hdvg_cpu / paths['floor'][1]:.2f}x the floor's")
    default_wall, default_cpu = paths["hdvg_default"]
    print(f"hdvg, default detector ({chosen['default_detector']} on CPU) vs floor: {default_wall / floor:.2f}x the "
          f"floor's wall (target <= {TARGETS['default_vs_floor']}x); CPU {default_cpu / paths['floor'][1]:.2f}x the "
          f"floor's; precision / recall {cuts['hdvg_default'][0]:.2f} / {cuts['hdvg_default'][1]:.2f}")
    print(f"cuts vs ground truth (+/-{TOLERANCE} frames), precision / recall: hdvg (its index) "
          f"{cuts['hdvg'][0]:.2f} / {cuts['hdvg'][1]:.2f}; CLI equal {cuts['cli_equal'][0]:.2f} / "
          f"{cuts['cli_equal'][1]:.2f}; CLI default {cuts['cli_default'][0]:.2f} / {cuts['cli_default'][1]:.2f}")
    print("\nhdvg job, CPU s by process (video tasks run in the workers):")
    for kind, cpu in sorted(hdvg_kinds.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<34}{cpu:>8.1f}")
    if stages:
        print_stages(stages)
    result = {
        "date": time.strftime("%Y-%m-%d"), "videos": len(runs), "input_s": round(seconds, 1), "repeat": args.repeat,
        **{f"{k}_wall_s": round(w, 2) for k, (w, _) in paths.items()},
        **{f"{k}_cpu_s_per_video_s": round(c / seconds, 4) for k, (_, c) in paths.items()},
        "ray_start_s": round(ray_start, 2),
        "hdvg_vs_cli_equal": round(cli_eq / hdvg_wall, 3), "hdvg_vs_cli_default": round(cli_def / hdvg_wall, 3),
        "hdvg_vs_floor": round(hdvg_wall / floor, 3), "targets": TARGETS,
        "default_detector": chosen["default_detector"],
        "hdvg_default_vs_floor": round(paths["hdvg_default"][0] / floor, 3),
        "cuts": {k: {"precision": round(p, 3), "recall": round(r, 3)} for k, (p, r) in cuts.items()},
        "rounds": [{k: round(v, 3) for k, v in round_ratios(r).items()} for r in rounds],
        "stage_cpu_s_per_video_s": stages,
        "hdvg_cpu_s_by_process": {k: round(v, 2) for k, v in hdvg_kinds.items()},
    }
    results = RESULTS if args.repeat == 1 else RESULTS.with_name(f"cpu_repeat{args.repeat}.json")
    if stages:  # the measured constants of `hdvg plan`
        result["cut_cpu_s_per_video_s"] = round(stages["video_task"] - stages["probe"], 4)
        result["cut_gpu_detect_cpu_s_per_video_s"] = round(stages["video_task_gpu_detect"] - stages["probe"], 4)
        result["probe_cpu_s_per_video_s"] = stages["probe"]
        result["measures_share"] = round(stages["measures"] / stages["video_task"], 4)
        result["measures_share_gpu_detect"] = round(stages["measures"] / stages["video_task_gpu_detect"], 4)
    elif results.exists():  # keep the last measured stage profile and constants, with the date they are of
        old = json.loads(results.read_text())
        kept = ("stage_cpu_s_per_video_s", "cut_cpu_s_per_video_s", "probe_cpu_s_per_video_s",
                "cut_gpu_detect_cpu_s_per_video_s", "measures_share", "measures_share_gpu_detect")
        result.update({k: old[k] for k in kept if old.get(k)})
        result["stages_date"] = old.get("stages_date", old.get("date"))
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=1) + "\n")
    if stages and args.repeat == 1:
        record_measured({k: result[k] for k in ("cut_gpu_detect_cpu_s_per_video_s", "probe_cpu_s_per_video_s")},
                        "bench/bench_cpu.py", result["date"])
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
