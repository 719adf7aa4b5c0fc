"""The sampler hand-off: `hdvg sample-video ... --upscale SR_RUN` writes the paper's final 1376x768 video."""
from __future__ import annotations

import av
import torch

from hdvg.cli import main as hdvg_main
from model.sr.config import tiny
from model.sr.rcan import RCAN
from model.sr.upscale import save_upscaler
from tests.test_sample import run_dir  # noqa: F401 (fixture: a real 1-step tiny Swap-CA run on curated_out)


def test_sample_video_upscaled_to_1376x768(run_dir, tmp_path):  # noqa: F811
    torch.manual_seed(0)
    save_upscaler(tmp_path / "sr", tiny(), RCAN(tiny().rcan).state_dict(), step=0)
    out = tmp_path / "out.mp4"
    assert hdvg_main(["sample-video", "--checkpoint", str(run_dir), "a city at night", "--output", str(out),
                      "--seed", "3", "--steps", "1", "--upscale", str(tmp_path / "sr")]) == 0
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 16 and frames[0].shape == (768, 1376, 3)
