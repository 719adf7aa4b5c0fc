"""Scene detection: `DecodedVideo` (one PyAV decode of a video), `SceneFinder` (PySceneDetect's detector fed
frame by frame; `hdvg.transnet.TransNetFinder` is TransNetV2's), `detect_scenes` (a decode and a finder) and
`scene_spans` (transitions -> clip spans).

A detector reports transitions as spans of frames that belong to no clip: a hard cut at frame c is the empty
span (c, c), a dissolve or fade the frames it blends. PySceneDetect reports hard cuts only.

Frames are numbered as decoded, in presentation order, from 0: the numbering of the cutter, which runs the
same decode (`hdvg.cutting`), and of every checker (`select=eq(n\\,I)` in ffmpeg). PySceneDetect's own
VideoStream numbers VFR frames by timestamp x nominal rate instead, so we decode with PyAV ourselves and
feed the detector.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from hdvg.config import ClipConfig, DetectConfig


class DecodeError(Exception):
    """The video stream cannot be decoded; the message is the recorded reason."""


@dataclass(frozen=True, order=True)
class Span:
    start: int  # first frame
    end: int    # one past the last frame

    @property
    def num_frames(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SceneScan:
    transitions: list[Span]   # sorted, disjoint; frames in them belong to no scene (a hard cut is empty)
    frame_times: np.ndarray   # seconds of each decoded frame from the first one, float64[num_frames]
    num_frames: int

    @property
    def cuts(self) -> list[int]:
        """First frame of every scene after the first."""
        return [t.end for t in self.transitions]


def hard_cuts(cuts: list[int]) -> list[Span]:
    """Cuts as transitions without frames of their own."""
    return [Span(c, c) for c in cuts]


class DecodedVideo:
    """The first video stream of `path`, decoded once: iterate for (frame number, frame, seconds since the
    first frame). Any decoder error becomes a DecodeError naming the frame it happened at. `threads`:
    decoder threads (0: FFmpeg's choice, one per core and more)."""

    def __init__(self, path: str | Path, threads: int = 0):
        try:
            self.container = av.open(str(path))
            self.stream = self.container.streams.video[0]
        except (av.FFmpegError, IndexError) as exc:
            raise DecodeError(f"undecodable video: {exc}") from None
        self.stream.thread_type = "AUTO"  # frame + slice threads, as many as `threads`
        self.stream.codec_context.thread_count = threads
        self.rate = Fraction(self.stream.guessed_rate or self.stream.average_rate or 25)
        self.time_base = self.stream.time_base or 1 / self.rate
        self.decoded = 0

    def __iter__(self) -> Iterator[tuple[int, av.VideoFrame, float]]:
        t0 = None
        try:
            for frame in self.container.decode(self.stream):
                t = frame.time
                if t is None:  # no timestamps: constant rate
                    t = self.decoded / float(self.rate)
                if t0 is None:
                    t0 = t
                yield self.decoded, frame, t - t0
                self.decoded += 1
        except av.FFmpegError as exc:
            where = f" at frame {self.decoded}" if self.decoded else ""
            raise DecodeError(f"undecodable video{where}: {exc}") from None
        if not self.decoded:
            raise DecodeError("video stream decodes to no frames")

    def __enter__(self) -> "DecodedVideo":
        return self

    def __exit__(self, *exc) -> None:
        self.container.close()


def make_detector(cfg: DetectConfig):
    if cfg.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=cfg.adaptive_threshold, min_content_val=cfg.min_content_val,
                                min_scene_len=cfg.min_scene_len)
    return ContentDetector(threshold=cfg.content_threshold, min_scene_len=cfg.min_scene_len)


def detection_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """PySceneDetect's auto-downscale: frames wider than `target_width` are brought to that width."""
    if width <= target_width:
        return width, height
    factor = width / target_width
    return int(width / factor), max(1, int(height / factor))


