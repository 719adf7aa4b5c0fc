"""Cheap per-clip scores from low-resolution frames (what `hdvg.frames.SmallFrames` hands out of the cutter's
single decode), for filtering at read time (docs/scores.md):

    motion_score       mean OpenCV Farneback optical-flow magnitude between consecutive sampled frames, in
                       pixels per source frame at MEASURE_WIDTH px width
    motion_min_region  the smallest mean magnitude over a GRID x GRID grid of regions (a still background
                       with one small moving object scores low here, as NeMo Curator's motion filter does)
    luma_mean/std      BT.601 luma, 0-255, over all sampled pixels (black, white and blank clips)
    static_fraction    share of sampled frames whose mean absolute luma change from the next frame is under
                       STATIC_LUMA_DELTA (a frozen or looped picture is near 1)
    content_aspect     displayed width / height of the picture inside centred black bars found over the whole
                       clip (a 4:3 film letterboxed in a 16:9 frame reads 1.33, not 1.78)

`ClipMeasures` takes frames one at a time in decode order and keeps a pair of adjacent frames SAMPLE_FPS times a
second; the caller scales only those (`takes_next`), so nothing but the sampled small frames is made or held.
`hdvg.cutting.cut_video` feeds one per clip from its single decode; the index stores them (contract.MEASURE_SCHEMA).
"""
from __future__ import annotations

import numpy as np

from hdvg.contract import MEASURE_FIELDS
from hdvg.frames import SmallFrames
from hdvg.probe import VideoInfo

MEASURE_WIDTH = 256      # motion is in pixels at this width (the detector feed's width, detect.detect_width)
SAMPLE_FPS = 2.0         # frame pairs a second sampled for luma and statics (a scaled frame costs about 1 ms)
FLOW_EVERY = 2           # optical flow on every 2nd sampled pair, once a second: Farneback at 256 px costs about
                         # 8-10 ms a pair, most of the measures' CPU (bench/bench_cpu.py's stage profile)
GRID = 4                 # regions per side for motion_min_region
STATIC_LUMA_DELTA = 1.0  # mean absolute luma change (0-255) under which a frame is "the same" as the last
MEASURE_INTERPOLATION = "AREA"  # swscale's: the downscaling filter that does not alias, and cheaper than bicubic
MEASURE_FORMAT = "gray"  # swscale's luma alone, full range (what BT.601 luma of the RGB frame gives, +-1)
BAR_LUMA = 24            # a row/column whose brightest sampled pixel stays under this is a black bar (ffmpeg
                         # cropdetect's default limit, 24 of 255)


def measure_frames(info: VideoInfo) -> SmallFrames:
    """The scaler of decoded frames that `ClipMeasures` reads, for a video of `info`."""
    return SmallFrames(measure_size(info.width, info.height, info.rotation), MEASURE_INTERPOLATION, MEASURE_FORMAT)


def measure_size(width: int, height: int, rotation: int = 0) -> tuple[int, int]:
    """The size to scale decoded (coded, unrotated) frames to so that the picture as displayed, `width` x
    `height` (rotation and sample aspect applied, as `VideoInfo` has it), is MEASURE_WIDTH wide: (width,
    height) of the decoded frame's scaled copy, even."""
    across = max(2, round(MEASURE_WIDTH * height / width / 2) * 2)  # displayed height at MEASURE_WIDTH width
    return (across, MEASURE_WIDTH) if rotation in (90, 270) else (MEASURE_WIDTH, across)


