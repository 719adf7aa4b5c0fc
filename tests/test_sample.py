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


def test_export_writes_a_pipeline_folder_diffusers_loads(run_dir, tmp_path):
    """`hdvg export RUN DIR`: unet/ loads with diffusers' ModelMixin.from_pretrained and gives the RUN's EMA
    U-Net's outputs; the sampler on DIR gives the sampler on RUN's video; nothing in DIR is a pickle."""
    import json

    import torch
    from diffusers import DDIMScheduler, ModelMixin

    from model.sample import run_unet
    from model.unet import VideoUNet

    out = tmp_path / "exported"
    assert hdvg_main(["export", str(run_dir), str(out)]) == 0
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["model.unet", "VideoUNet"]
    assert {p.name for p in out.iterdir()} == {"unet", "vae", "text_encoder", "tokenizer", "scheduler",
                                               "model_index.json", "train_config.yaml"}
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()

    loaded = VideoUNet.from_pretrained(out / "unet")
    assert isinstance(loaded, ModelMixin)
    reference, _, _ = run_unet(run_dir)
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(1, 4, 3, 4, 8, generator=g), torch.randn(1, 77, loaded.config.cross_attention_dim)
    with torch.no_grad():
        want = reference.eval()(x, torch.tensor([500]), text)
        # safetensors' memory-mapped tensors are aligned unlike freshly allocated ones, so oneDNN may pick other
        # kernels: equal to float rounding (5e-7 measured), and bit for bit once the weights sit in fresh memory
        torch.testing.assert_close(loaded.eval()(x, torch.tensor([500]), text), want, rtol=1e-5, atol=1e-6)
        for p in loaded.parameters():
            p.data = p.data.clone()
        torch.testing.assert_close(loaded(x, torch.tensor([500]), text), want, rtol=0, atol=0)
    scheduler = DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    assert scheduler.config.steps_offset == 1 and scheduler.config.beta_schedule == "scaled_linear"

    from_run = Sampler.load(run_dir, "cpu").generate(["a city"], [4], steps=2, num_frames=4, width=64, height=32)
    from_export = Sampler.load(out, "cpu").generate(["a city"], [4], steps=2, num_frames=4, width=64, height=32)
    np.testing.assert_array_equal(from_run, from_export)
    assert hdvg_main(["export", str(run_dir), str(out)]) == 2  # never over an existing folder


def test_export_of_a_train_sr_run_is_safetensors_the_upscaler_loads(tmp_path):
    import torch

    from model.sr.config import load_config as load_sr_config
    from model.sr.train import SRTrainer
    from model.sr.upscale import load_upscaler, save_upscaler

    cfg = load_sr_config("tiny")
    trainer = SRTrainer(cfg, torch.device("cpu"))
    save_upscaler(tmp_path / "run", cfg, trainer.generator.state_dict(), step=7)
    assert hdvg_main(["export", str(tmp_path / "run"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    a = load_upscaler(tmp_path / "run", "cpu").model.state_dict()
    b = load_upscaler(tmp_path / "out", "cpu").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
