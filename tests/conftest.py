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
