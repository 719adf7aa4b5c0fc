"""`hdvg encode-latents` on real (downscaled) shards: every frame's VAE posterior mean stored, a rerun skips
finished shards, and the trainer trains from the latent shards without decoding video."""
from __future__ import annotations

import io

import numpy as np
import torch

from model.components import FrozenEncoders
from model.data import VideoBytes, center_crop, cover_size, expand_shards, iter_tar_samples
from model.latents import encode_latents
from model.train import Trainer
from model.train_config import load_config
from tests.model_builders import downscaled_clip, write_shard
from model.tiny import save_tiny_components
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)

SMALL_UNET = ["unet.block_out_channels=[8, 16]", "unet.attention_levels=[true, false]", "unet.norm_num_groups=4"]


def test_latent_shards_hold_every_frame_and_train(curated_out, tmp_path):
    samples = {s["__key__"]: s for s in iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))}
    (tmp_path / "in").mkdir()
    write_shard(tmp_path / "in" / "000000.tar",
                [downscaled_clip(samples["testvideo%2E1"], 64, 36, max_frames=12)])
    components = save_tiny_components(tmp_path / "components")
    assert encode_latents(str(tmp_path / "in" / "*.tar"), tmp_path / "lat", str(components), size=(64, 32)) == 1
    assert encode_latents(str(tmp_path / "in" / "*.tar"), tmp_path / "lat", str(components), size=(64, 32)) == 0

    (stored,) = iter_tar_samples([str(tmp_path / "lat" / "shards" / "000000.tar")])
    latents = np.load(io.BytesIO(stored["npy"]))
    assert latents.shape == (12, 4, 4, 8) and latents.dtype == np.float16
    assert stored["txt"] == b"a slideshow of photographs of a city"
    # the same numbers as encoding the loader's frames directly (posterior mean)
    video = VideoBytes(next(iter_tar_samples([str(tmp_path / "in" / "000000.tar")]))["mp4"])
    frames = center_crop(video.decode(list(range(12)), cover_size(*video.size, 64, 32)), 64, 32)
    direct = FrozenEncoders.load(str(components)).encode_frames(torch.as_tensor(frames.copy())[None], sample=False)
    np.testing.assert_allclose(latents, direct[0].transpose(0, 1).numpy(), atol=2e-3, rtol=2e-3)

    cfg = load_config("tiny", [f"components={components}", f"data.shards=['{tmp_path / 'lat' / 'shards' / '*.tar'}']",
                               "data.latents=true", "data.width=64", "data.height=32", "steps=2", *SMALL_UNET])
    records = Trainer(cfg, tmp_path / "run").run()
    assert records[-1]["step"] == 2 and np.isfinite(records[-1]["loss"])
    assert records[-1]["samples"] == 4 and records[-1]["frames_decoded"] == 0 and records[-1]["frames_used"] == 16
