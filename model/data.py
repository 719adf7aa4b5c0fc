"""The shard loader of every model: WebDataset tars of the curation contract (`hdvg.contract`), read straight
from `OUT/shards/*.tar` (local, `s3://`/`gs://` through `pyarrow.fs`, or `pipe:CMD`), MP4 bytes decoded with
PyAV in the loader workers.

Three uses, one reader:

* **Video diffusion training** — `ShardStream(sets, VideoClips(...), batch_size, seed)` wrapped by
  `train_loader(...)`: an endless stream per (rank, worker); shards resampled at random per shard set, sets
  mixed by weight (`ShardSet("OUT/shards/*.tar", 0.7)`), a shuffle buffer, then decoding. A video sample is
  `num_frames` frames at `frame_stride` from a random start, resized to cover `width x height` and
  centre-cropped (paper: 16 x 344 x 192); its caption comes from `txt`. An image sample (img2dataset layout,
  `jpg` + `txt`, no `mp4`) is one frame; images with width/height below 4:3 are dropped. Batches hold one
  kind (all videos or all images), so the U-Net runs a batch either with or without its temporal modules.
* **Super-resolution training** — the same `ShardStream` with `SRPatches(num_frames, crop)`: `num_frames`
  distinct random frames of a clip at native resolution, each with its own random `crop x crop` patch; no
  caption needed.
* **Evaluation** — `iter_clips(pattern, num_frames=16, size=None)`: each clip once, in shard order (no
  resampling, no shuffle; split by node and worker under torchrun or in a DataLoader), its central
  `num_frames` frames as uint8, full frame or resized-and-cropped, with its clip_id and caption. A clip too
  short or undecodable raises there: an evaluation set must not silently shrink.
(`model.latents` builds latent shards from these pieces; its `LatentClips` feeds them to `ShardStream`.)

Training skips bad samples and counts them by reason (`SKIP_REASONS`), never crashing; every batch carries
its worker's cumulative counts and its data position. The stream of a (seed, rank, worker) is a pure function
of those numbers and every sample draws its randomness from its own position, so a resumed run that
fast-forwards `positions` (reading tar members, decoding nothing) sees exactly the batches an uninterrupted
run would have seen.

Plain functions, testable alone: `expand_shards`, `frame_indices`, `central_indices`, `decode_frames`,
`resize_center_crop`, `iter_tar_samples`.
"""
from __future__ import annotations

import fnmatch
import glob
import io
import json
import math
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import av
import numpy as np
from PIL import Image

from hdvg.contract import clip_id_of_key

# Why a training sample was not used; each counted, never raised.
SKIP_REASONS = ("undecodable", "too_short", "uncaptioned", "image_aspect", "unreadable_shard", "no_media",
                "where")  # where: left out by the set's data.where, before decoding


class SkipSample(Exception):
    """A sample that cannot serve; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class ClipTooShort(SkipSample):
    def __init__(self, detail: str):
        super().__init__("too_short", detail)


class Undecodable(SkipSample):
    def __init__(self, detail: str):
        super().__init__("undecodable", detail)


# ---------------------------------------------------------------------------------------------- shard lists

def expand_shards(pattern: str) -> list[str]:
    """Shard URLs of a pattern: brace ranges (`{000000..000099}`), then a glob over a local folder or an
    object-store prefix; `pipe:` commands pass through. Sorted; an empty match is an error."""
    from braceexpand import braceexpand

    urls: list[str] = []
    for p in braceexpand(pattern):
        if p.startswith("pipe:"):
            urls.append(p)
        elif "://" in p and not p.startswith("file://"):
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(p)
            if glob.has_magic(path):
                folder, scheme = path.rsplit("/", 1)[0], p.split("://", 1)[0]
                infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
                urls += [f"{scheme}://{i.path}" for i in infos
                         if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, path)]
            else:
                urls.append(p)
        else:
            local = p.removeprefix("file://")
            urls += glob.glob(local) if glob.has_magic(local) else [local]
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern!r}")
    return sorted(set(urls))


def open_shard(url: str):
    """A binary stream of one shard."""
    if url.startswith("pipe:"):
        from webdataset.gopen import gopen

        return gopen(url, "rb")
    if "://" in url and not url.startswith("file://"):
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(url)
        return fs.open_input_stream(path)
    return open(url.removeprefix("file://"), "rb")


def iter_tar_samples(urls: Iterable[str], on_error: Callable[[str, Exception], None] | None = None
                     ) -> Iterator[dict]:
    """Samples (dicts of member bytes by extension, plus `__key__` and `__url__`) of the shards in order.
    A shard that cannot be opened or read is reported to `on_error` and the next one goes on."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def report(url, exc):
        if on_error is None:
            raise exc
        on_error(url, exc)

    for url in urls:
        try:
            stream = open_shard(url)
        except Exception as exc:  # noqa: BLE001 - recorded by the caller
            report(url, exc)
            continue
        try:
            yield from group_by_keys(tar_file_expander([{"url": url, "stream": stream}]))
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt tar ends that shard only
            report(url, exc)
        finally:
            stream.close()