class SceneFinder:
    """PySceneDetect's detector fed one decoded frame at a time (`push`), then `finish`ed at the end; both
    return the cuts they decided, as empty transitions.

    A detector decides a cut a few frames after it (AdaptiveDetector compares each frame with a window
    around it; ContentDetector's flash filter may hold a cut back by up to `min_scene_len`): `lag` bounds
    that delay, so once frame n + lag has been pushed, every cut at or before n is known: `decided` is the
    first frame not yet known to be free of cuts.
    """

    def __init__(self, cfg: DetectConfig, rate: Fraction):
        self.cfg, self.rate = cfg, rate
        self.detector = make_detector(cfg)
        self.lag = (self.detector.event_buffer_length + 2) * (cfg.frame_skip + 1)
        # one reformatter for the whole video: VideoFrame.reformat builds a new swscale context per frame
        self.reformatter = VideoReformatter()
        self.timecode: FrameTimecode | None = None
        self.pushed = 0
        self.finished = False

    @property
    def decided(self) -> int:
        return self.pushed if self.finished else max(0, self.pushed - self.lag)

    def push(self, index: int, frame: av.VideoFrame) -> list[Span]:
        """Analyse frame `index`; the cuts this frame let the detector decide (earlier frame numbers)."""
        self.pushed = index + 1
        if self.cfg.frame_skip and index % (self.cfg.frame_skip + 1):
            return []
        width, height = detection_size(frame.width, frame.height, self.cfg.detect_width)
        # One swscale call (no full-size BGR copy). Point sampling matches PySceneDetect's cv2
        # INTER_LINEAR resize at these factors: it reproduces the upstream goldens, where area or
        # bilinear filtering turns slow fades into extra cuts.
        image = self.reformatter.reformat(frame, width=width, height=height, format="bgr24",
                                          interpolation="POINT").to_ndarray()
        self.timecode = FrameTimecode(index, fps=self.rate)
        return hard_cuts([c.frame_num for c in self.detector.process_frame(self.timecode, image)])

    def finish(self) -> list[Span]:
        """Cuts the detector still held back at the end of the video."""
        self.finished = True
        return hard_cuts([c.frame_num for c in self.detector.post_process(self.timecode)]) if self.timecode else []


def make_finder(cfg: DetectConfig, rate: Fraction, threads: int = 1, predict=None):
    """The finder of `cfg.detector`. TransNetV2 runs through `predict` (a GPU actor's, see hdvg.pipeline),
    else in this process on CPU with `threads` threads."""
    if cfg.detector != "transnetv2":
        return SceneFinder(cfg, rate)
    from hdvg.transnet import TransNetFinder, local_predictor

    if predict is None:
        return TransNetFinder(cfg, local_predictor(cfg, threads), cfg.batch_windows)
    return TransNetFinder(cfg, predict, cfg.gpu_batch_windows)


def detect_scenes(path: str | Path, cfg: DetectConfig, threads: int = 1, predict=None) -> SceneScan:
    """Decode `path` once and return its transitions and per-frame timestamps (detection alone; the
    curation job detects inside the cutter's decode, `hdvg.cutting.cut_video`)."""
    times: list[float] = []
    found: list[Span] = []
    with DecodedVideo(path) as video:
        finder = make_finder(cfg, video.rate, threads, predict)
        for index, frame, t in video:
            times.append(t)
            found += finder.push(index, frame)
        found += finder.finish()
    return scan_of(found, times)


def scan_of(transitions: list[Span], times: list[float]) -> SceneScan:
    """The scan of a decoded video: transitions clipped to its frames, cuts at its ends dropped."""
    n = len(times)
    kept = {Span(max(0, t.start), min(n, t.end)) for t in transitions}
    kept = sorted(t for t in kept if t.num_frames > 0 or 0 < t.start < n)
    return SceneScan(transitions=kept, frame_times=np.asarray(times), num_frames=n)


def clip_length_limits(fps: float, cfg: ClipConfig) -> tuple[int, int]:
    """(shortest kept clip, longest clip) in frames."""
    min_len = max(1, int(round(cfg.min_clip_seconds * fps)))
    return min_len, max(min_len, int(cfg.max_clip_seconds * fps))


def scenes_between(transitions: list[Span], num_frames: int) -> list[Span]:
    """The scenes of a video: the frames before, between and after its transitions (some may be empty)."""
    inside = [t for t in transitions if t.end > 0 and t.start < num_frames]
    starts = [0, *[min(t.end, num_frames) for t in inside]]
    ends = [*[max(t.start, 0) for t in inside], num_frames]
    return [Span(s, e) for s, e in zip(starts, ends)]


def scene_spans(transitions: list[Span], num_frames: int, fps: float, cfg: ClipConfig) -> list[Span]:
    """Turn transitions into clip spans: the scenes between them shorter than `min_clip_seconds` are dropped;
    longer than `max_clip_seconds` are split into consecutive clips of that length (a remainder too short
    is dropped)."""
    min_len, max_len = clip_length_limits(fps, cfg)
    spans = []
    for start, end in ((s.start, s.end) for s in scenes_between(transitions, num_frames)):
        for s in range(start, end, max_len):
            e = min(s + max_len, end)
            if e - s >= min_len:
                spans.append(Span(s, e))
    return spans
