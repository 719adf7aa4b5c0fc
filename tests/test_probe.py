import pytest

from hdvg.probe import ProbeError, probe
from tests.conftest import shared_file


def test_vfr_average_fps_and_frames():
    info = probe(shared_file("pyscenedetect_resources/goldeneye-vfr-drop3.mp4"))
    assert info.num_frames == 160
    assert info.nominal_fps == pytest.approx(24000 / 1001)
    assert info.fps == pytest.approx(3840000 / 239239, rel=1e-3)  # true average, not the nominal rate
    info = probe(shared_file("repo_videos/moviepy/fire2.mp4"))
    assert info.fps == pytest.approx(750000 / 71393, rel=1e-3)    # tbr 90000 but 10.5 fps


@pytest.mark.parametrize("name, size, rotation", [
    ("pyscenedetect_resources/issue-134-rotate.mp4", (544, 1280), 270),
    ("repo_videos/decord/video_90.mov", (320, 568), 270),
    ("repo_videos/decord/video_270.mov", (320, 568), 90),
    ("repo_videos/decord/video_180.mov", (568, 320), 180),
    ("repo_videos/decord/video_0.mov", (568, 320), 0),
])
def test_rotation_gives_displayed_size(name, size, rotation):
    info = probe(shared_file(name))
    assert (info.width, info.height) == size
    assert info.rotation == rotation


def test_non_square_pixels():
    info = probe(shared_file("pyscenedetect_resources/issue-195-aspect-ratio.mp4"))
    assert (info.coded_width, info.coded_height) == (704, 576)
    assert (info.width, info.height) == (1024, 576)  # SAR 16:11 applied
    assert info.num_frames == 628 and info.fps == 25


@pytest.mark.parametrize("name", ["repo_videos/moviepy/no_duration.webm", "repo_videos/imageio_test_images/test.webm"])
def test_containers_without_duration(name):
    info = probe(shared_file(name))
    assert info.duration > 0 and info.num_frames > 0
    assert info.duration == pytest.approx(info.num_frames / info.fps)


@pytest.mark.parametrize("name, reason", [
    ("repo_videos/moviepy/doc_medias__result.webm", "empty file"),
    ("pypi_videos/pymediainfo-7.0.1/sample.mkv", "unreadable container"),
    ("pypi_videos/pymediainfo-7.0.1/mpeg4.mp4", "no streams"),
    ("pypi_videos/pymediainfo-7.0.1/mp4-with-audio.mp4", "no video stream"),
    ("pypi_videos/pymediainfo-7.0.1/issue55.flv", "no video stream"),
    ("pypi_videos/pymediainfo-7.0.1/vbr_requires_parsespeed_1.mp4", "no video stream (streams: audio, audio)"),
])
def test_unusable_files_raise_with_reason(name, reason):
    with pytest.raises(ProbeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        probe(shared_file(name))


def test_relative_file_name_starting_with_dash(tmp_path, monkeypatch):
    src = shared_file("repo_videos/moviepy/-video-with-dash-.mp4")
    (tmp_path / "-rf.mp4").write_bytes(src.read_bytes())
    monkeypatch.chdir(tmp_path)
    info = probe("-rf.mp4")  # must reach ffprobe as a file name, not as an option
    assert (info.width, info.height, info.num_frames) == (1, 1, 5)
