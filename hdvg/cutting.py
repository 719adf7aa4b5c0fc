"""`cut_video`: one decode of a source video feeds the shot detector and the clip encoders; it returns the
video's transitions and its frame-exact H.264 clips, each with its centre keyframe.

How it stays frame-exact without seeking: frames are numbered as decoded (the numbering of
`hdvg.scenes`); each clip is its own x264 encoder and MP4, opened at the clip's first frame (so the clip
starts with an IDR frame that is that frame) and closed after its last one. The detector decides a
transition some frames late (`decided`: a few frames for PySceneDetect, up to a batch of TransNetV2 windows
for TransNetV2), so frames wait in a queue until every transition up to them is known, then go to the
encoder of the clip they belong to (`ClipPlan.clip_start`; a transition's frames go to none). With the
transitions known at the end, the plan's final spans keep the clips they name (a scene shorter than the
minimum is dropped then). The frames a clip gets are also measured on the way (`hdvg.measures`: motion,
luma, statics, black bars), from small copies of a few of them.

The encoders run in their own thread: x264 and the muxer release the GIL, so decoding, detection and
scaling (this thread) overlap with encoding, and the video is decoded once instead of once to detect and
once to cut.
"""
from __future__ import annotations

import queue
import threading
from bisect import bisect_right, insort
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
from av.filter import Graph
from av.video.reformatter import VideoReformatter

from hdvg.config import ClipConfig, DetectConfig, EncodeConfig
from hdvg.keyframes import clip_keyframe
from hdvg.measures import ClipMeasures, measure_frames
from hdvg.probe import VideoInfo, run_ffprobe
from hdvg.scenes import DecodedVideo, SceneScan, Span, clip_length_limits, make_finder, scan_of, scene_spans


class CutError(Exception):
    """Cutting failed; the message is the recorded reason."""


@dataclass(frozen=True)
class CutClip:
    span: Span
    path: Path        # the clip's MP4
    keyframe: bytes   # its centre frame, JPEG
    width: int
    height: int
    measures: dict    # contract.MEASURE_FIELDS -> value (hdvg.measures)


def clip_size(width: int, height: int, max_short_side: int) -> tuple[int, int]:
    """Displayed size scaled so the short side is at most `max_short_side` (never up), even for yuv420p."""
    scale = min(1.0, max_short_side / min(width, height))
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


class ClipPlan(Protocol):
    def clip_start(self, frame: int, transitions: list[Span]) -> int | None:
        """First frame of the clip that frame `frame` goes to, knowing every transition (sorted) up to it
        (None: no clip)."""

    def spans(self, transitions: list[Span], num_frames: int) -> list[Span]:
        """The clips to keep, once the video's transitions and length are known."""


class FixedSpans:
    """Known spans (sorted, non-overlapping), e.g. the released scenes of HD-VG-130M."""

    def __init__(self, spans: list[Span]):
        self._spans, self._starts = spans, [s.start for s in spans]

    def clip_start(self, frame: int, transitions: list[Span]) -> int | None:
        k = bisect_right(self._starts, frame) - 1
        return self._starts[k] if k >= 0 and frame < self._spans[k].end else None

    def spans(self, transitions: list[Span], num_frames: int) -> list[Span]:
        return self._spans


class SceneClips:
    """The clips of the scenes the detector finds (`scene_spans`), in `regions` (sorted, disjoint; unset:
    the whole video). Every clip starts at a transition's end, a region start, or `max_clip_seconds` after a
    clip start, so it can start encoding before its scene's end is known."""

    def __init__(self, cfg: ClipConfig, fps: float, regions: list[Span] | None = None):
        self.cfg, self.fps, self.regions = cfg, fps, regions
        self.max_len = clip_length_limits(fps, cfg)[1]
        self._region_starts = [r.start for r in regions or []]

    def _region(self, frame: int) -> Span | None:
        if self.regions is None:
            return Span(0, frame + 1)
        k = bisect_right(self._region_starts, frame) - 1
        return self.regions[k] if k >= 0 and frame < self.regions[k].end else None

    def clip_start(self, frame: int, transitions: list[Span]) -> int | None:
        region = self._region(frame)
        if region is None:
            return None
        k = bisect_right(transitions, frame, key=lambda t: t.start) - 1  # the last one starting at or before it
        if k >= 0 and frame < transitions[k].end:
            return None  # a transition's frames belong to no clip
        scene = max(region.start, transitions[k].end if k >= 0 else 0)
        return scene + (frame - scene) // self.max_len * self.max_len

    def spans(self, transitions: list[Span], num_frames: int) -> list[Span]:
        if self.regions is None:
            return scene_spans(transitions, num_frames, self.fps, self.cfg)
        spans = []
        for r in self.regions:
            end = min(r.end, num_frames)
            inside = [Span(t.start - r.start, t.end - r.start)
                      for t in transitions if t.end > r.start and t.start < end]
            spans += [Span(r.start + s.start, r.start + s.end)
                      for s in scene_spans(inside, end - r.start, self.fps, self.cfg)]
        return spans


