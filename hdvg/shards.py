"""`write_shards`: WebDataset tar shards, the parquet index and the per-video table, committed atomically.

A shard holds whole videos only. It is written to a scratch file (OUT/_tmp when OUT is local) and published
atomically (`hdvg.storage`: a rename, or one upload to object storage) in a fixed order: tar -> OUT/shards,
its index rows -> OUT/index, then the rows of the videos it finishes -> OUT/videos.
That last file is the commit marker: a tar or index part without it is the residue of a crash and is
removed by `recover`, which also tells which videos are done, so a rerun redoes exactly the rest.
"""
from __future__ import annotations

import io
import json
import tarfile
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hdvg.failures import should_retry
from hdvg.storage import Store

from hdvg.contract import (CLIP_FIELDS, INDEX_DIR, INDEX_SCHEMA, SHARDS_DIR, STATS_FILE, STATUS_FAILED, STATUS_OK,
                           VIDEO_SCHEMA, VIDEOS_DIR, clip_key, shard_name)


def committed_names(store: Store) -> list[str]:
    """Names (NNNNNN) of the committed parts of OUT, in order: those with their `videos/` commit marker."""
    return sorted(n.removesuffix(".parquet") for n in store.list(VIDEOS_DIR) if n.endswith(".parquet"))


def recover(out: str | Path | Store, retry_failed: str = "none") -> tuple[set[str], int]:
    """Remove the residue of an interrupted run; return (video ids already done, next shard number).
    With `retry_failed` transient|all, videos whose latest row failed (of that class) are not done."""
    store = out if isinstance(out, Store) else Store(out)
    store.clear_scratch()
    store.makedirs(SHARDS_DIR, INDEX_DIR, VIDEOS_DIR)
    committed = set(committed_names(store))
    for folder, ext in ((SHARDS_DIR, ".tar"), (INDEX_DIR, ".parquet")):
        for name in store.list(folder):
            if not name.endswith(ext) or name.removesuffix(ext) not in committed:
                store.delete(folder, name)  # an uncommitted part (crash between publishes) or a stray file
    table = store.read_table(VIDEOS_DIR, columns=["video_id", "status", "failure", "reason"])
    latest = {r["video_id"]: r for r in (table.to_pylist() if table is not None else [])}  # parts in order
    done = {v for v, r in latest.items() if not should_retry(r["status"], r["failure"], r["reason"], retry_failed)}
    numbers = [int(s) for s in committed if s.isdigit()]
    return done, (max(numbers) + 1 if numbers else 0)


def write_sample(tar: tarfile.TarFile, key: str, members: dict[str, bytes]) -> None:
    """One WebDataset sample: members `<key>.<ext>` in extension order, as webdataset's TarWriter writes
    them. Written with the standard library: a shard is a plain tar, and webdataset's package import
    pulls in torch (about 2 CPU-s in every process that writes shards)."""
    now = time.time()
    for ext in sorted(members):
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime, info.mode = len(members[ext]), now, 0o444
        tar.addfile(info, io.BytesIO(members[ext]))


class ShardWriter:
    """Streams samples of whole videos into a temporary tar and commits it once it holds at least
    `samples_per_shard` samples, as shards `first, first + 1, ...`. One job writes an OUT at a time."""

    def __init__(self, out: str | Path, samples_per_shard: int, first: int = 0):
        self.store = Store(out)
        self.samples_per_shard, self.number = samples_per_shard, first
        self.scratch = self.store.scratch()
        self._tar: tarfile.TarFile | None = None
        self._index: list[dict] = []
        self._videos: list[dict] = []
        self.committed: list[str] = []

    def _tmp(self, suffix: str) -> Path:
        return self.scratch / f"{shard_name(self.number)}{suffix}"

    def add(self, row: dict, clips: list[tuple[dict, bytes, bytes]]) -> str | None:
        """Add one finished video: its row and its clips as (meta, jpg, mp4). Returns the name of the
        shard this commits, if it does."""
        name = shard_name(self.number)
        for meta, jpg, mp4 in clips:
            if self._tar is None:
                self._tar = tarfile.open(self._tmp(".tar"), "w")
            key = clip_key(meta["clip_id"])
            write_sample(self._tar, key, {"mp4": mp4, "jpg": jpg, "txt": (meta["caption"] or "").encode(),
                                          "json": json.dumps({f: meta[f] for f in CLIP_FIELDS}).encode()})
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
            self.store.publish(self._tmp(".tar"), SHARDS_DIR, f"{name}.tar")
            self.store.publish(self._tmp(".index.parquet"), INDEX_DIR, f"{name}.parquet")
        self.store.publish(self._tmp(".videos.parquet"), VIDEOS_DIR, f"{name}.parquet")  # commit marker
        self._tar, self._index, self._videos = None, [], []
        self.number += 1
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


def read_videos(out: str | Path | Store) -> list[dict]:
    table = (out if isinstance(out, Store) else Store(out)).read_table(VIDEOS_DIR)
    return table.to_pylist() if table is not None else []


def write_stats(out: str | Path, run: dict) -> dict:
    """Totals over every committed part (so they stay right across resumed runs), plus this run's figures."""
    store = Store(out)
    latest = {r["video_id"]: r for r in read_videos(store)}  # parts in shard order: a retried video's last row
    rows = list(latest.values())
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
        "shards": len([n for n in store.list(SHARDS_DIR) if n.endswith(".tar")]),
        "last_run": run,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_text(STATS_FILE, json.dumps(stats, indent=2) + "\n")
    store.clear_scratch()
    return stats
