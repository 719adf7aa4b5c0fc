"""`write_shards`: WebDataset tar shards, the parquet index and the per-video table, committed atomically.

A shard holds whole videos only. It is written to a scratch file (OUT/_tmp when OUT is local, else the
staging folder under `run.scratch_dir`) and published atomically and durably (`hdvg.storage`) in a fixed
order: tar -> OUT/shards, its index rows -> OUT/index, then the rows of the videos it finishes -> OUT/videos.
That last file is the commit marker: a tar or index part without it is the residue of a crash and is
removed by `recover`, which also tells which videos are done, so a rerun redoes exactly the rest.

Several writers may commit into one OUT in one job (one per node): each names its scratch files with its
own tag and takes each shard's number when it commits, from a shared counter (`next_number`), so numbers
stay unique and the contract's NNNNNN names stay as they are.
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import tarfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hdvg.contract import (CLIP_FIELDS, INDEX_DIR, INDEX_SCHEMA, MEASURE_FIELDS, QUARANTINE_DIR, SHARDS_DIR,
                           STATS_FILE, STATUS_FAILED, VIDEO_SCHEMA, VIDEOS_DIR, clip_key, shard_name)
from hdvg.failures import TRANSIENT, failure_class
from hdvg.storage import Store
from hdvg.tally import TALLY_COLUMNS, VideoTally, latest_rows

log = logging.getLogger("hdvg")
RESUME_COLUMNS = ["video_id", "status", "failure", "reason"]
SCAN_PARTS = 256
COPY_BUFFER = 8 << 20  # tarfile copies members in 16 KiB pieces by default: a third of the disk's rate


def committed_names(store: Store) -> list[str]:
    """Names (NNNNNN) of the committed parts of OUT, in order: those with their `videos/` commit marker."""
    return sorted(n.removesuffix(".parquet") for n in store.list(VIDEOS_DIR) if n.endswith(".parquet"))


def _unreadable(store: Store, name: str) -> bool:
    try:
        with store.fs.open_input_file(store.path(VIDEOS_DIR, f"{name}.parquet")) as f:
            pq.read_metadata(f)
        return False
    except Exception:  # zero length, truncated footer, not parquet at all: whatever the reader raises
        return True


def quarantine(store: Store, name: str) -> str:
    """Move part `name` (its tar, index part and marker) to OUT/_quarantine/<stamp>/...; its videos are no
    longer done, so the next run redoes them."""
    dest = f"{QUARANTINE_DIR}/{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    for folder, ext in ((SHARDS_DIR, ".tar"), (INDEX_DIR, ".parquet"), (VIDEOS_DIR, ".parquet")):
        if store.exists(folder, f"{name}{ext}"):
            store.move(folder, f"{name}{ext}", f"{dest}/{folder}")
    log.warning("hdvg: part %s has an unreadable commit marker: moved to %s, its videos will be redone", name, dest)
    return dest


def _scan(store: Store, names: list[str], columns: list[str]) -> tuple[pa.Table, list[str]]:
    """(the columns of parts `names`, the parts among them quarantined)."""
    try:
        return store.dataset(VIDEOS_DIR, [f"{n}.parquet" for n in names], VIDEO_SCHEMA).to_table(columns=columns), []
    except (pa.ArrowException, OSError):
        with ThreadPoolExecutor(16) as pool:
            bad = [n for n, broken in zip(names, pool.map(lambda n: _unreadable(store, n), names)) if broken]
        if not bad:
            raise
        for name in bad:
            quarantine(store, name)
        table, _ = _scan(store, [n for n in names if n not in bad], columns)
        return table, bad


def read_parts(store: Store, columns: list[str]) -> tuple[pa.Table | None, list[str]]:
    """(the given columns of every committed videos part in part order, names of the parts quarantined).
    Every marker's footer is read by the scan; a part whose marker is unreadable is quarantined and the
    rest read without it. Parts are scanned SCAN_PARTS at a time: a dataset holds each file's metadata
    while it scans, about 45 KB a part."""
    names = committed_names(store)
    tables, quarantined = [], []
    for i in range(0, len(names), SCAN_PARTS):
        table, bad = _scan(store, names[i:i + SCAN_PARTS], columns)
        tables.append(table)
        quarantined += bad
    return (pa.concat_tables(tables) if tables else None), quarantined


def remove_uncommitted(store: Store) -> None:
    """Delete tar and index parts without their commit marker (a crash between publishes) and stray files."""
    committed = set(committed_names(store))
    for folder, ext in ((SHARDS_DIR, ".tar"), (INDEX_DIR, ".parquet")):
        for name in store.list(folder):
            if not name.endswith(ext) or name.removesuffix(ext) not in committed:
                store.delete(folder, name)


def done_videos(table: pa.Table | None, retry_failed: str) -> set[str]:
    """Video ids a rerun in retry mode `retry_failed` (none | transient | all) skips: every id with a row,
    less those whose latest row failed (of the class the mode redoes)."""
    if table is None:
        return set()
    if retry_failed == "none":
        return set(pc.unique(table["video_id"]).to_pylist())
    latest, _ = latest_rows(table)
    failed = pc.equal(latest["status"], STATUS_FAILED)
    if retry_failed == "transient":
        # rows written before failure classes existed carry none: their reason is classified
        classes = latest["failure"].to_pylist()
        reasons = latest["reason"].to_pylist()
        transient = pa.array([(c or failure_class(r or "")) == TRANSIENT for c, r in zip(classes, reasons)])
        failed = pc.and_(failed, transient)
    return set(latest.filter(pc.invert(failed))["video_id"].to_pylist())


def recover(out: str | Path | Store, retry_failed: str = "none") -> tuple[set[str], int]:
    """Remove the residue of an interrupted run (scratch, uncommitted parts; damaged commits go to
    OUT/_quarantine/); return (video ids already done, next shard number)."""
    store = out if isinstance(out, Store) else Store(out)
    store.clear_scratch()
    store.makedirs(SHARDS_DIR, INDEX_DIR, VIDEOS_DIR)
    table, _ = read_parts(store, RESUME_COLUMNS)
    remove_uncommitted(store)
    numbers = [int(s) for s in committed_names(store) if s.isdigit()]
    return done_videos(table, retry_failed), (max(numbers) + 1 if numbers else 0)


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
    `samples_per_shard` samples. Shard numbers come from `next_number` (default: `first, first + 1, ...`)."""

    def __init__(self, out: str | Path, samples_per_shard: int, first: int = 0,
                 next_number: Callable[[], int] | None = None, scratch_dir: str | None = None):
        self.store = Store(out, scratch_dir)
        self.samples_per_shard = samples_per_shard
        self.next_number = next_number or itertools.count(first).__next__
        self.store.makedirs(SHARDS_DIR, INDEX_DIR, VIDEOS_DIR)
        self.scratch = self.store.scratch()
        self.tag = uuid.uuid4().hex[:12]  # scratch names of this writer, apart from other writers'
        self._tar: tarfile.TarFile | None = None
        self._index: list[dict] = []
        self._videos: list[dict] = []
        self.committed: list[str] = []

    def _tmp(self, suffix: str) -> Path:
        return self.scratch / f"{self.tag}{suffix}"

    def add(self, row: dict, clips: list[tuple[dict, bytes, bytes]]) -> str | None:
        """Add one finished video: its row and its clips as (meta, jpg, mp4). Returns the name of the
        shard this commits, if it does (every video added before is then committed)."""
        for meta, jpg, mp4 in clips:
            if self._tar is None:
                self._tar = tarfile.open(self._tmp(".tar"), "w", copybufsize=COPY_BUFFER)
            key = clip_key(meta["clip_id"])
            fields = {f: meta[f] for f in CLIP_FIELDS} | {f: meta.get(f) for f in MEASURE_FIELDS}
            write_sample(self._tar, key, {"mp4": mp4, "jpg": jpg, "txt": (meta["caption"] or "").encode(),
                                          "json": json.dumps(fields).encode()})
            self._index.append({**fields, "key": key})
        self._videos.append(row)
        return self.commit() if len(self._index) >= self.samples_per_shard else None

    def commit(self) -> str | None:
        """Commit what is pending (also rows of videos without clips); no-op when nothing is."""
        if not self._videos:
            return None
        name = shard_name(self.next_number())
        if self._tar is not None:
            self._tar.close()
            index = [{**r, "shard": f"{name}.tar"} for r in self._index]
            pq.write_table(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), self._tmp(".index.parquet"))
        pq.write_table(pa.Table.from_pylist(self._videos, schema=VIDEO_SCHEMA), self._tmp(".videos.parquet"))
        if self._tar is not None:
            self.store.publish(self._tmp(".tar"), SHARDS_DIR, f"{name}.tar")
            self.store.publish(self._tmp(".index.parquet"), INDEX_DIR, f"{name}.parquet")
        self.store.publish(self._tmp(".videos.parquet"), VIDEOS_DIR, f"{name}.parquet")  # commit marker
        self._tar, self._index, self._videos = None, [], []
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
    table, _ = read_parts(out if isinstance(out, Store) else Store(out), VIDEO_SCHEMA.names)
    return table.to_pylist() if table is not None else []


def write_stats(out: str | Path | Store, run: dict) -> dict:
    """Totals over every committed part (so they stay right across resumed runs), plus this run's figures."""
    store = out if isinstance(out, Store) else Store(out)
    table, _ = read_parts(store, TALLY_COLUMNS)
    tally = VideoTally.of_parts(table)
    stats = {
        "videos": tally.videos,
        "videos_by_status": dict(tally.by_status),
        "reasons": dict(tally.reasons.most_common()),
        "duplicate_inputs": tally.duplicates,
        "clips": tally.clips,
        "hours_in": round(tally.seconds_in / 3600, 6),
        "hours_in_ok": round(tally.seconds_in_ok / 3600, 6),
        "hours_out": round(tally.seconds_out / 3600, 6),
        "shards": len([n for n in store.list(SHARDS_DIR) if n.endswith(".tar")]),
        "last_run": run,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    store.write_text(STATS_FILE, json.dumps(stats, indent=2) + "\n")
    store.clear_scratch()
    return stats
