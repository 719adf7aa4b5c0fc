"""Inputs: list the videos of a directory or manifest as `WorkItem`s, and `fetch` one to a local file."""
from __future__ import annotations

import csv
import json
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv", ".m4v", ".ts", ".mts", ".mpg", ".mpeg",
                    ".wmv", ".3gp", ".ogv"}
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".parquet")


class FetchError(Exception):
    """The source could not be brought to a local file; the message is the recorded reason."""


@dataclass(frozen=True)
class WorkItem:
    video_id: str
    source: str  # a local path or a file://, http:// or https:// URL, as given by the user


def _video_id_of(source: str) -> str:
    name = urllib.parse.urlparse(source).path if "://" in source else source
    return Path(name).stem or "video"


def _rows(manifest: Path) -> Iterator[dict]:
    suffix = manifest.suffix.lower()
    if suffix == ".txt":
        for line in manifest.read_text().splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                yield {"path": line.strip()}
    elif suffix == ".csv":
        with manifest.open(newline="") as f:
            yield from csv.DictReader(f)
    elif suffix == ".jsonl":
        with manifest.open() as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{manifest}:{n}: not JSON ({exc})") from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(manifest).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise ValueError(f"input: unsupported manifest type {suffix!r} (use one of {MANIFEST_EXTENSIONS})")


def list_inputs(spec: str | Path) -> Iterator[WorkItem]:
    """Videos of a directory (recursively, by extension, sorted) or rows of a manifest with `path` or
    `url` and optionally `video_id`; relative manifest paths are relative to the manifest."""
    root = Path(spec)
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS:
                yield WorkItem(video_id=p.stem, source=str(p))
        return
    if not root.is_file():
        raise ValueError(f"input: {spec} is neither a directory nor a manifest file")
    for n, row in enumerate(_rows(root), 1):
        source = row.get("path") or row.get("url")
        if not source:
            raise ValueError(f"input: {root} row {n} has neither 'path' nor 'url': {row}")
        source = str(source)
        if "://" not in source and not Path(source).is_absolute():
            source = str((root.parent / source))
        yield WorkItem(video_id=str(row.get("video_id") or _video_id_of(source)), source=source)


def fetch(item: WorkItem, scratch: Path, timeout: float = 600.0) -> Path:
    """A local file holding `item`'s video. Local paths and file:// URLs are used in place (never
    deleted); http(s) URLs are downloaded into `scratch`, which the caller removes."""
    parsed = urllib.parse.urlparse(item.source)
    if parsed.scheme in ("", "file"):
        path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme == "file" else item.source)
        if not path.is_file():
            raise FetchError(f"no such file: {path}")
        return path
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"unsupported URL scheme {parsed.scheme!r}")
    dest = scratch / ("source" + (Path(parsed.path).suffix or ".mp4"))
    try:
        with urllib.request.urlopen(item.source, timeout=timeout) as resp, dest.open("wb") as out:
            shutil.copyfileobj(resp, out, length=1 << 20)
    except OSError as exc:  # URLError, HTTPError, timeouts and disk errors are all OSErrors
        dest.unlink(missing_ok=True)
        raise FetchError(f"download failed: {exc}") from None
    return dest