def rotation_filters(rotation: int) -> list[tuple[str, str]]:
    """Filters showing the picture as players do (ffmpeg's autorotate): `rotation` is probe's
    display-matrix angle (counter-clockwise degrees, 0/90/180/270)."""
    return {90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")],
            270: [("transpose", "clock")]}.get(rotation, [])


class FrameScaler:
    """Decoded frame -> clip frame: rotation applied, scaled (bicubic, square pixels) to the clip size,
    yuv420p. Scaling is one swscale call through a reformatter kept for the whole video (a filter graph
    costs 60% more per frame); rotated sources also go through a transpose/flip filter graph first."""

    def __init__(self, width: int, height: int, rotation: int, time_base: Fraction):
        self.width, self.height, self.time_base = width, height, time_base
        self.rotate = rotation_filters(rotation)
        self.reformatter = VideoReformatter()
        self.key, self.graph = None, None

    def _rotated(self, frame: av.VideoFrame) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name)
        if key != self.key:  # (re)built if the stream changes size or format mid-way
            graph = Graph()
            nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                      time_base=self.time_base)]
            nodes += [graph.add(name, args) for name, args in self.rotate]
            nodes.append(graph.add("buffersink"))
            graph.link_nodes(*nodes).configure()
            self.graph, self.key = graph, key
        self.graph.vpush(frame)
        return self.graph.vpull()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self.rotate:
            frame = self._rotated(frame)
        # threads=1: scaling runs beside the decoder's and x264's threads, where slices cost more
        return self.reformatter.reformat(frame, width=self.width, height=self.height, format="yuv420p",
                                         interpolation="BICUBIC", threads=1)


class ClipEncoders(threading.Thread):
    """Encodes clips one after another in a thread of its own: `open` a clip, send its frames, `close`.
    Frames keep their source timestamps, shifted to start at 0 (VFR stays VFR).

    The first error (a full disk while muxing, a muxer whose `close` fails again while moving the index to
    the front) ends the thread. Every hand-off waits for queue room in short steps and gives up as soon as
    the thread has ended, so the producer gets the error at its next call and `finish` never waits on a
    queue nobody reads."""

    HANDOFF_STEP_S = 0.1  # how often a producer waiting for queue room checks that the thread still runs

    def __init__(self, cfg: EncodeConfig, size: tuple[int, int], rate: Fraction, time_base: Fraction,
                 threads: int = 0):
        super().__init__(daemon=True)
        self.cfg, self.size, self.rate, self.time_base, self.threads = cfg, size, rate, time_base, threads
        self.frames_written: dict[Path, int] = {}
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=8)  # bounds the scaled frames waiting in memory
        self._out = None  # the MP4 being written
        self.start()

    def _failure(self) -> CutError:
        return CutError(f"encoding failed: {self.error}" if self.error is not None
                        else "encoding failed: the encoder thread ended unexpectedly")

    def _put(self, item) -> None:
        while True:
            if self.error is not None or not self.is_alive():
                raise self._failure()
            try:
                self._queue.put(item, timeout=self.HANDOFF_STEP_S)
                return
            except queue.Full:
                continue

    def open(self, path: Path) -> None:
        self._put(("open", path))

    def send(self, frame: av.VideoFrame, pts: int) -> None:
        self._put(("frame", (frame, pts)))

    def close(self) -> None:
        self._put(("close", None))

    def finish(self) -> None:
        """Wait until every clip sent is written; raises CutError if the thread failed."""
        if self.error is None and self.is_alive():
            try:
                self._put(None)
            except CutError:
                pass  # it ended meanwhile: join returns at once
        self.join()
        if self.error is not None:
            raise self._failure()

    def run(self) -> None:
        try:
            self._encode_all()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the producer's thread
            self.error = exc
            if self._out is not None:
                try:
                    self._out.close()  # a full disk makes this fail too; the clip is abandoned either way
                except Exception:  # noqa: BLE001
                    pass
                self._out = None

    def _encode_all(self) -> None:
        stream = path = first = last = None
        while (item := self._queue.get()) is not None:
            op, arg = item
            if op == "open":
                path = arg
                self._out = out = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
                stream = out.add_stream("libx264", rate=self.rate)
                stream.width, stream.height = self.size
                stream.pix_fmt = "yuv420p"
                stream.codec_context.sample_aspect_ratio = Fraction(1, 1)
                stream.time_base = stream.codec_context.time_base = self.time_base
                stream.codec_context.thread_count = self.threads
                stream.options = {"preset": self.cfg.preset, "crf": str(self.cfg.crf)}
                self.frames_written[path], first, last = 0, None, None
            elif op == "frame":
                frame, pts = arg
                first = pts if first is None else first
                # strictly increasing: a broken source timestamp must not stop the encoder
                frame.pts = pts - first if last is None else max(pts - first, last + 1)
                frame.time_base, last = self.time_base, frame.pts
                self._mux(self._out, stream.encode(frame), path)
            else:
                self._mux(self._out, stream.encode(None), path)
                self._out.close()
                self._out = None

    def _mux(self, out, packets, path: Path) -> None:
        for packet in packets:
            out.mux(packet)
            self.frames_written[path] += 1


