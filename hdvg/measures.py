"""Cheap per-clip scores from low-resolution frames (what `hdvg.frames.SmallFrames` hands out of the cutter's
single decode), for filtering at read time (docs/scores.md):

    motion_score       mean OpenCV Farneback optical-flow magnitude between consecutive sampled frames, in
                       pixels per source frame at MEASURE_WIDTH px width
    motion_min_region  the smallest mean magnitude over a GRID x GRID grid of regions (a still background
                       with one small moving object scores low here, as NeMo Curator's motion filter does)
    luma_mean/std      BT.601 luma, 0-255, over all sampled pixels (black, white and blank clips)
    static_fraction    share of sampled frames whose mean absolute luma change from the next frame is under
                       STATIC_LUMA_DELTA (a frozen or looped picture is near 1)
    content_aspect     displayed width / height of the picture inside black bars found over the whole clip (a
                       4:3 film letterboxed in a 16:9 frame reads 1.33, not 1.78)

`ClipMeasures` takes frames one at a time in decode order and keeps a pair of adjacent frames SAMPLE_FPS times a
second; the caller scales only those (`takes_next`), so nothing but the sampled small frames is made or held.
"""
from __future__ import annotations

import numpy as np

MEASURE_WIDTH = 256      # motion is in pixels at this width (the detector feed's width, detect.detect_width)
SAMPLE_FPS = 2.0         # frame pairs a second sampled for flow and statics (about +3 % of the job's CPU)
GRID = 4                 # regions per side for motion_min_region
STATIC_LUMA_DELTA = 1.0  # mean absolute luma change (0-255) under which a frame is "the same" as the last
BAR_LUMA = 24            # a row/column whose brightest sampled pixel stays under this is a black bar (ffmpeg
                         # cropdetect's default limit, 24 of 255)


def measure_size(width: int, height: int) -> tuple[int, int]:
    """(MEASURE_WIDTH, height kept in proportion, even) for a displayed width x height."""
    return MEASURE_WIDTH, max(2, round(MEASURE_WIDTH * height / width / 2) * 2)


class ClipMeasures:
    """Feed RGB uint8 (H, W, 3) frames of one clip at MEASURE_WIDTH width; `result()` gives the scores. Every
    `step` frames (SAMPLE_FPS a second) a frame and the one after it are kept: the flow and the change between
    two adjacent frames are per source frame, however far apart the samples are."""

    def __init__(self, fps: float, display_aspect: float):
        self.step = max(2, round(fps / SAMPLE_FPS))  # source frames between two sampled pairs
        self.display_aspect = display_aspect
        self.count = 0
        self.pairs: list[list[np.ndarray]] = []  # [frame, next frame] at each sample point

    def takes_next(self) -> bool:
        """Whether the next frame is sampled: only then need the caller scale it (the scaling is most of the cost)."""
        return self.count % self.step < 2

    def push(self, rgb: np.ndarray | None) -> None:
        """The next frame of the clip: its small RGB copy when `takes_next()`, else None (only counted)."""
        if self.takes_next():
            import cv2

            grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # BT.601 luma
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
        for a, b in (pair for pair in self.pairs if len(pair) == 2):
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
        rows, cols = np.nonzero(brightest.max(axis=1) >= BAR_LUMA)[0], np.nonzero(brightest.max(axis=0) >= BAR_LUMA)[0]
        if len(rows) and len(cols):
            h, w = brightest.shape
            content = ((cols[-1] - cols[0] + 1) / w) / ((rows[-1] - rows[0] + 1) / h)
            out["content_aspect"] = float(self.display_aspect * content)
        else:  # all black: no picture to measure
            out["content_aspect"] = None
        return {k: out[k] for k in MEASURE_FIELDS}


MEASURE_FIELDS = ("motion_score", "motion_min_region", "luma_mean", "luma_std", "static_fraction", "content_aspect")


def measure_video(path: str, start: int = 0, end: int | None = None) -> dict:
    """The scores of frames [start, end) of a video file, decoded here through `SmallFrames` (the cutter feeds
    `ClipMeasures` from its own decode instead)."""
    import av

    from hdvg.frames import SmallFrames

    with av.open(path) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        sar = stream.sample_aspect_ratio or 1
        aspect = width * float(sar) / height
        small = SmallFrames(measure_size(int(round(width * float(sar))), height), "BILINEAR")
        fps = float(stream.average_rate or 25)
        measures = ClipMeasures(fps, aspect)
        for index, frame in enumerate(container.decode(stream)):
            if end is not None and index >= end:
                break
            if index >= start:
                measures.push(small(frame) if measures.takes_next() else None)
    return measures.result()

