import json

import pytest

from hdvg.config import ClipConfig, DetectConfig
from hdvg.scenes import DecodeError, Span, detect_scenes, hard_cuts, scene_spans
from tests.conftest import shared_file


def golden(name: str) -> list[int]:
    return json.loads(shared_file(f"pyscenedetect_resources/goldens/{name}").read_text())["cuts"]


@pytest.mark.parametrize("video, golden_name, cfg", [
    ("testvideo.mp4", "testvideo.mp4.AdaptiveDetector.default.json", DetectConfig(detector="adaptive")),
    ("testvideo.mp4", "testvideo.mp4.ContentDetector.default.json", DetectConfig(detector="content")),
    ("testvideo.mp4", "testvideo.mp4.AdaptiveDetector.t5.json", DetectConfig(detector="adaptive", adaptive_threshold=5)),
    ("counter.mp4", "counter.mp4.AdaptiveDetector.default.json", DetectConfig(detector="adaptive")),
    ("fades.mp4", "fades.mp4.ContentDetector.t30.json", DetectConfig(detector="content", content_threshold=30)),
])
def test_cuts_reproduce_upstream_goldens(video, golden_name, cfg):
    scan = detect_scenes(shared_file(f"pyscenedetect_resources/{video}"), cfg)
    assert scan.cuts == golden(golden_name)


def test_cuts_reproduce_local_ground_truth():
    truth = json.loads(shared_file("ground_truth/local__big_buck_bunny_0_30.webm.json").read_text())
    scan = detect_scenes(shared_file("repo_videos/moviepy/big_buck_bunny_0_30.webm"), DetectConfig(detector="adaptive"))
    assert scan.cuts == truth["ground_truth"]["local_verification"]["results"]["AdaptiveDetector.default"]["cuts"]
    assert scan.num_frames == 720  # moviepy asserts 720 frames


def test_vfr_cuts_are_decoded_frame_numbers_at_the_true_times():
    # upstream asserts scenes 00:00:00.000-00:00:03.754-00:00:08.759 on this VFR file (every 3rd frame dropped)
    scan = detect_scenes(shared_file("pyscenedetect_resources/goldeneye-vfr-drop3.mp4"), DetectConfig(detector="content"))
    assert scan.num_frames == 160
    assert [round(float(scan.frame_times[c]), 3) for c in scan.cuts] == [3.754, 8.759]
    assert scan.cuts == [60, 140]  # decoded frames, not timestamp x nominal rate (90, 210)


def test_start_offset_is_normalised():
    scan = detect_scenes(shared_file("pyscenedetect_resources/delayed_start.mp4"), DetectConfig(detector="adaptive"))
    assert scan.frame_times[0] == 0 and scan.num_frames == 24
    assert scan.frame_times[1] == pytest.approx(1 / 25)


def test_corrupt_bitstream_is_a_decode_error():
    with pytest.raises(DecodeError, match="undecodable video at frame"):
        detect_scenes(shared_file("repo_videos/decord/corrupted.mp4"), DetectConfig(detector="adaptive"))


def test_scene_spans_drop_short_and_split_long():
    cfg = ClipConfig(min_clip_seconds=1, max_clip_seconds=4)
    # 10 fps: scenes [0,5) too short, [5,50) split 40+5 (the 5-frame rest is dropped), [50,70) kept
    spans = scene_spans(hard_cuts([5, 50]), 70, 10.0, cfg)
    assert spans == [Span(5, 45), Span(50, 70)]
    # a rest of exactly min_clip_seconds is kept
    assert scene_spans([], 100, 10.0, ClipConfig(min_clip_seconds=1, max_clip_seconds=4.5)) == [
        Span(0, 45), Span(45, 90), Span(90, 100)]
    # cuts outside the video are ignored; every span lies within it and spans never overlap
    spans = scene_spans(hard_cuts([0, 30, 200]), 100, 25.0, ClipConfig(min_clip_seconds=0.5, max_clip_seconds=20))
    assert spans == [Span(0, 30), Span(30, 100)]
