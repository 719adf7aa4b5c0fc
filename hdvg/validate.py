"""`hdvg validate OUT`: check an output folder against the contract in `hdvg.contract`, reading the shards
through `webdataset` exactly as a trainer would."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import webdataset as wds

from hdvg.storage import Store, is_remote

from hdvg.contract import (CLIP_FIELDS, INDEX_DIR, SAMPLE_MEMBERS, SHARDS_DIR, STATS_FILE, STATUS_FAILED,
                           STATUS_FILTERED, STATUS_OK, VIDEOS_DIR, clip_id_of_key)


def validate(out: str | Path) -> tuple[list[str], dict]:
    """(problems, summary) of OUT; an object-storage OUT is checked on a local copy."""
    if is_remote(str(out)):
        with tempfile.TemporaryDirectory(prefix="hdvg-validate-") as tmp:
            return _validate(Store(out).copy_to_local(Path(tmp)))
    return _validate(Path(out))


def _rows(folder: Path, problems: list[str]) -> list[dict]:
    """Rows of every parquet part of `folder`; a part that does not read is a problem, not a crash."""
    rows: list[dict] = []
    for part in sorted(folder.glob("*.parquet")):
        try:
            rows += pq.read_table(part).to_pylist()
        except Exception as exc:  # truncated, zero length, not parquet
            problems.append(f"{folder.name}/{part.name}: unreadable ({exc})")
    return rows


def _validate(out: Path) -> tuple[list[str], dict]:
    problems: list[str] = []
    shards = sorted((out / SHARDS_DIR).glob("*.tar"))
    stray = [p.name for p in (out / SHARDS_DIR).iterdir() if p.suffix != ".tar"] if shards else []
    if stray:
        problems.append(f"non-tar files in {SHARDS_DIR}/: {stray[:5]}")
    seen: dict[str, str] = {}
    for shard in shards:
        try:
            for sample in wds.WebDataset(str(shard), shardshuffle=False):
                key = sample["__key__"]
                missing = [m for m in SAMPLE_MEMBERS if m not in sample]
                if missing:
                    problems.append(f"{shard.name}:{key}: lacks {missing}")
                    continue
                meta = json.loads(sample["json"])
                lack = [f for f in CLIP_FIELDS if f not in meta]
                if lack:
                    problems.append(f"{shard.name}:{key}: json lacks {lack}")
                if clip_id_of_key(key) != meta.get("clip_id"):
                    problems.append(f"{shard.name}:{key}: key does not round-trip to clip_id {meta.get('clip_id')}")
                if sample["txt"].decode() != (meta.get("caption") or ""):
                    problems.append(f"{shard.name}:{key}: txt differs from json caption")
                if meta.get("clip_id") in seen:
                    problems.append(f"duplicate clip_id {meta.get('clip_id')} in {seen[meta['clip_id']]} and {shard.name}")
                seen[meta.get("clip_id")] = shard.name
        except Exception as exc:  # a truncated or corrupt tar, whatever the reader raises
            problems.append(f"{shard.name}: unreadable ({exc})")
    index = _rows(out / INDEX_DIR, problems)
    if sorted(r["clip_id"] for r in index) != sorted(seen):
        problems.append(f"index has {len(index)} rows, shards {len(seen)} clips")
    for r in index:
        if seen.get(r["clip_id"]) not in (None, r["shard"]):
            problems.append(f"index row {r['clip_id']} names shard {r['shard']}, found in {seen[r['clip_id']]}")
    videos = _rows(out / VIDEOS_DIR, problems)
    ids = [v["video_id"] for v in videos if v["status"] == STATUS_OK]
    if len(ids) != len(set(ids)):  # (a duplicate *input* line is its own failed row, by design)
        problems.append("a video is committed twice in videos/")
    for v in videos:
        if v["status"] not in (STATUS_OK, STATUS_FILTERED, STATUS_FAILED):
            problems.append(f"video {v['video_id']}: status {v['status']!r}")
        if v["status"] != STATUS_OK and not v["reason"]:
            problems.append(f"video {v['video_id']}: {v['status']} without a reason")
    if not (out / STATS_FILE).exists():
        problems.append(f"{STATS_FILE} missing")
    summary = {"shards": len(shards), "clips": len(seen), "videos": len(videos),
               "problems": len(problems)}
    return problems, summary