# ------------------------------------------------------------------------------------------- frame choice

def frame_indices(total: int, num: int, stride: int, rng: np.random.Generator) -> list[int]:
    """`num` frame numbers `stride` apart from a random start, within `total` decoded frames."""
    span = (num - 1) * stride + 1
    if total < span:
        raise ClipTooShort(f"{total} frames < {num} frames at stride {stride} ({span})")
    start = int(rng.integers(0, total - span + 1))
    return list(range(start, start + span, stride))


def central_indices(total: int, num: int) -> list[int]:
    """The `num` consecutive central frame numbers of a clip of `total` frames."""
    if total < num:
        raise ClipTooShort(f"{total} frames < {num}")
    start = (total - num) // 2
    return list(range(start, start + num))


def random_indices(total: int, num: int, rng: np.random.Generator) -> list[int]:
    """`num` distinct random frame numbers, sorted (decoding goes forward once)."""
    if total < num:
        raise ClipTooShort(f"{total} frames < {num}")
    return sorted(int(i) for i in rng.choice(total, size=num, replace=False))


# --------------------------------------------------------------------------------------------- decoding

def cover_size(width: int, height: int, out_w: int, out_h: int) -> tuple[int, int]:
    """The smallest size of the same aspect that covers out_w x out_h (then centre-cropped to it)."""
    scale = max(out_w / width, out_h / height)
    return max(out_w, math.ceil(width * scale - 1e-6)), max(out_h, math.ceil(height * scale - 1e-6))


def center_crop(frames: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """(N, H, W, 3) -> (N, out_h, out_w, 3), centred."""
    h, w = frames.shape[1:3]
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return frames[:, top:top + out_h, left:left + out_w]


def resize_center_crop(frames: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """Resize uint8 (N, H, W, 3) frames to cover out_w x out_h (area filter), then centre-crop."""
    h, w = frames.shape[1:3]
    size = cover_size(w, h, out_w, out_h)
    resized = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BOX)) for f in frames])
    return center_crop(resized, out_w, out_h)


# Decode order runs at most this many frames off presentation order (H.264's 16-frame reorder limit).
REORDER_MARGIN = 16


