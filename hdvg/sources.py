"""Inputs: list the videos of a directory, manifest, HD-VILA-100M part file or HD-VG-130M json as
`WorkItem`s, and `fetch` one to a local file (in place, from a mirror, or downloaded with yt-dlp).

Ids and URLs from metadata are untrusted: YouTube ids are checked against the strict 11-character pattern
before any URL or mirror path is built from them, and no file name is ever derived from an id.
"""
from __future__ import annotations

import csv
import json
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from hdvg.config import ConfigError, SourceConfig
from hdvg.download import DownloadFailed, RateLimiter, download
from hdvg.metadata import (RELEASE_HDVG, HdvilaClip, ReleasedScene, VideoRecord, is_youtube_id, read_hdvg,
                           read_hdvila, sniff, sniff_head)
from hdvg.storage import Store, is_remote

VIDEO_EXTENSIONS = {".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv", ".m4v", ".ts", ".mts", ".mpg", ".mpeg",
                    ".wmv", ".3gp", ".ogv"}
MANIFEST_EXTENSIONS = (".txt", ".csv", ".jsonl", ".parquet")
YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "youtu.be"}
RATE_STATE = "hdvg-download-slots"  # the node's rate-limit state, beside the video scratch folders


class FetchError(Exception):
    """The source could not be brought to a local file; the message is the recorded reason. A download
    (yt-dlp or mirror) failure carries its `classification` (see hdvg.download) and attempts; a local path
    given by the user that is missing has none: there is nothing to classify."""

    def __init__(self, classification: str | None, message: str, attempts: int | None = None):
        super().__init__(f"{classification}: {message}" if classification else message)
        self.classification, self.attempts = classification, attempts


@dataclass(frozen=True)
class WorkItem:
    video_id: str
    source: str  # a local path or a file://, http(s):// or YouTube URL
    clips: tuple[HdvilaClip, ...] = ()         # HD-VILA spans scenes are restricted to (empty: whole video)
    scenes: tuple[ReleasedScene, ...] = ()     # released scenes to cut as they are (rebuild mode)
    release: str | None = None                 # name of the release the scenes and captions come from
    problem: str | None = None                 # the input record is unusable: recorded, nothing fetched
    not_video: str | None = None               # a file that is no video: recorded as filtered with this reason


@dataclass
class Fetched:
    path: Path
    meta: dict = field(default_factory=dict)   # title, channel, ... (SOURCE_META_FIELDS) where known
    format: str | None = None                  # the format yt-dlp chose
    attempts: int | None = None                # download attempts, where downloaded


def youtube_url(video_id: str) -> str:
    if not is_youtube_id(video_id):
        raise ValueError(f"invalid YouTube id {video_id!r}")
    return f"https://www.youtube.com/watch?v={video_id}"


def is_youtube_source(source: str) -> bool:
    return urllib.parse.urlparse(source).hostname in YOUTUBE_HOSTS


def _video_id_of(source: str) -> str:
    parsed = urllib.parse.urlparse(source)
    if is_youtube_source(source):  # watch?v=<id> or youtu.be/<id>
        return urllib.parse.parse_qs(parsed.query).get("v", [parsed.path.strip("/")])[0]
    return Path(parsed.path if "://" in source else source).stem or "video"


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
                        raise ConfigError(f"invalid configuration:\n  input: {manifest}:{n}: not JSON ({exc})") from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(manifest).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    else:
        raise ConfigError(f"invalid configuration:\n  input: unsupported manifest type {suffix!r} (use one of {MANIFEST_EXTENSIONS}, "
                         "an HD-VILA-100M part file or an HD-VG-130M json)")


def _manifest_items(root: Path) -> Iterator[WorkItem]:
    for n, row in enumerate(_rows(root), 1):
        source = row.get("path") or row.get("url")
        if not source:
            raise ConfigError(f"invalid configuration:\n  input: {root} row {n} has neither 'path' nor 'url': {row}")
        source = str(source)
        if "://" not in source and not Path(source).is_absolute():
            source = str((root.parent / source))
        yield WorkItem(video_id=str(row.get("video_id") or _video_id_of(source)), source=source)


def _record_item(record: VideoRecord, release: str | None, cfg: SourceConfig) -> WorkItem:
    if record.problem:
        return WorkItem(record.video_id, source="", problem=record.problem)
    clips = record.clips if (cfg.hdvila_spans or record.scenes) else ()
    return WorkItem(record.video_id, youtube_url(record.video_id), clips=clips, scenes=record.scenes,
                    release=release)


