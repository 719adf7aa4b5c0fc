"""The one aggregator over the videos table: totals by status and reason, clips and hours.

`stats.json` (`hdvg.shards.write_stats`), `hdvg stats` (`hdvg.stats.dataset_stats`) and the job's progress
line all count through `VideoTally`, vectorised over pyarrow tables: a part of a million videos is counted
without building a dict per row.

Which row counts: a video retried with `--retry-failed` has several rows, and its latest one (in part
order) counts. A `duplicate: ...` row (the same video_id twice in one input) is recorded for the second
input line but never stands for the video: the video counts by its own rows, the duplicate lines apart.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from hdvg.contract import STATUS_OK

DUPLICATE_STAGE = "duplicate"
TALLY_COLUMNS = ["video_id", "status", "reason", "num_clips", "duration", "clip_seconds"]


def duplicate_reason(video_id: str) -> str:
    return f"{DUPLICATE_STAGE}: video_id {video_id!r} appears earlier in the input"


def _is_duplicate(table: pa.Table) -> pa.ChunkedArray:
    return pc.starts_with(pc.fill_null(table["reason"], ""), f"{DUPLICATE_STAGE}: ")


def latest_rows(table: pa.Table) -> tuple[pa.Table, int]:
    """(the latest non-duplicate row of each video_id, number of duplicate rows) of a videos table in
    part order."""
    duplicate = _is_duplicate(table)
    primary = table.filter(pc.invert(duplicate))
    order = pa.array(np.arange(primary.num_rows, dtype=np.int64))
    numbered = primary.append_column("_order", order)
    last = numbered.group_by("video_id", use_threads=False).aggregate([("_order", "max")])
    keep = pc.is_in(order, value_set=last["_order_max"].combine_chunks())
    return primary.filter(keep), int(pc.sum(duplicate).as_py() or 0)


def reason_group(status: str, reason: str | None) -> str:
    """Group free-text reasons by their stage or rule: 'failed: probe: unreadable container: /x.mp4: ...'
    -> 'failed: probe', 'filtered: below 720p: displayed 640x360' -> 'filtered: below 720p'. Reasons name
    the stage or rule before the first colon (hdvg.process, hdvg.filtering); the rest is per video. A
    download keeps its classification too ('download: private: ...' -> 'failed: download: private'):
    at YouTube scale, why sources are gone is the chart's point."""
    parts = [p.strip() for p in (reason or "no reason recorded").split(":", 2)]
    if parts[0] == "download" and len(parts) == 3:
        return f"{status}: download: {parts[1]}"
    return f"{status}: {parts[0]}"


def _sum(table: pa.Table, column: str, where=None) -> float:
    values = table[column] if where is None else table.filter(where)[column]
    return float(pc.sum(values).as_py() or 0) if len(values) else 0.0


@dataclass
class VideoTally:
    videos: int = 0
    by_status: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)   # "status: reason" of every video not ok
    clips: int = 0
    seconds_in: float = 0.0                             # probed duration of every input video
    seconds_in_ok: float = 0.0
    seconds_out: float = 0.0                            # seconds kept in clips
    duplicates: int = 0                                 # duplicate input lines (rows apart from the videos)

    def add(self, table: pa.Table) -> "VideoTally":
        """Count the rows of `table` (TALLY_COLUMNS at least), each row one video."""
        if not table.num_rows:
            return self
        self.videos += table.num_rows
        for r in table.group_by("status").aggregate([("video_id", "count")]).to_pylist():
            self.by_status[r["status"]] += r["video_id_count"]
        not_ok = table.filter(pc.not_equal(table["status"], STATUS_OK))
        for r in not_ok.group_by(["status", "reason"]).aggregate([("video_id", "count")]).to_pylist():
            self.reasons[f"{r['status']}: {r['reason']}"] += r["video_id_count"]
        self.clips += int(_sum(table, "num_clips"))
        self.seconds_in += _sum(table, "duration")
        self.seconds_in_ok += _sum(table, "duration", pc.equal(table["status"], STATUS_OK))
        self.seconds_out += _sum(table, "clip_seconds")
        return self

    @classmethod
    def of_parts(cls, table: pa.Table | None) -> "VideoTally":
        """The tally of a whole videos table in part order: each video by its latest row."""
        tally = cls()
        if table is not None:
            latest, tally.duplicates = latest_rows(table)
            tally.add(latest)
        return tally

    def groups(self) -> Counter:
        """Videos per reason group (reason_group) of the videos not ok."""
        out: Counter = Counter()
        for key, n in self.reasons.items():
            status, _, reason = key.partition(": ")
            out[reason_group(status, None if reason == "None" else reason)] += n
        return out
