"""The Swap-CA fusion and the video U-Net (model.swapca, model.unet, model.config) at the tiny size."""
from __future__ import annotations

import json
import math

import pytest
import torch

from model.config import UNetConfig
from model.swapca import MergeConv, SwapCrossAttention3D
from model.unet import VideoUNet, parameter_count


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero values everywhere, zero-initialised output layers included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _closing_fusions(unet: VideoUNet) -> list[torch.nn.Module]:
    """The fusion closing each encoder then decoder block, in execution order."""
    return [block.fusions[-1] for block in [*unet.down_blocks, *unet.up_blocks]]


def _inputs(frames=4, height=24, width=43, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(2, 4, frames, height, width, generator=g)
    return sample, torch.tensor([10, 700]), torch.randn(2, 7, 32, generator=g)


def test_query_role_and_shift_alternate_block_by_block():
    cfg = UNetConfig.tiny()
    fusions = _closing_fusions(VideoUNet(cfg))
    assert len(fusions) == 2 * len(cfg.block_out_channels)
    assert [f.query for f in fusions] == ["spatial", "temporal"] * len(cfg.block_out_channels)
    assert [f.shift for f in fusions] == [0, math.ceil(cfg.window[0] / 2)] * len(cfg.block_out_channels)
    fixed = _closing_fusions(VideoUNet(UNetConfig.tiny(fusion="temporal_queries")))
    assert {f.query for f in fixed} == {"temporal"}
    # A config can start in addition mode (training stages 1-2).
    assert not any(f.enabled for f in _closing_fusions(VideoUNet(UNetConfig.tiny(fusion_enabled=False))))
    # Inside a block, and everywhere in the no-fusion baseline, s and t merge with a 1x1x1 convolution.
    unet = VideoUNet(UNetConfig.tiny(fusion="none"))
    assert all(isinstance(f, MergeConv) for b in unet.blocks() for f in b.fusions)


def test_swapped_block_queries_with_the_temporal_features():
    torch.manual_seed(0)
    spatial = SwapCrossAttention3D(8, query="spatial", heads=2, window=(2, 2, 2), shift=0, groups=4)
    _randomise(spatial)
    temporal = SwapCrossAttention3D(8, query="temporal", heads=2, window=(2, 2, 2), shift=0, groups=4)
    temporal.load_state_dict(spatial.state_dict())
    with torch.no_grad():
        temporal.norm_s.load_state_dict(spatial.norm_t.state_dict())
        temporal.norm_t.load_state_dict(spatial.norm_s.state_dict())
    s, t = torch.randn(2 * 4, 8, 4, 6), torch.randn(2 * 4, 8, 4, 6)
    # Temporal queries on (s, t) are spatial queries with the roles exchanged, and not the same as on (s, t).
    assert torch.allclose(temporal(s, t, 4), spatial(t, s, 4), atol=1e-6)
    assert not torch.allclose(temporal(s, t, 4), spatial(s, t, 4), atol=1e-3)


@pytest.mark.parametrize("fusion", ["swap", "st_wsa"])
def test_zero_proj_out_fusion_is_t_plus_s_and_addition_mode_whatever_the_weights(fusion):
    torch.manual_seed(1)
    cfg = UNetConfig.tiny(fusion=fusion)
    block = _closing_fusions(VideoUNet(cfg))[1]
    s, t = torch.randn(8, 16, 5, 7), torch.randn(8, 16, 5, 7)
    assert torch.equal(block(s, t, 4), s + t)  # Proj_out starts at zero
    _randomise(block, seed=2)
    assert not torch.allclose(block(s, t, 4), s + t, atol=1e-3)
    block.enabled = False
    assert torch.equal(block(s, t, 4), s + t)


def test_addition_mode_switches_at_run_time_with_the_same_parameters():
    cfg = UNetConfig.tiny(temporal_conv_dropout=0.0)
    unet = VideoUNet(cfg).eval()
    _randomise(unet, seed=3)
    sample, timestep, text = _inputs(frames=3, height=12, width=13)
    keys = list(unet.state_dict())
    with torch.no_grad():
        fused = unet(sample, timestep, text)
        unet.set_fusion_enabled(False)
        added = unet(sample, timestep, text)
        assert list(unet.state_dict()) == keys
        assert not any(p.requires_grad for f in _closing_fusions(unet) for p in f.parameters())
        # Addition mode equals the model whose Swap-CA outputs are zero.
        for f in _closing_fusions(unet):
            f.proj_out.weight.zero_()
            f.proj_out.bias.zero_()
        unet.set_fusion_enabled(True)
        assert all(p.requires_grad for p in unet.parameters())
        zeroed = unet(sample, timestep, text)
    assert torch.allclose(added, zeroed, atol=1e-5)
    assert not torch.allclose(added, fused, atol=1e-3)


def test_odd_latent_sizes_come_back_and_train():
    unet = VideoUNet(UNetConfig.tiny())
    sample, timestep, text = _inputs()  # (2, 4, 4, 24, 43): 43 -> 22 -> 11 -> 6 and 24 -> 12 -> 6 -> 3
    out = unet(sample, timestep, text)
    assert out.shape == sample.shape
    out.square().mean().backward()
    grads = [p.grad for p in unet.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # A scalar timestep is broadcast over the batch.
    with torch.no_grad():
        assert torch.allclose(unet(sample, 10, text)[0], out[0].detach(), atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(4)
    unet = VideoUNet(UNetConfig.tiny(temporal_conv_dropout=0.0))
    _randomise(unet, seed=4)
    sample, timestep, text = _inputs(frames=2, height=10, width=11)
    unet(sample, timestep, text).square().mean().backward()
    plain = [p.grad.clone() for p in unet.parameters()]
    unet.zero_grad()
    unet.enable_gradient_checkpointing()
    unet(sample, timestep, text).square().mean().backward()
    assert all(torch.allclose(a, p.grad, rtol=1e-4, atol=1e-6) for a, p in zip(plain, unet.parameters()))


def test_images_mode_skips_the_temporal_modules():
    unet = VideoUNet(UNetConfig.tiny()).eval()
    sample, timestep, text = _inputs(frames=1, height=16, width=19)
    with torch.no_grad():
        before = unet(sample, timestep, text, images=True)
        for name, p in unet.named_parameters():
            if "temp" in name or "transformer_in" in name or "fusions" in name:
                p.add_(torch.randn_like(p))
        assert torch.equal(unet(sample, timestep, text, images=True), before)
        assert not torch.allclose(unet(sample, timestep, text), before, atol=1e-3)
    with pytest.raises(ValueError, match="F == 1"):
        unet(torch.randn(1, 4, 2, 8, 8), 1, text[:1], images=True)


@pytest.mark.parametrize("overrides", [dict(fusion="none"), dict(fusion="spatial_queries"), dict(fusion="st_wsa"),
                                       dict(fusion_attention="global"), dict(window=(1, 2, 2))])
def test_ablation_variants_run(overrides):
    unet = VideoUNet(UNetConfig.tiny(**overrides))
    sample, timestep, text = _inputs(frames=3, height=8, width=9)
    with torch.no_grad():
        assert torch.isfinite(unet(sample, timestep, text)).all()


def test_config_round_trip_and_errors_name_the_field():
    cfg = UNetConfig.tiny(fusion="st_wsa", window=(4, 2, 2))
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="UNetConfig.fusion"):
        UNetConfig.tiny(fusion="concat")
    with pytest.raises(ValueError, match="UNetConfig.attention_levels"):
        UNetConfig.tiny(attention_levels=(True,))
    with pytest.raises(ValueError, match="UNetConfig.norm_num_groups"):
        UNetConfig.tiny(norm_num_groups=5)
    with pytest.raises(ValueError, match="unknown field"):
        UNetConfig.from_dict({**cfg.to_dict(), "windows": [1, 1, 1]})


def test_paper_parameter_count():
    # Table 2: 1.48 G without Swap-CA, 1.60 G with; the gap is the eight Swap-CA blocks minus their merges.
    base, swap = parameter_count(UNetConfig.paper(fusion="none")), parameter_count(UNetConfig.paper())
    plain = parameter_count(UNetConfig.paper(temporal_skips=False))
    print(f"paper config: {base / 1e9:.3f} G without Swap-CA, {swap / 1e9:.3f} G with "
          f"({swap:,} with temporal skips, {plain:,} without)")
    assert 1.40e9 < base < 1.50e9 and 0.11e9 < swap - base < 0.13e9
    # Six skips (three across down-samplers, three across up-samplers): 1x1 convs 320<->640 and 640<->1280,
    # per-channel scales at 1280 -> 1280.
    down = (320 * 640 + 640) + (640 * 1280 + 1280) + (1280 + 1280)
    up = (1280 + 1280) + (1280 * 640 + 640) + (640 * 320 + 320)
    assert swap - plain == down + up


# ---------------------------------------------------------------- temporal skip connections (Sec. 4)

def _temporal_skips(unet: VideoUNet) -> list[torch.nn.Module]:
    return [m for n, m in unet.named_modules() if n.endswith("temporal_skip")]


def _carry_temporal_features(unet: VideoUNet, seed: int = 5) -> None:
    """Temporal modules away from their zero start, as after loading ModelScope; everything else unchanged."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if ("temp_" in name or "transformer_in" in name) and "temporal_skip" not in name:
                p.add_(0.2 * torch.randn(p.shape, generator=g))


def test_temporal_skips_cross_each_resampler_and_start_at_zero():
    cfg = UNetConfig.tiny()
    unet = VideoUNet(cfg)
    levels = len(cfg.block_out_channels)
    names = [n for n, _ in unet.named_modules() if n.endswith("temporal_skip")]
    assert names == [f"down_blocks.{i}.temporal_skip" for i in range(1, levels)] + \
                    [f"up_blocks.{i}.temporal_skip" for i in range(1, levels)]
    assert all(not p.any() for m in _temporal_skips(unet) for p in m.parameters())
    assert not _temporal_skips(VideoUNet(UNetConfig.tiny(temporal_skips=False)))
    with pytest.raises(ValueError, match="UNetConfig.temporal_skips"):
        UNetConfig.tiny(temporal_skips=1)


def test_temporal_skips_get_a_gradient_once_the_temporal_modules_carry_features():
    torch.manual_seed(6)
    unet = VideoUNet(UNetConfig.tiny(temporal_conv_dropout=0.0))
    sample, timestep, text = _inputs(frames=3, height=12, width=13)
    unet(sample, timestep, text).square().mean().backward()
    # From scratch the temporal modules add nothing (t = 0): only the skips' biases learn.
    assert all(not m.proj.weight.grad.any() for m in _temporal_skips(unet))
    unet.zero_grad()
    _carry_temporal_features(unet)
    unet(sample, timestep, text).square().mean().backward()
    for m in _temporal_skips(unet):
        assert m.proj.weight.grad.abs().sum() > 0 and m.proj.bias.grad.abs().sum() > 0


def test_temporal_skips_change_videos_and_never_images():
    torch.manual_seed(7)
    unet = VideoUNet(UNetConfig.tiny(temporal_conv_dropout=0.0)).eval()
    _carry_temporal_features(unet)
    video, timestep, text = _inputs(frames=3, height=12, width=13)
    image = video[:, :, :1]
    with torch.no_grad():
        before_video, before_image = unet(video, timestep, text), unet(image, timestep, text, images=True)
        for m in _temporal_skips(unet):
            _randomise(m, seed=8)
        after_video, after_image = unet(video, timestep, text), unet(image, timestep, text, images=True)
    assert not torch.allclose(before_video, after_video, atol=1e-3)
    assert torch.equal(before_image, after_image)