def _file_item(relative: str, source: str) -> WorkItem:
    """The item of a file found under an input folder: its id is its path below the folder without the
    extension (`a/0001`), so that files of the same name in different folders stay apart; a file whose
    extension is no video's gets a row too (filtered), so that every input file has one."""
    suffix = Path(relative).suffix.lower()
    video_id = relative[:-len(suffix)] if suffix else relative
    if suffix in VIDEO_EXTENSIONS:
        return WorkItem(video_id=video_id, source=source)
    return WorkItem(video_id=relative, source=source, not_video=f"not a video file ({suffix or 'no extension'})")


def _walk(root: Path) -> Iterator[Path]:
    """Files below `root`, depth first in name order, one folder listed at a time (never the whole tree)."""
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    for p in entries:
        if p.is_dir():
            yield from _walk(p)
        elif p.is_file():
            yield p


def _all_items(root: Path, cfg: SourceConfig) -> Iterator[WorkItem]:
    if root.is_dir():
        for p in _walk(root):
            yield _file_item(p.relative_to(root).as_posix(), str(p))
        return
    if not root.is_file():
        raise ConfigError(f"invalid configuration:\n  input: {root} is neither a directory nor a manifest file")
    kind = sniff(root)
    if kind == "hdvila":
        yield from (_record_item(r, None, cfg) for r in read_hdvila(root))
    elif kind == "hdvg":
        yield from (_record_item(r, RELEASE_HDVG, cfg) for r in read_hdvg(root))
    else:
        yield from _manifest_items(root)


def is_release_input(spec: str | Path) -> bool:
    """Whether `spec` is released metadata that carries its own captions (the HD-VG-130M json)."""
    if is_remote(str(spec)):
        store = Store(spec)
        if store.fs.get_file_info(store.root).type != pafs.FileType.File:
            return False
        with store.fs.open_input_stream(store.root) as f:
            return sniff_head(f.read(1 << 16), Path(store.root).suffix) == "hdvg"
    path = Path(spec)
    return path.is_file() and sniff(path) == "hdvg"


def _remote_items(uri: str, cfg: SourceConfig) -> Iterator[WorkItem]:
    """An object-storage input: a prefix of videos, or a manifest/metadata file read from a local copy."""
    store = Store(uri)
    info = store.fs.get_file_info(store.root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"invalid configuration:\n  input: {uri} does not exist")
    if info.type == pafs.FileType.Directory:
        selector = pafs.FileSelector(store.root, recursive=True)
        files = sorted(i.path for i in store.fs.get_file_info(selector) if i.type == pafs.FileType.File)
        for path in files:
            relative = path[len(store.root.rstrip("/")) + 1:]
            yield _file_item(relative, f"{uri.rstrip('/')}/{relative}")
        return
    with tempfile.TemporaryDirectory(prefix="hdvg-input-") as tmp:
        local = Path(tmp) / Path(store.root).name
        with store.fs.open_input_stream(store.root) as src, local.open("wb") as out:
            shutil.copyfileobj(src, out, length=8 << 20)
        yield from _all_items(local, cfg)


def list_inputs(spec: str | Path, cfg: SourceConfig | None = None) -> Iterator[WorkItem]:
    """Files of a directory (recursively, sorted; ids from the path below it; files that are no video by
    their extension become filtered rows), rows of a manifest (`path` or `url`, and
    optionally `video_id`; relative paths are relative to the manifest), videos of an HD-VILA-100M part
    file or of an HD-VG-130M json (both recognised by content); `spec` may be an s3:// or gs:// prefix or
    file. With `cfg.parts` > 1 only every `parts`-th video from `part` on, so that jobs split one input."""
    cfg = cfg or SourceConfig()
    items = _remote_items(str(spec), cfg) if is_remote(str(spec)) else _all_items(Path(spec), cfg)
    for n, item in enumerate(items):
        if n % cfg.parts == cfg.part:
            yield item


