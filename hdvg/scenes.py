"""`detect_scenes` (PySceneDetect on one decode of the video) and `scene_spans` (scenes -> clip spans).

Frames are numbered as decoded, in presentation order, from 0: the same numbering as ffmpeg's
`select=eq(n\\,I)`, which the cutter and every checker use. PySceneDetect's own VideoStream numbers VFR
frames by timestamp x nominal rate instead, so we decode with PyAV ourselves and feed the detector.
"""
from __future__ import annotations

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


@dataclass(frozen=True)
class SceneScan:
    cuts: list[int]           # first frame of every scene after the first
    frame_times: np.ndarray   # seconds of each decoded frame from the first one, float64[num_frames]
    num_frames: int


@dataclass(frozen=True)
class Span:
    start: int  # first frame
    end: int    # one past the last frame

    @property
    def num_frames(self) -> int:
        return self.end - self.start


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


def detect_scenes(path: str | Path, cfg: DetectConfig) -> SceneScan:
    """Decode `path` once and return its scene cuts and per-frame timestamps."""
    detector = make_detector(cfg)
    times: list[float] = []
    cuts: list[int] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame + slice threads: the decoder is most of the cost
            if cfg.skip_loop_filter:  # a speed knob, off by default: without deblocking some cuts move
                stream.codec_context.options = {"skip_loop_filter": "all"}
            rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
            size = detection_size(stream.codec_context.width, stream.codec_context.height, cfg.detect_width)
            # one reformatter for the whole video: VideoFrame.reformat builds a new swscale context per frame
            reformatter = VideoReformatter()
            index, t0, timecode = 0, None, None
            for frame in container.decode(stream):
                t = frame.time
                if t is None:
                    t = index / float(rate)
                if t0 is None:
                    t0 = t
                times.append(t - t0)
                if cfg.frame_skip == 0 or index % (cfg.frame_skip + 1) == 0:
                    # One swscale call (no full-size BGR copy). Point sampling matches PySceneDetect's
                    # cv2 INTER_LINEAR resize at these factors: it reproduces the upstream goldens,
                    # where area or bilinear filtering turns slow fades into extra cuts.
                    image = reformatter.reformat(frame, width=size[0], height=size[1], format="bgr24",
                                                 interpolation="POINT").to_ndarray()
                    timecode = FrameTimecode(index, fps=rate)
                    cuts += [c.frame_num for c in detector.process_frame(timecode, image)]
                index += 1
            if timecode is not None:
                cuts += [c.frame_num for c in detector.post_process(timecode)]
    except av.FFmpegError as exc:
        where = f" at frame {len(times)}" if times else ""
        raise DecodeError(f"undecodable video{where}: {exc}") from None
    if not times:
        raise DecodeError("video stream decodes to no frames")
    n = len(times)
    return SceneScan(cuts=sorted({c for c in cuts if 0 < c < n}), frame_times=np.asarray(times), num_frames=n)


def scene_spans(cuts: list[int], num_frames: int, fps: float, cfg: ClipConfig) -> list[Span]:
    """Turn scene cuts into clip spans: scenes shorter than `min_clip_seconds` are dropped; longer than
    `max_clip_seconds` are split into consecutive clips of that length (a remainder too short is dropped)."""
    min_len = max(1, int(round(cfg.min_clip_seconds * fps)))
    max_len = max(min_len, int(cfg.max_clip_seconds * fps))
    bounds = [0, *[c for c in cuts if 0 < c < num_frames], num_frames]
    spans = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        for s in range(start, end, max_len):
            e = min(s + max_len, end)
            if e - s >= min_len:
                spans.append(Span(s, e))
    return spans
