"""Shared fixtures. Tests that need the real media of ../shared/data skip with the reason when it is absent,
and fail instead where HDVG_REQUIRE_MEDIA=1 (CI: .ci/run), so that a CI run never passes by skipping them."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
REQUIRE_MEDIA = "HDVG_REQUIRE_MEDIA"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or skip the test (a user's clone has no ../shared); under
    HDVG_REQUIRE_MEDIA=1 a missing file fails the test."""
    path = SHARED / relative
    if not path.exists():
        reason = f"needs ../shared/data/{relative} (real test media beside the repo), absent here"
        if os.environ.get(REQUIRE_MEDIA) == "1":
            pytest.fail(f"{reason}, and {REQUIRE_MEDIA}=1 requires it", pytrace=False)
        pytest.skip(reason)
    return path


def ground_truth(name: str) -> dict:
    return json.loads(shared_file(f"ground_truth/{name}").read_text())


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory) -> Path:
    """The built-in sample (hdvg sample), generated once per test session."""
    from hdvg.sample import make_sample

    out = tmp_path_factory.mktemp("sample_videos")
    make_sample(out)
    return out


@pytest.fixture(scope="session")
def ray_local():
    """One private local Ray cluster for the whole session (starting one costs seconds)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def gray_frames(path, lo: int, hi: int, size=(160, 90)) -> dict:
    """Decoded frames lo..hi (inclusive, decoded-frame numbering) of `path` as small float gray arrays."""
    import subprocess

    import numpy as np

    w, h = size
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vf",
                          f"select=between(n\\,{lo}\\,{hi}),scale={w}:{h},format=gray", "-fps_mode", "passthrough",
                          "-f", "rawvideo", "-"], capture_output=True, check=True)
    n = len(out.stdout) // (w * h)
    return {lo + i: np.frombuffer(out.stdout[i * w * h:(i + 1) * w * h], np.uint8).astype(np.float64)
            for i in range(n)}


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a - b) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255 ** 2 / mse)


def best_match(image, candidates: dict) -> int:
    """The key of the candidate frame closest to `image` (highest PSNR)."""
    return max(candidates, key=lambda k: psnr(image, candidates[k]))


CURATED_VIDEOS = {  # real 720p videos of ../shared/data -> the caption every clip of it gets in `curated_out`
    "repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4": "a man in a suit and tie standing next to a news desk",
    "pyscenedetect_resources/testvideo.mp4": "a slideshow of photographs of a city",
}


@pytest.fixture(scope="session")
def curated_out(tmp_path_factory) -> Path:
    """A real curation OUT for the model tests: real 720p videos of ../shared/data cut by the CPU stages
    (`process_video`, without Ray) and committed by the shard writer, 4 clips a shard. Every clip carries its
    video's caption except the last clip written, which is uncaptioned (caption null), as in an offline run."""
    from hdvg.config import build_config
    from hdvg.process import process_video
    from hdvg.shards import write_shards
    from hdvg.sources import WorkItem

    out = tmp_path_factory.mktemp("curated_out")
    # PySceneDetect's cuts: the clips the model tests were written against (TransNetV2, the default, finds
    # the photo fades of testvideo.mp4 too and makes 7 clips of it)
    cfg = build_config(values={"input": str(SHARED), "output": str(out), "captioner.name": "none",
                               "detect.detector": "adaptive"})
    videos = []
    for relative, caption in CURATED_VIDEOS.items():
        path = shared_file(relative)
        result = process_video(WorkItem(video_id=path.stem, source=str(path)), cfg)
        assert result.row["status"] == "ok", result.row
        clips = []
        for clip in result.clips:
            clip.meta.update(caption=caption, captioner="test:fixture")
            clips.append((clip.meta, clip.jpg, clip.mp4))
        videos.append((result.row, clips))
    last = videos[-1][1][-1][0]
    last.update(caption=None, captioner=None)
    write_shards(out, videos, samples_per_shard=4)
    return out
