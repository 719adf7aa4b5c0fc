"""The cheap per-clip scores on real encoded videos made with ffmpeg: a still picture looped, a pan, a 4:3 picture
pillarboxed in a 16:9 frame, a black clip, a plain 16:9 one."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hdvg.measures import measure_video


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
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=640x360:r=25", "-t", "2", *x264, str(d / "plain.mp4"))
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
    black = measure_video(str(videos["black"]))
    assert black["luma_mean"] < 20 and black["luma_std"] < 3 and black["content_aspect"] is None
    plain = measure_video(str(videos["plain"]))
    assert plain["luma_mean"] > 40 and plain["luma_std"] > 30 and plain["static_fraction"] < 0.5
