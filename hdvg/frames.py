"""`SmallFrames`: the one place where the cutter's single decode hands low-resolution copies of its frames to
the consumers that read pictures rather than encode them (TransNetV2 reads 48x27 RGB; the cheap per-clip
scores of `hdvg.measures` read 256 px wide luma).

A consumer asks for a size once; every decoded frame is then scaled to it by one swscale call through a
reformatter kept for the whole video (`VideoFrame.reformat` would build a new scaling context per frame).
"""
from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# TransNetV2's input: 48x27 RGB, what its authors' `predict_video` gets from `ffmpeg -s 48x27` (swscale,
# bicubic: ffmpeg's default scaler)
TRANSNET_SIZE = (48, 27)


class SmallFrames:
    """Decoded frame -> uint8 array of `size` (width, height) in `format`: (height, width, 3) for rgb24,
    (height, width) for gray (swscale's luma plane, full range)."""

    def __init__(self, size: tuple[int, int] = TRANSNET_SIZE, interpolation: str = "BICUBIC", format: str = "rgb24"):
        self.size, self.interpolation, self.format = size, interpolation, format
        self.reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        width, height = self.size
        # threads=1: a picture this small is one slice; the decoder and x264 hold the task's other threads
        return self.reformatter.reformat(frame, width=width, height=height, format=self.format,
                                         interpolation=self.interpolation, threads=1).to_ndarray()
