"""RCAN x4 shapes and sizes, tiled inference, the discriminator, the perceptual loss and the SR configs."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from model.sr.config import ConfigError, RCANConfig, load_config, paper, tiny
from model.sr.losses import PerceptualLoss, gan_loss, vgg19_features
from model.sr.rcan import RCAN, UNetDiscriminatorSN, parameter_count
from model.sr.upscale import Upscaler


@pytest.fixture(scope="module")
def tiny_rcan() -> RCAN:
    torch.manual_seed(0)
    return RCAN(tiny().rcan).eval()


@pytest.mark.parametrize("h, w", [(48, 48), (192, 344)])
def test_x4_shapes(tiny_rcan, h, w):
    with torch.no_grad():
        out = tiny_rcan(torch.rand(1, 3, h, w))
    assert out.shape == (1, 3, 4 * h, 4 * w)  # 48 -> 192; 344x192 -> 1376x768 (the paper's final size)


def test_paper_rcan_matches_the_reference_sizes():
    # RCAN's own 10 x 20 network has 15.59 M parameters (the RCAN paper's ~16 M); ours at 10 x 8 follows from it
    assert parameter_count(RCAN(RCANConfig(num_groups=10, blocks_per_group=20))) == 15_592_355
    assert parameter_count(RCAN(paper().rcan)) == 6_660_035
    assert (paper().rcan.num_groups, paper().rcan.blocks_per_group) == (10, 8)


def test_mean_shift_and_value_range(tiny_rcan):
    """With every conv at zero the network outputs the mean it added back: MeanShift in, x255, /255, MeanShift out."""
    model = RCAN(tiny().rcan)
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    out = model(torch.rand(1, 3, 8, 8))
    assert torch.allclose(out, torch.tensor(tiny().rcan.rgb_mean).view(1, 3, 1, 1).expand_as(out))


def test_tiled_equals_untiled_inside_tiles(tiny_rcan):
    frames = np.random.default_rng(0).integers(0, 256, (3, 96, 80, 3), dtype=np.uint8)
    whole = Upscaler(tiny_rcan, "cpu", batch_size=2).upscale(frames)
    assert whole.shape == (3, 384, 320, 3) and whole.dtype == np.uint8
    padded = Upscaler(tiny_rcan, "cpu", tile=32, tile_pad=16, batch_size=2).upscale(frames)
    seams = Upscaler(tiny_rcan, "cpu", tile=32, tile_pad=0, batch_size=2).upscale(frames)
    diff = np.abs(padded.astype(int) - whole.astype(int))
    # convolutions see the same context; only channel attention pools over the padded tile instead of the frame
    assert diff.max() <= 2 and diff.mean() < 0.05
    assert np.abs(seams.astype(int) - whole.astype(int)).max() > 10  # without context the seams show


def test_discriminator_is_spectral_normalised_and_per_pixel():
    disc = UNetDiscriminatorSN(8)
    logits = disc(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 1, 64, 64)
    normalised = [m for m in disc.modules() if hasattr(m, "weight_orig")]
    assert len(normalised) == 8  # every conv but the first and the last, as Real-ESRGAN's
    loss_real, loss_fake = gan_loss(logits, real=True), gan_loss(logits, real=False)
    assert torch.isfinite(loss_real) and torch.isfinite(loss_fake)
    assert float(gan_loss(torch.full((1, 1, 2, 2), 20.0), real=True)) < 1e-6


def test_perceptual_loss_loads_a_torchvision_layout_state_dict(tmp_path):
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg19_features(36).state_dict().items()}  # the full features stack
    state["classifier.0.weight"] = torch.zeros(2, 2)  # extra torchvision keys are ignored
    torch.save(state, tmp_path / "vgg19.pth")
    loss = PerceptualLoss.from_file(tmp_path / "vgg19.pth")
    assert torch.equal(loss.features[34].weight, state["features.34.weight"])
    x = torch.rand(1, 3, 32, 32)
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, torch.rand(1, 3, 32, 32))) > 0
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a VGG19 state dict"):
        PerceptualLoss.from_file(tmp_path / "bad.pth")


def test_configs_validate_and_name_the_field(tmp_path):
    assert tiny().rcan.num_features == 16 and paper().degrade.second.blur_prob == 0.8
    cfg = load_config("tiny", ["degrade.first.jpeg_range=[40, 90]", "train.l1_steps=7"])
    assert cfg.degrade.first.jpeg_range == (40.0, 90.0) and cfg.train.l1_steps == 7
    with pytest.raises(ConfigError, match=r"\n  degrade\.second\.jpeg_range: .*qualities"):
        load_config("tiny", ["degrade.second.jpeg_range=[90, 30]"])
    with pytest.raises(ConfigError, match=r"\n  rcan\.squeeze: .*must divide num_features"):
        load_config("paper", ["rcan.squeeze=7"])
    with pytest.raises(ConfigError, match=r"\n  data\.patch_size: .*multiple of 8"):
        load_config("tiny", ["data.patch_size=60"])
    with pytest.raises(ConfigError, match=r"\n  train\.nope: Extra inputs are not permitted"):
        load_config("tiny", ["train.nope=1"])
    path = tmp_path / "sr.json"
    path.write_text(json.dumps({"rcan": {"num_groups": 8, "blocks_per_group": 20}}))
    from_file = load_config(str(path))
    assert (from_file.rcan.num_groups, from_file.rcan.blocks_per_group, from_file.rcan.num_features) == (8, 20, 64)
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(str(tmp_path / "missing.yaml"))


def test_perceptual_off_without_weights_says_so(caplog):
    from model.sr.train import SRTrainer

    cfg = load_config("tiny", ["loss.vgg_path=/nonexistent/vgg19.pth"])
    with caplog.at_level(logging.INFO):
        trainer = SRTrainer(cfg, torch.device("cpu"))
    assert trainer.perceptual is None
    assert "perceptual loss OFF" in caplog.text and "/nonexistent/vgg19.pth" in caplog.text