class VideoBytes:
    """One MP4 in memory. Demuxing is cheap and done once: it numbers the frames (presentation order = the
    contract's decoded-frame numbers) and finds the keyframes, so decoding starts at the last keyframe
    before the first wanted frame and stops after the last one."""

    def __init__(self, data: bytes):
        try:
            # the container is forced: a JPEG stored as `.mp4` must fail here, not decode as one frame
            self._container = av.open(io.BytesIO(data), format="mp4")
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = 1  # one loader worker per core
            self._packets = [p for p in self._container.demux(self._stream) if p.size > 0]
        except (av.FFmpegError, IndexError, ValueError) as exc:
            raise Undecodable(str(exc)) from exc
        if not self._packets:
            raise Undecodable("no video packets")
        pts = [p.pts for p in self._packets]
        self._exact = None not in pts
        self._pts = sorted(pts) if self._exact else []  # presentation order: frame number -> pts
        self._rank = {t: i for i, t in enumerate(self._pts)}
        self.frames_decoded = 0

    @property
    def num_frames(self) -> int:
        return len(self._packets)

    @property
    def size(self) -> tuple[int, int]:
        return self._stream.codec_context.width, self._stream.codec_context.height

    def _start_packet(self, first: int) -> int:
        if not self._exact:
            return 0
        target = self._pts[first]
        start = 0
        for i, p in enumerate(self._packets):
            if p.is_keyframe and p.pts <= target:
                start = i
        return start

    def decode(self, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames `indices` (sorted decoded-frame numbers) as uint8 (N, H, W, 3), scaled to `size`
        (width, height) by swscale when given."""
        wanted = set(indices)
        if max(wanted) >= self.num_frames:
            raise ClipTooShort(f"frame {max(wanted)} of {self.num_frames}")
        width, height = size or self.size
        try:
            got = self._decode(wanted, width, height, skip_before=self._exact)
            if len(got) != len(wanted) and self._exact:  # a frame reordered past the margin: decode them all
                got = self._decode(wanted, width, height, skip_before=False)
        except av.FFmpegError as exc:
            raise Undecodable(str(exc)) from exc
        if len(got) != len(wanted):
            raise Undecodable(f"decoded {len(got)} of {len(wanted)} wanted frames")
        return np.stack([got[i] for i in indices])

    def _decode(self, wanted: set[int], width: int, height: int, skip_before: bool) -> dict[int, np.ndarray]:
        """Decode from the last keyframe before the first wanted frame. With `skip_before`, frames no other
        frame references (B-frames) are not decoded until REORDER_MARGIN frames before the first wanted one."""
        codec = self._stream.codec_context
        codec.flush_buffers()
        first = min(wanted)
        resume_pts = self._pts[max(0, first - REORDER_MARGIN)] if skip_before else None
        codec.skip_frame = "NONREF" if skip_before and first > REORDER_MARGIN else "DEFAULT"
        got: dict[int, np.ndarray] = {}
        number = -1
        for packet in [*self._packets[self._start_packet(first):], None]:
            if resume_pts is not None and packet is not None and packet.pts >= resume_pts:
                codec.skip_frame, resume_pts = "DEFAULT", None
            for frame in codec.decode(packet):
                self.frames_decoded += 1
                number = self._rank.get(frame.pts, -1) if self._exact else number + 1
                if number in wanted:
                    got[number] = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
            if len(got) == len(wanted):
                break
        return got

    def close(self) -> None:
        self._container.close()


def decode_frames(mp4_bytes: bytes, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
    """Frames `indices` of an MP4 as uint8 (N, H, W, 3), optionally scaled to size=(width, height)."""
    video = VideoBytes(mp4_bytes)
    try:
        return video.decode(indices, size)
    finally:
        video.close()


def caption_of(sample: dict) -> str | None:
    """The clip's caption (`txt`, empty or absent when uncaptioned)."""
    text = sample.get("txt", b"").decode("utf-8").strip()
    return text or None


def training_text(sample: dict, uncaptioned: str, stats: Counter) -> str:
    """The text a training sample is conditioned on: its caption; for an uncaptioned clip a skip
    (`uncaptioned="skip"`) or the empty text (`"empty"`, counted), as classifier-free guidance trains."""
    caption = caption_of(sample)
    if caption is None:
        if uncaptioned == "skip":
            raise SkipSample("uncaptioned", sample["__key__"])
        stats["uncaptioned_empty_text"] += 1
    return caption or ""


def clip_id_of(sample: dict) -> str:
    if "json" in sample:
        meta = json.loads(sample["json"])
        if meta.get("clip_id"):
            return meta["clip_id"]
    return clip_id_of_key(sample["__key__"])


# ------------------------------------------------------------------------------- what a sample becomes

@dataclass(frozen=True)
class VideoClips:
    """Video diffusion samples: `num_frames` at `frame_stride` from a random start, cover-resized and
    centre-cropped to width x height; images (jpg without mp4) as one frame."""
    num_frames: int = 16
    frame_stride: int = 1
    width: int = 344
    height: int = 192
    uncaptioned: str = "skip"        # "skip" (counted) or "empty" (trained with empty text)
    min_image_aspect: float = 4 / 3  # images narrower than 4:3 are dropped (appendix C.3)

    def __post_init__(self):
        if self.uncaptioned not in ("skip", "empty"):
            raise ValueError(f"uncaptioned must be 'skip' or 'empty', not {self.uncaptioned!r}")

    def kind(self, sample: dict) -> str:
        return "video" if "mp4" in sample else "image"

    def __call__(self, sample: dict, rng: np.random.Generator, stats: Counter) -> dict:
        caption = training_text(sample, self.uncaptioned, stats)
        if "mp4" in sample:
            video = VideoBytes(sample["mp4"])
            try:
                indices = frame_indices(video.num_frames, self.num_frames, self.frame_stride, rng)
                w, h = video.size
                frames = video.decode(indices, cover_size(w, h, self.width, self.height))
            finally:
                stats["frames_decoded"] += video.frames_decoded
                stats["frames_used"] += self.num_frames
                video.close()
            frames = center_crop(frames, self.width, self.height)
        elif "jpg" in sample:
            image = _open_image(sample["jpg"])
            if image.width < self.min_image_aspect * image.height:
                raise SkipSample("image_aspect", f"{image.width}x{image.height}")
            frames = resize_center_crop(np.asarray(image)[None], self.width, self.height)
        else:
            raise SkipSample("no_media", sample["__key__"])
        return {"frames": frames, "caption": caption, "clip_id": clip_id_of(sample)}


@dataclass(frozen=True)
class SRPatches:
    """Super-resolution samples: `num_frames` distinct random frames at native resolution, each with its
    own random `crop x crop` patch. Frames smaller than the crop are skipped as too short."""
    num_frames: int = 4
    crop: int = 256

    def kind(self, sample: dict) -> str:
        return "video"

    def __call__(self, sample: dict, rng: np.random.Generator, stats: Counter) -> dict:
        if "mp4" not in sample:
            raise SkipSample("no_media", sample["__key__"])
        video = VideoBytes(sample["mp4"])
        try:
            w, h = video.size
            if w < self.crop or h < self.crop:
                raise ClipTooShort(f"{w}x{h} frames < crop {self.crop}")
            frames = video.decode(random_indices(video.num_frames, self.num_frames, rng))
        finally:
            stats["frames_decoded"] += video.frames_decoded
            stats["frames_used"] += self.num_frames
            video.close()
        tops = rng.integers(0, h - self.crop + 1, size=self.num_frames)
        lefts = rng.integers(0, w - self.crop + 1, size=self.num_frames)
        patches = np.stack([f[t:t + self.crop, l:l + self.crop] for f, t, l in zip(frames, tops, lefts)])
        return {"frames": patches, "caption": caption_of(sample) or "", "clip_id": clip_id_of(sample)}


def _open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        return image.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad bytes
        raise Undecodable(f"image: {exc}") from exc


# ------------------------------------------------------------------------------------ training stream

@dataclass(frozen=True)
class ShardSet:
    """One shard set of a mixture (`pattern` as `expand_shards` reads it), its sampling weight, and a
    read-time filter: a DuckDB predicate over the index and score tables of the OUT the shards are in
    (`hdvg.query`), or None for every clip."""
    pattern: str
    weight: float = 1.0
    where: str | None = None


def selected_keys(urls: list[str], where: str) -> dict[str, frozenset[str]]:
    """{shard url: keys of its clips `where` keeps} for the shards of one curated OUT (OUT/shards/*.tar, on a
    local disk or in object storage); a shard with none selected is left out."""
    from hdvg.query import selected_keys as query
    from hdvg.storage import is_remote

    def out_and_name(url: str) -> tuple[str, str]:
        if is_remote(url):
            folder, _, name = url.rpartition("/")
            return folder.rpartition("/")[0], name
        path = Path(url).resolve()
        return str(path.parent.parent), path.name

    located = [out_and_name(u) for u in urls]
    outs = {out for out, _ in located}
    if len(outs) != 1 or any(u.startswith("pipe:") for u in urls):
        raise ValueError(f"data.where needs the shards of one curated OUT (OUT/shards/*.tar), got {urls[:3]}")
    keys = query(outs.pop(), where)
    return {u: frozenset(keys[name]) for u, (_, name) in zip(urls, located) if keys.get(name)}


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer of `size` items: each item out is a uniformly random one of the buffer."""
    buffer = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        yield buffer[i]
        buffer[i] = item
    rng.shuffle(buffer)
    yield from buffer


class ShardStream:
    """An endless stream of batches for one rank; `train_loader` runs a copy in each DataLoader worker,
    seeded by (seed, rank, worker), so ranks and workers read different samples without a shard split.
    Raw samples are drawn from the shard sets by weight, each set's shards resampled at random, through a
    shuffle buffer of raw bytes; `make_sample` (`VideoClips`, `SRPatches`, `LatentClips`) then decodes each
    with its own generator, seeded by its position.

    A batch: {"frames": uint8 (B, F, H, W, 3), "caption": [str], "clip_id": [str], "kind": "video"|"image",
    "worker": w, "position": samples this worker has drawn so far, "resume_at": [position, [positions of the
    samples held in a partly filled batch of the other kind]], "counts": {reason: n, "frames_decoded",
    "frames_used", "samples"}} (counts cumulative for the worker since this stream started).

    `positions[w]` (a batch's `resume_at`, or its `position` when one kind is drawn) fast-forwards worker w
    without decoding, except the held samples, made again from their positions: the resumed stream yields
    exactly the batches that follow, partial batches of mixed kinds included."""

    def __init__(self, sets: list[ShardSet], make_sample, batch_size: int, seed: int = 0,
                 shuffle_buffer: int = 100, rank: int = 0, positions: list[int] | None = None,
                 max_skips_in_a_row: int = 1000):
        if not sets:
            raise ValueError("ShardStream needs at least one shard set")
        if any(s.weight <= 0 for s in sets):
            raise ValueError(f"shard set weights must be > 0: {[s.weight for s in sets]}")
        self.patterns = [s.pattern for s in sets]
        self.urls = [expand_shards(s.pattern) for s in sets]  # fails early on an empty pattern
        # per set, None or {url: selected keys}: shards without a selected clip are never opened
        self.keys = [selected_keys(urls, s.where) if s.where else None for s, urls in zip(sets, self.urls)]
        for i, keys in enumerate(self.keys):
            if keys is not None:
                if not keys:
                    raise ValueError(f"data.where {sets[i].where!r} selects no clip of {sets[i].pattern!r}")
                self.urls[i] = [u for u in self.urls[i] if u in keys]
        weights = np.array([s.weight for s in sets], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.make_sample, self.batch_size, self.seed = make_sample, batch_size, seed
        self.shuffle_buffer, self.rank = shuffle_buffer, rank
        self.positions, self.max_skips_in_a_row = positions, max_skips_in_a_row

    def _raw(self, worker: int, stats: Counter) -> Iterator[dict]:
        """Raw samples of this worker: shard sets mixed by weight, shards resampled at random."""
        base = (self.seed, self.rank, worker)

        def endless(set_index: int) -> Iterator[dict]:
            rng = np.random.default_rng([*base, 1, set_index])
            urls = self.urls[set_index]

            def on_error(url, exc):
                stats["unreadable_shard"] += 1
                warnings.warn(f"shard {url} unreadable: {exc}", stacklevel=2)

            keys = self.keys[set_index]
            empty_in_a_row = 0
            while True:
                empty_in_a_row += 1
                url = urls[int(rng.integers(len(urls)))]
                for sample in iter_tar_samples([url], on_error):
                    empty_in_a_row = 0
                    if keys is not None and sample["__key__"] not in keys[url]:
                        stats["where"] += 1  # not selected by data.where: skipped before any decoding
                        continue
                    yield sample
                if empty_in_a_row > 10 * len(urls):  # every shard keeps failing: stop, do not spin
                    raise RuntimeError(f"no readable sample in {self.patterns[set_index]!r}")

        sources = [endless(i) for i in range(len(self.urls))]
        mix = np.random.default_rng([*base, 2])
        while True:
            yield next(sources[int(mix.choice(len(sources), p=self.probs))])

    def __iter__(self) -> Iterator[dict]:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.positions is not None and len(self.positions) != num_workers:
            raise ValueError(f"data position saved with {len(self.positions)} loader workers, resumed with "
                             f"{num_workers}: resume with the same data.num_workers (or data.resume=reseed)")
        stats: Counter = Counter()
        raw = _shuffled(self._raw(worker, stats), self.shuffle_buffer,
                        np.random.default_rng([self.seed, self.rank, worker, 3]))
        saved = self.positions[worker] if self.positions is not None else 0
        position, held = (saved, []) if isinstance(saved, int) else (int(saved[0]), set(saved[1]))
        pending: dict[str, list[dict]] = {}  # kind -> items of its partly filled batch
        held_at: dict[str, list[int]] = {}  # kind -> their positions
        for at in range(1, position + 1):  # fast-forward: tar members read, nothing decoded but held samples
            sample = next(raw)
            if at in held:  # counted when first drawn: made again outside this stream's counts
                kind = self.make_sample.kind(sample)
                pending.setdefault(kind, []).append(self._make(sample, worker, at, Counter()))
                held_at.setdefault(kind, []).append(at)
        skipped_in_a_row = 0
        for sample in raw:
            position += 1
            try:
                item = self._make(sample, worker, position, stats)
            except SkipSample as skip:
                stats[skip.reason] += 1
                skipped_in_a_row += 1
                if skipped_in_a_row == self.max_skips_in_a_row:  # a stream that can never yield: say why
                    raise RuntimeError(f"{skipped_in_a_row} samples in a row unusable, counts {dict(stats)}"
                                       + (" (uncaptioned shards: data.uncaptioned=empty trains them with empty"
                                          " text)" if stats["uncaptioned"] else ""))
                continue
            skipped_in_a_row = 0
            stats["samples"] += 1
            kind = self.make_sample.kind(sample)
            group = pending.setdefault(kind, [])
            group.append(item)
            held_at.setdefault(kind, []).append(position)
            if len(group) == self.batch_size:
                pending[kind], held_at[kind] = [], []
                held = sorted(p for ps in held_at.values() for p in ps)  # the other kind's partial batch
                yield {"frames": np.stack([g["frames"] for g in group]), "caption": [g["caption"] for g in group],
                       "clip_id": [g["clip_id"] for g in group], "kind": kind, "worker": worker,
                       "position": position, "resume_at": [position, held], "counts": dict(stats)}

    def _make(self, sample: dict, worker: int, position: int, stats: Counter) -> dict:
        """One training item; its random start and crop come from a generator seeded by its position."""
        return self.make_sample(sample, np.random.default_rng([self.seed, self.rank, worker, 4, position]), stats)


def train_loader(stream: ShardStream, num_workers: int):
    """A DataLoader over the stream's own batches (workers decode; uint8 frames cross the process
    boundary, 4x lighter than float)."""
    from torch.utils.data import DataLoader, IterableDataset

    class _Iterable(IterableDataset):
        def __iter__(self):
            return iter(stream)

    return DataLoader(_Iterable(), batch_size=None, num_workers=num_workers,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


# ------------------------------------------------------------------------- evaluation, one pass in order

@dataclass
class Clip:
    clip_id: str
    caption: str | None
    frames: np.ndarray  # uint8 (F, H, W, 3)


def iter_clips(pattern: str | list[str], num_frames: int = 16, size: tuple[int, int] | None = None,
               split: bool = True, short_clips: list[str] | None = None) -> Iterator[Clip]:
    """Each clip once, in shard order: its central `num_frames` frames (uint8), full frame or resized to
    cover size=(width, height) and centre-cropped. Under torchrun / in DataLoader workers the shards are
    split by node then worker (`split=False` reads all). Raises `ClipTooShort` / `Undecodable` naming the
    clip: an evaluation set must not silently lose clips. Given a `short_clips` list, a clip under
    `num_frames` frames is left out and its id appended there instead (FVD's reference set, appendix D.3)."""
    from webdataset import split_by_node, split_by_worker

    urls = expand_shards(pattern) if isinstance(pattern, str) else list(pattern)
    if split:
        urls = list(split_by_worker(split_by_node(urls)))
    for sample in iter_tar_samples(urls):
        if "mp4" not in sample:
            continue
        clip_id = clip_id_of(sample)
        try:
            video = VideoBytes(sample["mp4"])
            try:
                indices = central_indices(video.num_frames, num_frames)
                scaled = cover_size(*video.size, *size) if size else None
                frames = video.decode(indices, scaled)
            finally:
                video.close()
        except SkipSample as exc:
            if short_clips is not None and isinstance(exc, ClipTooShort):
                short_clips.append(clip_id)
                continue
            raise type(exc)(f"clip {clip_id}: {exc}") from exc
        if size:
            frames = center_crop(frames, *size)
        yield Clip(clip_id, caption_of(sample), frames)
