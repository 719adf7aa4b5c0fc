"""The cheap per-clip scores on real encoded videos made with ffmpeg: a still picture looped, a pan, a 4:3 picture
pillarboxed in a 16:9 frame (also rotated by its display matrix), a black clip, a plain 16:9 one; and the
cutter's single decode measuring each clip as a decode of that clip alone does."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hdvg.config import EncodeConfig
from hdvg.contract import MEASURE_FIELDS
from hdvg.cutting import FixedSpans, cut_video
from hdvg.measures import measure_video
from hdvg.probe import probe
from hdvg.scenes import Span


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("measures")
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    # a blurred noise texture: flow is defined everywhere (a flat area has no motion to see)
    ffmpeg("-f", "lavfi", "-i", "nullsrc=s=1920x360,geq=lum='random(1)*255':cb=128:cr=128,boxblur=3", "-frames:v", "1",
           str(d / "wide.png"))
    ffmpeg("-loop", "1", "-framerate", "25", "-i", str(d / "wide.png"), "-t", "3", "-vf", "crop=640:360:0:0",
           *x264, str(d / "still.mp4"))
    # 4 px a frame at 640 wide: 1.6 px a frame at the 256 px the motion is measured at
    ffmpeg("-loop", "1", "-framerate", "25", "-i", str(d / "wide.png"), "-t", "3", "-vf", "crop=640:360:n*4:0",
           *x264, str(d / "pan.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=480x360:r=25", "-t", "2", "-vf", "pad=640:360:80:0:black", *x264,
           str(d / "pillarbox.mp4"))
    # the same picture stored sideways: a display matrix of 90 degrees shows it 360 wide, 480 of 640 rows tall
    ffmpeg("-i", str(d / "pillarbox.mp4"), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(d / "rotated.mp4"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25", "-t", "2", *x264, str(d / "plain.mp4"))
    # black on the right only: a dark edge of the picture, not a bar (bars are centred)
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=480x360:r=25", "-t", "2", "-vf", "pad=640:360:0:0:black", *x264,
           str(d / "dark_edge.mp4"))
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=640x360:r=25", "-t", "2", *x264, str(d / "black.mp4"))
    return {p.stem: p for p in d.glob("*.mp4")}


def test_a_still_picture_has_no_motion_and_a_pan_has_its_speed(videos):
    still, pan = measure_video(str(videos["still"])), measure_video(str(videos["pan"]))
    assert still["motion_score"] < 0.05 and still["motion_min_region"] < 0.05 and still["static_fraction"] > 0.95
    assert pan["motion_score"] == pytest.approx(1.6, rel=0.25) and pan["static_fraction"] == 0
    assert pan["motion_min_region"] > 0.5


def test_bars_give_the_content_aspect_and_black_is_flagged_by_luma(videos):
    assert measure_video(str(videos["pillarbox"]))["content_aspect"] == pytest.approx(4 / 3, rel=0.03)
    assert measure_video(str(videos["plain"]))["content_aspect"] == pytest.approx(16 / 9, rel=0.03)
    assert measure_video(str(videos["dark_edge"]))["content_aspect"] == pytest.approx(16 / 9, rel=0.03)
    assert probe(str(videos["rotated"])).rotation == 90
    assert measure_video(str(videos["rotated"]))["content_aspect"] == pytest.approx(3 / 4, rel=0.03)
    black = measure_video(str(videos["black"]))
    assert black["luma_mean"] < 20 and black["luma_std"] < 3 and black["content_aspect"] is None
    plain = measure_video(str(videos["plain"]))
    assert plain["luma_mean"] > 40 and plain["luma_std"] > 30 and plain["static_fraction"] < 0.5


def test_the_cutter_measures_each_clip_from_its_one_decode_as_a_decode_of_the_clip_alone_does(videos, tmp_path):
    """Two clips of the pan and one of the rotated picture: the values `cut_video` hands out with each clip are
    exactly those of measuring the clip's frames in a decode of their own."""
    for name, spans in (("pan", [Span(0, 40), Span(40, 75)]), ("rotated", [Span(5, 45)])):
        path = str(videos[name])
        _, clips = cut_video(path, probe(path), FixedSpans(spans), tmp_path / name, EncodeConfig(), threads=1)
        assert [c.span for c in clips] == spans
        for clip in clips:
            assert set(clip.measures) == set(MEASURE_FIELDS)
            assert clip.measures == measure_video(path, clip.span.start, clip.span.end)
    assert clips[0].measures["content_aspect"] == pytest.approx(3 / 4, rel=0.03)