def cut_video(src: str | Path, info: VideoInfo, plan: ClipPlan, out_dir: str | Path, cfg: EncodeConfig,
              detect: DetectConfig | None = None, threads: int = 0, predict=None) -> tuple[SceneScan, list[CutClip]]:
    """Decode `src` once; detect its transitions (if `detect`) and cut the clips of `plan` into `out_dir`.
    `threads`: of the decoder, of x264 and of a TransNetV2 on CPU each (0: FFmpeg's and x264's choice, about
    one per core of the machine); `predict`: TransNetV2 elsewhere (a GPU actor's, hdvg.pipeline)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    size = clip_size(info.width, info.height, cfg.max_short_side)
    transitions: list[Span] = []
    times: list[float] = []
    encoded: dict[int, Span] = {}   # clip start -> the frames its MP4 holds
    measured: dict[int, ClipMeasures] = {}  # clip start -> the measures of the frames it got
    small = measure_frames(info)
    with DecodedVideo(src, threads) as video:
        finder = make_finder(detect, video.rate, threads or 1, predict) if detect else None
        scaler = FrameScaler(*size, info.rotation, video.time_base)
        encoders = ClipEncoders(cfg, size, video.rate, video.time_base, threads)
        tick = 1 / (video.rate * video.time_base)  # timestamp step of a frame without one
        waiting: deque = deque()  # (frame number, frame): frames whose clip is not decided yet
        current: int | None = None
        committed = 0  # frames handed to their clip (or skipped): their transitions must all be known

        def commit(index: int, frame: av.VideoFrame) -> None:
            nonlocal current, committed
            start = plan.clip_start(index, transitions)
            if start != current:
                if current is not None:
                    encoders.close()
                if start is not None:
                    encoders.open(out / f"clip_{start:09d}.mp4")
                    measured[start] = ClipMeasures(info.fps, info.aspect, info.rotation)
                current = start
            if start is not None:
                encoders.send(scaler(frame), frame.pts if frame.pts is not None else round(index * tick))
                encoded[start] = Span(start, index + 1)
                measures = measured[start]
                measures.push(small(frame) if measures.takes_next() else None)
            committed = index + 1

        def add_transitions(found: list[Span]) -> None:
            for t in found:
                if t.start < committed:  # cannot happen: frames wait until the detector has `decided` them
                    raise CutError(f"the detector decided the transition at frames {t.start}..{t.end} after "
                                   f"frame {committed - 1} was encoded")
                insort(transitions, t, key=lambda t: t.start)

        try:
            for index, frame, t in video:
                times.append(t)
                if finder:
                    add_transitions(finder.push(index, frame))
                waiting.append((index, frame))
                while waiting and waiting[0][0] < (finder.decided if finder else index + 1):
                    commit(*waiting.popleft())
            if finder:
                add_transitions(finder.finish())
            while waiting:
                commit(*waiting.popleft())
            if current is not None:
                encoders.close()
        finally:
            encoders.finish()
    scan = scan_of(transitions, times)
    clips = []
    for span in plan.spans(scan.transitions, scan.num_frames):
        path = out / f"clip_{span.start:09d}.mp4"
        if encoded.get(span.start) != span:
            got = encoded.get(span.start, Span(span.start, span.start))
            raise CutError(f"clip {span.start}..{span.end} has {got.num_frames} frames, expected {span.num_frames}")
        if encoders.frames_written.get(path) != span.num_frames:
            raise CutError(f"clip {span.start}..{span.end}: {encoders.frames_written.get(path, 0)} frames written, "
                           f"expected {span.num_frames}")
        clips.append(CutClip(span=span, path=path, keyframe=clip_keyframe(path, span.num_frames // 2),
                             width=size[0], height=size[1], measures=measured[span.start].result()))
    kept = {c.path for c in clips}
    for path in out.glob("clip_*.mp4"):  # candidates the final plan dropped (scenes too short)
        if path not in kept:
            path.unlink()
    return scan, clips


def cut_clips(src: str | Path, info: VideoInfo, spans: list[Span], out_dir: str | Path,
              cfg: EncodeConfig, threads: int = 0) -> list[CutClip]:
    """Cut known `spans` (sorted, non-overlapping) of `src`: `cut_video` with a fixed plan."""
    return cut_video(src, info, FixedSpans(spans), out_dir, cfg, threads=threads)[1] if spans else []


def count_frames(path: str | Path) -> int:
    """Frames of the first video stream, counted by demuxing (no decode)."""
    streams = run_ffprobe(path).get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video"]
    return int(video[0].get("nb_read_packets") or 0) if video else 0
