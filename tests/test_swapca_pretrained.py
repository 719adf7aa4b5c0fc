"""Starting the video U-Net from diffusers U-Nets (model.pretrained): tiny random models of the real classes,
saved with save_pretrained in tmp_path and loaded back from that path."""
from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel

from model.config import UNetConfig
from model.pretrained import load_pretrained, source_name
from model.unet import VideoUNet

TINY_2D = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
               attention_head_dim=(2, 2, 4, 4),  # heads per level: width 8 everywhere, as UNetConfig.tiny()
               down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
               up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, sample_size=8)
TINY_3D = dict(block_out_channels=(16, 16, 32, 32), layers_per_block=1, cross_attention_dim=32, norm_num_groups=8,
               attention_head_dim=8)


def _inputs(frames=2):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 4, frames, 16, 21, generator=g), torch.tensor([5, 600]), torch.randn(2, 7, 32, generator=g)


def _randomise_norms(model: torch.nn.Module) -> None:
    """Random init leaves GroupNorm/LayerNorm at identity; give them values so a mis-mapped norm shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm)) and module.weight is not None:
                module.weight.copy_(1 + 0.3 * torch.randn(module.weight.shape, generator=g))
                module.bias.copy_(0.3 * torch.randn(module.bias.shape, generator=g))


@pytest.mark.parametrize("linear_projection", [True, False])
def test_image_unet_is_reproduced_frame_by_frame(tmp_path, linear_projection):
    torch.manual_seed(0)
    image_unet = UNet2DConditionModel(**TINY_2D, use_linear_projection=linear_projection).eval()
    _randomise_norms(image_unet)
    image_unet.save_pretrained(tmp_path / "unet")  # a pipeline folder: the loader finds unet/
    unet = VideoUNet(UNetConfig.tiny()).eval()  # Linear projections: SD 1.x's 1x1 convs are reshaped
    report = load_pretrained(unet, tmp_path, log=None)
    assert report.source_format == "UNet2DConditionModel" and not report.unused
    assert len(report.loaded) == len(image_unet.state_dict())
    assert bool(report.reshaped) == (not linear_projection)
    assert all(("temp" in n or "transformer_in" in n or "fusions" in n) for n in report.new)

    sample, timestep, text = _inputs()
    b, c, f, h, w = sample.shape
    with torch.no_grad():
        video = unet(sample, timestep, text)
        frames = image_unet(sample.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), timestep.repeat_interleave(f),
                            text.repeat_interleave(f, dim=0)).sample
        frames = frames.view(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        images = unet(sample[:, :, :1], timestep, text, images=True)
    assert (video - frames).abs().max().item() < 1e-5
    assert (images - frames[:, :, :1]).abs().max().item() < 1e-5


def test_modelscope_unet_loads_what_the_report_says(tmp_path, capsys):
    torch.manual_seed(0)
    video_unet = UNet3DConditionModel(**TINY_3D).eval()
    _randomise_norms(video_unet)
    with torch.no_grad():  # temporal layers away from their zero start, so their loading is visible
        for name, p in video_unet.named_parameters():
            if "conv4" in name or "proj_out" in name:
                p.copy_(0.1 * torch.randn_like(p))
    video_unet.save_pretrained(tmp_path)
    unet = VideoUNet(UNetConfig.tiny()).eval()
    report = load_pretrained(unet, tmp_path)
    printed = capsys.readouterr().out
    assert f"loaded {len(report.loaded)} tensors" in printed and "unused 0" in printed

    theirs, ours = video_unet.state_dict(), unet.state_dict()
    assert sorted(report.loaded) == sorted(theirs) and not report.unused
    assert report.new == [n for n in ours if ".fusions." in n or ".temporal_skip." in n]
    assert any(".temporal_skip." in n for n in report.new)  # UNetConfig.tiny() has temporal skips
    assert all(n in report.zeroed for n in report.new if ".temporal_skip." in n)
    assert all(torch.equal(ours[n], theirs[n]) for n in report.loaded)
    assert report.zeroed and all(not ours[n].any() for n in report.zeroed)
    sample, timestep, text = _inputs(frames=3)
    with torch.no_grad():
        diff = (unet(sample, timestep, text) - video_unet(sample, timestep, text).sample).abs().max().item()
    assert diff == 0  # exactly ModelScope: every new layer (fusions, temporal skips) starts at zero
    # The loaded temporal modules carry features, so the new temporal skips learn from the first step.
    unet(sample, timestep, text).square().mean().backward()
    skips = [m for n, m in unet.named_modules() if n.endswith("temporal_skip")]
    assert skips and all(m.proj.weight.grad.abs().sum() > 0 for m in skips)


def test_sources_that_do_not_fit_are_refused(tmp_path):
    UNet2DConditionModel(**{**TINY_2D, "cross_attention_dim": 16}).save_pretrained(tmp_path / "text")
    with pytest.raises(ValueError, match="do not fit this UNetConfig"):
        load_pretrained(VideoUNet(UNetConfig.tiny()), tmp_path / "text", log=None)
    UNet2DConditionModel(**{**TINY_2D, "attention_head_dim": 2}).save_pretrained(tmp_path / "heads")
    with pytest.raises(ValueError, match="attention_head_dim"):
        load_pretrained(VideoUNet(UNetConfig.tiny()), tmp_path / "heads", log=None)


def test_paper_config_maps_modelscope_and_sd2_by_name_and_shape():
    with torch.device("meta"):
        ours = {k: v.shape for k, v in VideoUNet(UNetConfig.paper()).state_dict().items()}
        sources = {"UNet3DConditionModel": UNet3DConditionModel(),  # ModelScope's architecture
                   "UNet2DConditionModel": UNet2DConditionModel(  # Stable Diffusion 2.x's
                       cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True)}
    for fmt, source in sources.items():
        theirs = {k: v.shape for k, v in source.state_dict().items()}
        mapped = {source_name(k, fmt): k for k in ours if source_name(k, fmt)}
        assert set(mapped) == set(theirs), fmt
        assert all(theirs[s] == ours[k] for s, k in mapped.items()), fmt
