"""`extract_keyframes`: decoded frames of a video, by number, as JPEG; `clip_keyframe`: one frame of a clip
hdvg encoded. The centre frame of each clip is its keyframe (what the captioner sees).

Frames are found by decoding, never by seeking, so a keyframe is the frame itself and not the nearest
keyframe after a seek. `cut_video` takes each clip's centre frame from the clip it has just encoded (the
clip's end, hence its centre, is known only once its scene has ended).
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


def clip_keyframe(path: str | Path, index: int) -> bytes:
    """JPEG bytes of frame `index` (presentation order) of a clip `hdvg.cutting` encoded.

    Such a clip has one packet per frame and strictly increasing timestamps, so frame `index` is the packet
    with the index-th smallest pts (found by demuxing alone). On the way to it only reference frames are
    decoded: a non-reference frame is never needed to decode another one, and x264's non-reference
    B-frames are half of a clip, so this costs half of decoding the clip up to the frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.size)
    if not 0 <= index < len(pts):
        raise ValueError(f"{Path(path).name} has no frame {index} ({len(pts)} frames)")
    wanted = pts[index]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        for packet in container.demux(stream):  # the last packet is the flush (size 0): it drains delayed frames
            if packet.pts == wanted:
                stream.codec_context.skip_frame = "DEFAULT"
            for frame in packet.decode():
                if frame.pts == wanted:
                    return jpeg(frame)
    raise ValueError(f"{Path(path).name}: frame {index} (pts {wanted}) did not decode")


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
