"""Resume and input at part scale: what a rerun costs before its first video starts, and the memory the
input feed holds, each against the way it was done before (every row as a dict), in the same run.

    .venv/bin/python bench/bench_resume.py [--parts 10000] [--rows-per-part 10] [--manifest-rows 1000000]

* resume: an OUT of `--parts` committed parts (each a videos part of `--rows-per-part` rows, the commit
  markers `recover` reads) is recovered by `hdvg.shards.recover` (the columns it needs through
  pyarrow.dataset, vectorised) and by the row-dict baseline (each part read whole, every row a dict); then
  stats.json is written by `write_stats` (VideoTally over pyarrow) and by the baseline's dict counting.
* input: a `--manifest-rows` manifest is fed through the job's bounded look-ahead (`read_ahead`, window
  `run.lookahead`) with the ids the scheduler keeps, against the baseline that lists and sorts it whole.

Each measurement runs in its own process after the same imports (Ray, pyarrow, yt-dlp: about 200 MB), and
reports its peak RSS above what those imports hold. Results: bench/results/resume.json.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "resume.json"


def make_out(out: Path, parts: int, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hdvg.contract import VIDEO_SCHEMA, VIDEOS_DIR

    (out / VIDEOS_DIR).mkdir(parents=True)
    for part in range(parts):
        status = ["ok"] * (rows - 2) + ["failed", "filtered"]
        table = pa.table({
            "video_id": [f"v{part:07d}_{k}" for k in range(rows)], "source": [f"/data/v{part}_{k}.mp4" for k in range(rows)],
            "status": status, "reason": [None] * (rows - 2) + ["download: timeout: read timed out", "below 720p"],
            "failure": [None] * (rows - 2) + ["transient", None], "num_clips": [12] * rows,
            "duration": [300.0] * rows, "clip_seconds": [280.0] * rows, "width": [1280] * rows, "height": [720] * rows,
            "fps": [25.0] * rows, "wall_s": [30.0] * rows, "format": [None] * rows, "attempts": [1] * rows,
            "note": [None] * rows}, schema=VIDEO_SCHEMA)
        pq.write_table(table, out / VIDEOS_DIR / f"{part:06d}.parquet")


def baseline_recover(out: Path) -> set[str]:
    """Every part read whole, every row a dict (the way recover and write_stats read before)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hdvg.failures import should_retry

    files = sorted((out / "videos").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f) for f in files])
    latest = {r["video_id"]: r for r in table.to_pylist()}
    return {v for v, r in latest.items() if not should_retry(r["status"], r["failure"], r["reason"], "transient")}


def baseline_stats(out: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.concat_tables([pq.read_table(f) for f in sorted((out / "videos").glob("*.parquet"))])
    rows = list({r["video_id"]: r for r in table.to_pylist()}.values())
    return {"videos": len(rows), "by": dict(Counter(r["status"] for r in rows)),
            "clips": sum(r["num_clips"] or 0 for r in rows)}


def child(kind: str, path: str, window: int) -> dict:
    """One measurement in this process: seconds, peak RSS above what the imports hold, a check value."""
    import hdvg.scheduler  # noqa: F401  (ray, pyarrow, yt-dlp: the same imports for every measurement)
    import hdvg.shards  # noqa: F401

    with open("/proc/self/statm") as f:
        imported = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    started = time.perf_counter()
    if kind == "recover":
        from hdvg.shards import recover

        check = len(recover(path, "transient")[0])
    elif kind == "recover_baseline":
        check = len(baseline_recover(Path(path)))
    elif kind == "stats":
        from hdvg.shards import write_stats

        check = write_stats(path, {})["videos"]
    elif kind == "stats_baseline":
        check = baseline_stats(Path(path))["videos"]
    elif kind == "input":
        from hdvg.scheduler import local_size, read_ahead
        from hdvg.sources import list_inputs

        ids = set()  # what the scheduler keeps of each input: its id (duplicates are found against them)
        for item in read_ahead(list_inputs(path), window, local_size):
            ids.add(item.video_id)
        check = len(ids)
    elif kind == "input_baseline":
        from hdvg.scheduler import local_size
        from hdvg.sources import list_inputs

        items = sorted(list_inputs(path), key=local_size, reverse=True)
        check = len({i.video_id for i in items})
    else:
        raise SystemExit(f"unknown measurement {kind}")
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s": round(seconds, 3), "peak_rss_mb": round(peak, 1), "work_rss_mb": round(peak - imported, 1),
            "check": check}


def measure(kind: str, path: Path, window: int = 1024) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(path), "--window", str(window)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=int, default=10_000)
    parser.add_argument("--rows-per-part", type=int, default=10)
    parser.add_argument("--manifest-rows", type=int, default=1_000_000)
    parser.add_argument("--window", type=int, default=1024, help="run.lookahead")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.window)))
        return 0
    result: dict = {"date": time.strftime("%Y-%m-%d"), "parts": args.parts, "rows_per_part": args.rows_per_part,
                    "manifest_rows": args.manifest_rows, "window": args.window}
    with tempfile.TemporaryDirectory(prefix="hdvg-bench-resume-") as tmp:
        out = Path(tmp) / "out"
        made = time.perf_counter()
        make_out(out, args.parts, args.rows_per_part)
        print(f"OUT with {args.parts} committed parts ({args.parts * args.rows_per_part} videos) made in "
              f"{time.perf_counter() - made:.1f} s")
        for kind in ("recover", "recover_baseline", "stats", "stats_baseline"):
            result[kind] = measure(kind, out)
        manifest = Path(tmp) / "inputs.txt"
        with manifest.open("w") as f:
            for k in range(args.manifest_rows):
                f.write(f"/data/videos/{k % 1000:03d}/video_{k:08d}.mp4\n")
        for kind in ("input", "input_baseline"):
            result[kind] = measure(kind, manifest, args.window)
    for kind in ("recover", "stats", "input"):
        new, old = result[kind], result[f"{kind}_baseline"]
        assert new["check"] == old["check"], (kind, new, old)
        result[f"{kind}_speedup"] = round(old["s"] / new["s"], 2)
        result[f"{kind}_memory_ratio"] = round(new["work_rss_mb"] / max(old["work_rss_mb"], 0.1), 3)
        print(f"{kind:<8} {new['s']:>8.2f} s, +{new['work_rss_mb']:>7.1f} MB RSS (peak {new['peak_rss_mb']:.0f}) | "
              f"row-dict baseline {old['s']:>8.2f} s, +{old['work_rss_mb']:>7.1f} MB (peak {old['peak_rss_mb']:.0f}) | "
              f"{result[f'{kind}_speedup']:.2f}x faster, {result[f'{kind}_memory_ratio']:.2f}x the memory")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
