"""Clips are frame-exact: frame count equals the span's, the first frame is the source's `start_frame`
(closer to it than to its neighbours), and the keyframe is the clip's centre frame."""
import io
import json
import os
import subprocess
import threading

import numpy as np
import pytest
from PIL import Image

from hdvg.config import ClipConfig, DetectConfig, EncodeConfig, build_config
from hdvg.cutting import SceneClips, clip_size, count_frames, cut_clips, cut_video
from hdvg.keyframes import centre_frame, clip_keyframe, extract_keyframes
from hdvg.probe import probe
from hdvg.process import process_video
from hdvg.scenes import Span, detect_scenes, hard_cuts, scene_spans
from hdvg.sources import WorkItem
from tests.conftest import best_match, gray_frames, psnr, shared_file


def stream_info(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=codec_name,pix_fmt,width,height,nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True)
    codec, w, h, pix, n = out.stdout.strip().split(",")
    return codec, int(w), int(h), pix, int(n)


def assert_frame_exact(src, clips):
    for c in clips:
        codec, w, h, pix, n = stream_info(c.path)
        assert (codec, pix) == ("h264", "yuv420p")
        assert n == c.span.num_frames == count_frames(c.path)
        first = gray_frames(c.path, 0, 0)[0]
        near = gray_frames(src, max(c.span.start - 2, 0), c.span.start + 2)
        p0 = psnr(first, near[c.span.start])
        # no neighbour may match clearly better (still frames tie, which is fine)
        assert p0 > 30 and psnr(first, near[best_match(first, near)]) < p0 + 0.5, f"clip {c.span} starts elsewhere"
        key = np.asarray(Image.open(io.BytesIO(c.keyframe)).convert("L").resize((160, 90)), np.float64).ravel()
        mid = c.span.num_frames // 2
        frames = gray_frames(c.path, max(mid - 3, 0), min(mid + 3, n - 1))
        frames.update(gray_frames(c.path, 0, 0))
        frames.update(gray_frames(c.path, n - 1, n - 1))
        scores = {k: psnr(key, f) for k, f in frames.items()}
        assert scores[mid] >= max(scores.values()) - 0.01, f"keyframe is not clip frame {mid}: {scores}"


@pytest.fixture(scope="module")
def testvideo_clips(tmp_path_factory):
    src = shared_file("pyscenedetect_resources/testvideo.mp4")
    info = probe(src)
    scan = detect_scenes(src, DetectConfig(detector="adaptive"))
    spans = scene_spans(scan.transitions, scan.num_frames, info.fps, ClipConfig(min_clip_seconds=0.5, max_clip_seconds=4))
    return src, spans, cut_clips(src, info, spans, tmp_path_factory.mktemp("cut"), EncodeConfig(preset="ultrafast"))


def test_clips_are_frame_exact(testvideo_clips):
    src, spans, clips = testvideo_clips
    assert [c.span for c in clips] == spans
    assert spans[0] == Span(0, 30) and Span(30, 149) in spans  # a 4 s split of the second scene
    assert_frame_exact(src, clips)


def test_mp4_is_faststart(testvideo_clips):
    data = testvideo_clips[2][0].path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


@pytest.mark.parametrize("name, start, size", [
    ("pyscenedetect_resources/goldeneye-vfr-drop3.mp4", 60, (1280, 544)),    # VFR: decoded frames
    ("pyscenedetect_resources/issue-134-rotate.mp4", 90, (544, 1280)),       # rotation -90: displayed 544x1280
    ("pyscenedetect_resources/issue-195-aspect-ratio.mp4", 70, (1024, 576)),  # SAR 16:11 -> square pixels
    ("repo_videos/moviepy/fire2.mp4", 5, (1280, 720)),                       # VFR + rotation 180
])
def test_frame_exact_on_hard_sources(tmp_path, name, start, size):
    src = shared_file(name)
    info = probe(src)
    spans = [Span(start, start + 12), Span(start + 12, start + 19)]  # adjacent spans, odd lengths
    clips = cut_clips(src, info, spans, tmp_path, EncodeConfig(preset="ultrafast"))
    assert (clips[0].width, clips[0].height) == size
    _, w, h, _, _ = stream_info(clips[0].path)
    assert (w, h) == size
    assert_frame_exact(src, clips)


def test_rotation_is_applied_to_clip_pixels(tmp_path):
    """The clip shows the picture as players display it: its frame equals the rotated source frame."""
    src = shared_file("repo_videos/decord/video_90.mov")
    info = probe(src)
    clip = cut_clips(src, info, [Span(0, 3)], tmp_path, EncodeConfig(preset="ultrafast"))[0]
    raw = subprocess.run(["ffmpeg", "-v", "error", "-noautorotate", "-i", str(src), "-frames:v", "1", "-vf",
                          "transpose=1,scale=320:568,format=gray", "-f", "rawvideo", "-"],
                         capture_output=True, check=True).stdout
    rotated = np.frombuffer(raw, np.uint8).astype(np.float64)
    got = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip.path), "-frames:v", "1", "-vf", "format=gray",
                          "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    assert psnr(np.frombuffer(got, np.uint8).astype(np.float64), rotated) > 30


def test_clip_size_never_upscales_and_stays_even():
    assert clip_size(1920, 1080, 720) == (1280, 720)
    assert clip_size(1280, 720, 720) == (1280, 720)
    assert clip_size(640, 361, 720) == (640, 360)
    assert clip_size(544, 1280, 720) == (544, 1280)
    assert clip_size(3840, 1606, 720) == (1722, 720)


