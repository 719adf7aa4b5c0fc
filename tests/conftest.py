"""Shared fixtures. Tests that need the real media of ../shared/data skip with the reason when it is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or skip the test (a user's clone has no ../shared)."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{relative} (real test media beside the repo), absent here")
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