class ClipMeasures:
    """Feed grey uint8 (H, W) frames of one clip, decoded (unrotated) and scaled to `measure_size`
    (`measure_frames`); `result()` gives the scores. Every `step`
    frames (SAMPLE_FPS a second) a frame and the one after it are kept: the flow and the change between two
    adjacent frames are per source frame, however far apart the samples are.
    `display_aspect` and `rotation`: the video's as displayed (`VideoInfo.aspect`, `.rotation`)."""

    def __init__(self, fps: float, display_aspect: float, rotation: int = 0):
        self.step = max(2, round(fps / SAMPLE_FPS))  # source frames between two sampled pairs
        self.display_aspect, self.rotation = display_aspect, rotation
        self.count = 0
        self.pairs: list[list[np.ndarray]] = []  # [frame, next frame] at each sample point

    def takes_next(self) -> bool:
        """Whether the next frame is sampled: only then need the caller scale it (the scaling is most of the cost)."""
        return self.count % self.step < 2

    def push(self, grey: np.ndarray | None) -> None:
        """The next frame of the clip: its small grey copy when `takes_next()`, else None (only counted)."""
        if self.takes_next():
            if self.count % self.step == 0:
                self.pairs.append([grey])
            else:
                self.pairs[-1].append(grey)
        self.count += 1

    def result(self) -> dict:
        import cv2

        if not self.pairs:
            return dict.fromkeys(MEASURE_FIELDS)
        frames = np.stack([f for pair in self.pairs for f in pair]).astype(np.float32)  # (N, H, W)
        out = {"luma_mean": float(frames.mean()), "luma_std": float(frames.std())}
        flows, static = [], []
        for k, (a, b) in enumerate(pair for pair in self.pairs if len(pair) == 2):
            if k % FLOW_EVERY == 0:
                flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)  # (H, W, 2)
                flows.append(np.linalg.norm(flow, axis=-1))  # pixels per source frame
            static.append(float(np.abs(b.astype(np.float32) - a).mean()) < STATIC_LUMA_DELTA)
        if flows:
            magnitude = np.mean(flows, axis=0)  # (H, W)
            h, w = magnitude.shape
            regions = [magnitude[i * h // GRID:(i + 1) * h // GRID, j * w // GRID:(j + 1) * w // GRID].mean()
                       for i in range(GRID) for j in range(GRID)]
            out.update(motion_score=float(magnitude.mean()), motion_min_region=float(min(regions)),
                       static_fraction=sum(static) / len(static))
        else:  # a one-frame clip: no motion to measure
            out.update(motion_score=None, motion_min_region=None, static_fraction=None)
        brightest = frames.max(axis=0)  # (H, W)
        lit_rows = np.nonzero(brightest.max(axis=1) >= BAR_LUMA)[0]
        lit_cols = np.nonzero(brightest.max(axis=0) >= BAR_LUMA)[0]
        if len(lit_rows) and len(lit_cols):
            h, w = brightest.shape
            # bars are centred: the narrower of two opposite dark edges is the bar (a picture dark on one
            # side only, a gradient from black, has none)
            bar_rows = min(lit_rows[0], h - 1 - lit_rows[-1])
            bar_cols = min(lit_cols[0], w - 1 - lit_cols[-1])
            content = ((w - 2 * bar_cols) / w) / ((h - 2 * bar_rows) / h)  # share kept across / share kept down
            if self.rotation in (90, 270):  # the decoded frame's columns are the displayed picture's rows
                content = 1 / content
            out["content_aspect"] = float(self.display_aspect * content)
        else:  # all black: no picture to measure
            out["content_aspect"] = None
        return {k: out[k] for k in MEASURE_FIELDS}


def measure_video(path: str, start: int = 0, end: int | None = None) -> dict:
    """The scores of frames [start, end) of a video file, decoded here (the cutter feeds `ClipMeasures` from its
    own decode instead)."""
    from hdvg.probe import probe
    from hdvg.scenes import DecodedVideo

    info = probe(path)
    small = measure_frames(info)
    measures = ClipMeasures(info.fps, info.aspect, info.rotation)
    with DecodedVideo(path, threads=1) as video:
        for index, frame, _ in video:
            if end is not None and index >= end:
                break
            if index >= start:
                measures.push(small(frame) if measures.takes_next() else None)
    return measures.result()