def count_inputs(spec: str | Path, cfg: SourceConfig | None = None) -> int:
    """How many items `list_inputs(spec, cfg)` yields, for the progress line's total and ETA: a parquet
    manifest's row count from its metadata, a text manifest's lines, a local folder's files; released
    metadata (HD-VILA-100M, HD-VG-130M) and object-storage inputs are listed through `list_inputs` itself."""
    cfg = cfg or SourceConfig()
    path = Path(spec)
    if is_remote(str(spec)) or not path.is_file() or path.suffix.lower() not in MANIFEST_EXTENSIONS \
            or sniff(path) is not None:
        total = sum(1 for _ in list_inputs(spec, cfg.model_copy(update={"part": 0, "parts": 1})))
    elif path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(path).metadata.num_rows
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            total = sum(1 for _ in csv.DictReader(f))
    else:  # .txt, .jsonl: one item a non-empty line (.txt comments excepted)
        with path.open() as f:
            total = sum(1 for line in f if line.strip() and not line.lstrip().startswith("#"))
    return len(range(cfg.part, total, cfg.parts))


# ---------------------------------------------------------------------------------------------------------
# Fetch

def _local_path(source: str) -> Path | None:
    """The file a plain path or file:// URL names; None for other URLs."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    return Path(source) if parsed.scheme == "" else None


def _local(path: Path, classification: str | None, what: str = "") -> Fetched:
    if not path.is_file():
        raise FetchError(classification, f"{what}no such file: {path}")
    return Fetched(path)


def _from_mirror(url: str, scratch: Path, cfg: SourceConfig) -> Fetched:
    if _local_path(url) is not None:
        return _local(_local_path(url), "not_found", "mirror: ")
    if urllib.parse.urlparse(url).scheme in ("http", "https"):
        return _downloaded(url, scratch, cfg, None)  # the user's own server: no YouTube rate limit
    return _from_object_store(url, scratch, "mirror: ")


def _from_object_store(url: str, scratch: Path, what: str = "") -> Fetched:
    """Copy an s3:// or gs:// object (pyarrow's filesystems; credentials from the environment) to scratch."""
    dest = scratch / ("source" + (Path(urllib.parse.urlparse(url).path).suffix or ".mp4"))
    try:
        fs, path = pafs.FileSystem.from_uri(url)
        with fs.open_input_stream(path) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, length=8 << 20)
    except FileNotFoundError:
        raise FetchError("not_found", f"{what}no such object: {url}") from None
    except (OSError, pa.ArrowException) as exc:  # missing buckets, denied access, network errors
        dest.unlink(missing_ok=True)
        raise FetchError("not_found" if "does not exist" in str(exc) else "mirror_error",
                         f"{what}{type(exc).__name__}: {exc}") from None
    return Fetched(dest)


def _downloaded(url: str, scratch: Path, cfg: SourceConfig, limiter: RateLimiter | None) -> Fetched:
    try:
        got = download(url, scratch, cfg, limiter)
    except DownloadFailed as exc:
        raise FetchError(exc.classification, exc.message, exc.attempts) from None
    return Fetched(got.path, got.meta, got.format, got.attempts)


def fetch(item: WorkItem, scratch: Path, cfg: SourceConfig | None = None) -> Fetched:
    """A local file holding `item`'s video. Local paths and file:// URLs are used in place (never deleted);
    YouTube videos come from `cfg.mirror` when set, else (or with `mirror_fallback`) from YouTube; other
    URLs through yt-dlp. Downloads land in the empty folder `scratch`, which the caller removes."""
    cfg = cfg or SourceConfig()
    scratch = Path(scratch)
    limiter = RateLimiter(cfg.rate_limit, scratch.parent / RATE_STATE, cfg.rate_jitter)
    if _local_path(item.source) is not None:
        return _local(_local_path(item.source), None)
    if is_youtube_source(item.source):
        if not is_youtube_id(item.video_id):
            raise FetchError("invalid_input", f"invalid YouTube id {item.video_id!r}")
        url = youtube_url(item.video_id)  # built from the checked id, never the given URL
        if cfg.mirror:
            try:
                return _from_mirror(cfg.mirror.format(video_id=item.video_id), scratch, cfg)
            except FetchError as exc:
                if exc.classification != "not_found" or not cfg.mirror_fallback:
                    raise
        return _downloaded(url, scratch, cfg, limiter)
    scheme = urllib.parse.urlparse(item.source).scheme
    if scheme in ("http", "https"):
        return _downloaded(item.source, scratch, cfg, limiter)
    if is_remote(item.source):
        return _from_object_store(item.source, scratch)
    raise FetchError("unsupported", f"unsupported URL scheme {scheme!r}")
