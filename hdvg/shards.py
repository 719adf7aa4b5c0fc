"""`write_shards`: WebDataset tar shards, the parquet index and the per-video table, committed atomically.

A shard holds whole videos only. It is written under OUT/_tmp and committed by renames in a fixed order:
tar -> OUT/shards, its index rows -> OUT/index, then the rows of the videos it finishes -> OUT/videos.
That last file is the commit marker: a tar or index part without it is the residue of a crash and is
removed by `recover`, which also tells which videos are done, so a rerun redoes exactly the rest.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from hdvg.contract import (CLIP_FIELDS, INDEX_DIR, INDEX_SCHEMA, SHARDS_DIR, STATS_FILE, STATUS_OK, TMP_DIR,
                           VIDEO_SCHEMA, VIDEOS_DIR, clip_key, shard_name)


def recover(out: str | Path) -> tuple[set[str], int]:
    """Remove the residue of an interrupted run; return (video ids already done, next shard number)."""
    out = Path(out)
    shutil.rmtree(out / TMP_DIR, ignore_errors=True)
    for d in (SHARDS_DIR, INDEX_DIR, VIDEOS_DIR):
        (out / d).mkdir(parents=True, exist_ok=True)
    committed = {p.stem for p in (out / VIDEOS_DIR).glob("*.parquet")}
    for d, ext in ((SHARDS_DIR, ".tar"), (INDEX_DIR, ".parquet")):
        for p in (out / d).iterdir():
            if p.suffix != ext or p.stem not in committed:
                p.unlink()  # an uncommitted part (crash between renames) or a stray temporary
    done: set[str] = set()
    for p in (out / VIDEOS_DIR).glob("*.parquet"):
        done.update(pq.read_table(p, columns=["video_id"]).column("video_id").to_pylist())
    numbers = [int(s) for s in committed if s.isdigit()]
    return done, (max(numbers) + 1 if numbers else 0)


class ShardWriter:
    """Streams samples of whole videos into a temporary tar and commits it once it holds at least
    `samples_per_shard` samples. Shard numbers are `first, first + step, ...` so that several writers
    can share one OUT."""

    def __init__(self, out: str | Path, samples_per_shard: int, first: int = 0, step: int = 1):
        self.out, self.samples_per_shard, self.number, self.step = Path(out), samples_per_shard, first, step
        (self.out / TMP_DIR).mkdir(parents=True, exist_ok=True)
        self._tar: wds.TarWriter | None = None
        self._index: list[dict] = []
        self._videos: list[dict] = []
        self.committed: list[str] = []

    def _tmp(self, suffix: str) -> Path:
        return self.out / TMP_DIR / f"{shard_name(self.number)}{suffix}"

    def add(self, row: dict, clips: list[tuple[dict, bytes, bytes]]) -> str | None:
        """Add one finished video: its row and its clips as (meta, jpg, mp4). Returns the name of the
        shard this commits, if it does."""
        name = shard_name(self.number)
        for meta, jpg, mp4 in clips:
            if self._tar is None:
                self._tar = wds.TarWriter(str(self._tmp(".tar")))
            key = clip_key(meta["clip_id"])
            self._tar.write({"__key__": key, "mp4": mp4, "jpg": jpg,
                             "json": json.dumps({f: meta[f] for f in CLIP_FIELDS}).encode(),
                             "txt": (meta["caption"] or "").encode()})
            self._index.append({**{f: meta[f] for f in CLIP_FIELDS}, "shard": f"{name}.tar", "key": key})
        self._videos.append(row)
        return self.commit() if len(self._index) >= self.samples_per_shard else None

    def commit(self) -> str | None:
        """Commit what is pending (also rows of videos without clips); no-op when nothing is."""
        if not self._videos:
            return None
        name = shard_name(self.number)
        if self._tar is not None:
            self._tar.close()
            pq.write_table(pa.Table.from_pylist(self._index, schema=INDEX_SCHEMA), self._tmp(".index.parquet"))
        pq.write_table(pa.Table.from_pylist(self._videos, schema=VIDEO_SCHEMA), self._tmp(".videos.parquet"))
        if self._tar is not None:
            os.replace(self._tmp(".tar"), self.out / SHARDS_DIR / f"{name}.tar")
            os.replace(self._tmp(".index.parquet"), self.out / INDEX_DIR / f"{name}.parquet")
        os.replace(self._tmp(".videos.parquet"), self.out / VIDEOS_DIR / f"{name}.parquet")  # commit marker
        self._tar, self._index, self._videos = None, [], []
        self.number += self.step
        self.committed.append(name)
        return name


def write_shards(out: str | Path, videos: list[tuple[dict, list[tuple[dict, bytes, bytes]]]],
                 samples_per_shard: int) -> list[str]:
    """Write `videos` ((row, clips) pairs) as committed shards after whatever OUT already holds."""
    _, first = recover(out)
    writer = ShardWriter(out, samples_per_shard, first)
    for row, clips in videos:
        writer.add(row, clips)
    writer.commit()
    return writer.committed


def read_videos(out: str | Path) -> list[dict]:
    files = sorted((Path(out) / VIDEOS_DIR).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def write_stats(out: str | Path, run: dict) -> dict:
    """Totals over every committed part (so they stay right across resumed runs), plus this run's figures."""
    rows = read_videos(out)
    by_status = Counter(r["status"] for r in rows)
    reasons = Counter(f"{r['status']}: {r['reason']}" for r in rows if r["status"] != STATUS_OK)
    stats = {
        "videos": len(rows),
        "videos_by_status": dict(by_status),
        "reasons": dict(reasons.most_common()),
        "clips": sum(r["num_clips"] or 0 for r in rows),
        "hours_in": round(sum(r["duration"] or 0 for r in rows) / 3600, 6),
        "hours_in_ok": round(sum(r["duration"] or 0 for r in rows if r["status"] == STATUS_OK) / 3600, 6),
        "hours_out": round(sum(r["clip_seconds"] or 0 for r in rows) / 3600, 6),
        "shards": len(list((Path(out) / SHARDS_DIR).glob("*.tar"))),
        "last_run": run,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = Path(out) / f".{STATS_FILE}.tmp"
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, Path(out) / STATS_FILE)
    return stats
