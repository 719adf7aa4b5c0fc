"""The sampler on a real (tiny, 1-step) training run: `hdvg sample-video` writes a 16-frame 344x192 H.264
MP4; `Sampler.generate` is deterministic per (prompt, seed)."""
from __future__ import annotations

import av
import numpy as np
import pytest

from hdvg.cli import main as hdvg_main
from model.data import expand_shards, iter_tar_samples
from model.sample import Sampler
from model.train import Trainer
from model.train_config import load_config
from tests.model_builders import downscaled_clip, write_shard
from model.tiny import save_tiny_components
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)

SMALL_UNET = ["unet.block_out_channels=[8, 16]", "unet.attention_levels=[true, false]", "unet.norm_num_groups=4"]


@pytest.fixture(scope="module")
def run_dir(curated_out, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sample_run")
    sample = next(s for s in iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))
                  if s["__key__"] == "testvideo%2E1")
    write_shard(tmp / "clip.tar", [downscaled_clip(sample, 64, 36, max_frames=20)])
    cfg = load_config("tiny", [f"components={save_tiny_components(tmp / 'components')}",
                               f"data.shards=['{tmp / 'clip.tar'}']", "data.width=64", "data.height=32",
                               "steps=1", *SMALL_UNET])
    Trainer(cfg, tmp / "run").run()
    return tmp / "run"


def test_sample_video_writes_16_frames_344x192_h264(run_dir, tmp_path):
    out = tmp_path / "out.mp4"
    assert hdvg_main(["sample-video", "--checkpoint", str(run_dir), "a city at night", "--output", str(out),
                      "--seed", "3", "--steps", "2"]) == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 16 and frames[0].shape == (192, 344, 3)


def test_generate_is_deterministic_per_prompt_and_seed(run_dir):
    sampler = Sampler.load(run_dir, "cpu")
    pair = sampler.generate(["a city", "a city"], [1, 2], steps=1, num_frames=4, width=64, height=32)
    assert pair.shape == (2, 4, 32, 64, 3) and pair.dtype == np.uint8
    alone = sampler.generate(["a city"], [2], steps=1, num_frames=4, width=64, height=32)
    assert np.abs(alone[0].astype(int) - pair[1]).max() <= 1  # same (prompt, seed), another batch
    assert np.abs(pair[0].astype(int) - pair[1]).mean() > 1  # another seed, another video
    with pytest.raises(ValueError, match="seeds"):
        sampler.generate(["a", "b"], [1])