def test_extract_keyframes_decodes_the_numbered_frames(testvideo_clips):
    """Keyframes are the frames themselves, by decoded-frame number (here of the source, not a clip)."""
    src, spans, _ = testvideo_clips
    frames = [centre_frame(s) for s in spans[:3]]
    jpgs = extract_keyframes(src, frames)
    near = gray_frames(src, frames[0] - 2, frames[-1] + 2)
    for jpg, f in zip(jpgs, frames):
        key = np.asarray(Image.open(io.BytesIO(jpg)).convert("L").resize((160, 90)), np.float64).ravel()
        scores = {k: psnr(key, v) for k, v in near.items()}
        assert scores[f] >= max(scores.values()) - 0.01, f"keyframe is not frame {f}"  # still frames tie
    with pytest.raises(ValueError, match="no frame 99999"):
        extract_keyframes(src, [99999])


def test_clip_keyframe_is_the_decoded_frame_of_that_number(tmp_path):
    """Decoding only the reference frames up to a frame found by its timestamp gives that very frame:
    every frame of an x264 veryfast clip (B-frames, non-reference ones skipped) equals the frame decoding
    and counting all of them gives."""
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "2.4",
                    "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(clip)], check=True)
    types = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "frame=pict_type", "-of", "csv=p=0",
                            str(clip)], capture_output=True, text=True, check=True).stdout.split()
    assert types.count("B") > 10  # the frames the fast path skips exist
    some = [0, 1, 2, 3, 4, 5, 6, 7, 29, 30, 31, 56, 57, 58, 59]  # B and P frames, and the flushed tail
    assert [clip_keyframe(clip, i) for i in some] == extract_keyframes(clip, some)
    with pytest.raises(ValueError, match="no frame 60"):
        clip_keyframe(clip, 60)


@pytest.mark.parametrize("cfg, golden_name", [
    (DetectConfig(detector="adaptive"), "testvideo.mp4.AdaptiveDetector.default.json"),
    # ContentDetector's flash filter holds cuts back by up to min_scene_len frames: the longest lag
    (DetectConfig(detector="content"), "testvideo.mp4.ContentDetector.default.json"),
])
def test_cut_video_detects_and_cuts_in_one_decode(tmp_path, cfg, golden_name):
    """The single pass finds the same cuts as detection alone (the upstream golden), keeps exactly the
    spans of `scene_spans` (a 29-frame last scene dropped, long scenes split at 4 s), and its clips are
    frame-exact; the clips it dropped leave no file."""
    src = shared_file("pyscenedetect_resources/testvideo.mp4")
    golden = json.loads(shared_file(f"pyscenedetect_resources/goldens/{golden_name}").read_text())["cuts"]
    info = probe(src)
    clip_cfg = ClipConfig(min_clip_seconds=1, max_clip_seconds=4)
    scan, clips = cut_video(src, info, SceneClips(clip_cfg, info.fps), tmp_path, EncodeConfig(preset="ultrafast"), cfg)
    assert scan.cuts == golden and scan.num_frames == 720
    spans = scene_spans(scan.transitions, scan.num_frames, info.fps, clip_cfg)
    assert [c.span for c in clips] == spans
    assert Span(691, 720) not in spans and any(s.num_frames == int(4 * info.fps) for s in spans)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(c.path.name for c in clips)
    assert_frame_exact(src, clips)


def test_scene_clips_start_every_kept_clip_where_its_span_starts():
    """Streaming plan == final plan: every frame of a kept span goes to the encoder opened at the span's
    start, knowing only the cuts up to that frame; frames outside the regions go nowhere."""
    cfg = ClipConfig(min_clip_seconds=1, max_clip_seconds=3)
    cuts, n, fps = hard_cuts([7, 40, 45, 100, 131]), 200, 10.0
    for regions in (None, [Span(0, 50), Span(60, 90), Span(90, 180)]):
        plan = SceneClips(cfg, fps, regions)
        spans = plan.spans(cuts, n)
        assert spans and all(s.num_frames <= 30 and s.num_frames >= 10 for s in spans)
        for s in spans:
            for f in range(s.start, s.end):
                assert plan.clip_start(f, [c for c in cuts if c.start <= f]) == s.start
        if regions:
            assert plan.clip_start(55, cuts) is None and plan.clip_start(185, cuts) is None
            assert all(any(r.start <= s.start and s.end <= r.end for r in regions) for s in spans)
            assert Span(90, 100) in spans  # a region start is a clip start


@pytest.fixture
def full_disk(tmp_path):
    """A 300 KB tmpfs the test mounts (root only): a scratch disk that fills while the clips are muxed."""
    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs to fill a disk: needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)],
                         capture_output=True, text=True)
    if got.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {got.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_disk_that_fills_fails_the_video_as_transient_instead_of_hanging(tmp_path, full_disk):
    """The encoder thread dies on ENOSPC (and its muxer's `close` raises again under +faststart): the cut
    returns within a bound and the video's row says why, classified transient (a retry on another disk helps)."""
    src = tmp_path / "src.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-t", "3",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(src)], check=True)
    cfg = build_config(values={"input": "-", "output": "-", "encode.preset": "ultrafast", "captioner.name": "none"})
    done: list = []
    worker = threading.Thread(target=lambda: done.append(process_video(WorkItem("v", str(src)), cfg, full_disk)),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the cut hung on a full disk"
    row = done[0].row
    assert row["status"] == "failed" and row["reason"].startswith("cut: encoding failed: ")
    assert "No space left on device" in row["reason"] and row["failure"] == "transient"
    assert not any(full_disk.iterdir())  # the scratch folder is removed on the failure path too
