"""`extract_keyframes`: decoded frames of a video, by number, as JPEG; the centre frame of each clip is its
keyframe (what the captioner sees).

Frames are found by decoding and counting, never by seeking, so a keyframe is the frame itself and not
the nearest keyframe after a seek. `cut_video` takes each clip's centre frame from the clip it has just
encoded (the clip's end, hence its centre, is known only once its scene has ended).
"""
from __future__ import annotations

import io
from pathlib import Path

import av

from hdvg.scenes import DecodedVideo, Span

JPEG_QUALITY = 95


def centre_frame(span: Span) -> int:
    """Frame number (in the source) of the centre frame of `span`: frame n//2 of the clip."""
    return span.start + span.num_frames // 2


def jpeg(frame: av.VideoFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_image().save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def extract_keyframes(path: str | Path, frames: list[int]) -> list[bytes]:
    """JPEG bytes of decoded frames `frames` (sorted) of `path`, in that order; decoding stops after the
    last one. Raises DecodeError if the video is undecodable or shorter."""
    wanted, got = set(frames), {}
    with DecodedVideo(path) as video:
        for index, frame, _ in video:
            if index in wanted:
                got[index] = jpeg(frame)
                if len(got) == len(wanted):
                    break
    missing = [f for f in frames if f not in got]
    if missing:
        raise ValueError(f"{Path(path).name} has no frame {missing[0]} ({video.decoded} frames)")
    return [got[f] for f in frames]
