"""RCAN x4 (Zhang et al., "Image Super-Resolution Using Very Deep Residual Channel Attention Networks", 2018) and
the spectral-norm U-Net discriminator of Real-ESRGAN used for its GAN stage.

RCAN: head conv -> residual groups (each: RCABs, a conv, a short skip) -> conv -> long skip -> two x2 pixel
shuffles -> tail conv. Inputs and outputs are RGB in [0, 1]; inside, the reference RCAN's MeanShift subtracts the
DIV2K mean and the network works on the 0-255 scale (`img_range`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from model.sr.config import RCANConfig


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation over channels: global average pool -> C/r -> ReLU -> C -> sigmoid gate."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // squeeze, 1),
                                  nn.ReLU(inplace=True), nn.Conv2d(channels // squeeze, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)  # (B, C, H, W) * (B, C, 1, 1)


class RCAB(nn.Module):
    """Residual channel-attention block: conv -> ReLU -> conv -> channel attention, plus the input."""

    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Conv2d(channels, channels, 3, padding=1), ChannelAttention(channels, squeeze))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """RCABs then a conv, with the group's short skip connection."""

    def __init__(self, channels: int, squeeze: int, num_blocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(channels, squeeze) for _ in range(num_blocks)],
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(nn.Module):
    """x4 RCAN: (B, 3, h, w) in [0, 1] -> (B, 3, 4h, 4w), unclamped (clamp when converting to pixels)."""

    def __init__(self, cfg: RCANConfig):
        super().__init__()
        c = cfg.num_features
        self.img_range = cfg.img_range
        self.register_buffer("rgb_mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[ResidualGroup(c, cfg.squeeze, cfg.blocks_per_group)
                                    for _ in range(cfg.num_groups)], nn.Conv2d(c, c, 3, padding=1))
        # each x2 step: conv to 4C channels, then PixelShuffle(2) folds them into a 2x larger C-channel map
        self.upsample = nn.Sequential(nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
                                      nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2))
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.rgb_mean.to(x.dtype)
        x = (x - mean) * self.img_range      # MeanShift(sub), 0-255 scale
        x = self.head(x)                     # (B, C, h, w)
        x = x + self.body(x)                 # long skip
        x = self.tail(self.upsample(x))      # (B, C, 4h, 4w) -> (B, 3, 4h, 4w)
        return x / self.img_range + mean     # MeanShift(add), back to [0, 1]


class UNetDiscriminatorSN(nn.Module):
    """Real-ESRGAN's U-Net discriminator with spectral norm: a per-pixel real/fake logit map (B, 1, H, W).

    Three stride-2 convs down, three bilinear x2 + conv up with skips, two more convs; every conv but the first and
    the last is spectrally normalised. H and W must be multiples of 8."""

    def __init__(self, features: int = 64):
        super().__init__()
        f = features
        sn = spectral_norm
        self.conv0 = nn.Conv2d(3, f, 3, padding=1)
        self.down = nn.ModuleList([sn(nn.Conv2d(f, 2 * f, 4, 2, 1, bias=False)),
                                   sn(nn.Conv2d(2 * f, 4 * f, 4, 2, 1, bias=False)),
                                   sn(nn.Conv2d(4 * f, 8 * f, 4, 2, 1, bias=False))])
        self.up = nn.ModuleList([sn(nn.Conv2d(8 * f, 4 * f, 3, padding=1, bias=False)),
                                 sn(nn.Conv2d(4 * f, 2 * f, 3, padding=1, bias=False)),
                                 sn(nn.Conv2d(2 * f, f, 3, padding=1, bias=False))])
        self.extra = nn.ModuleList([sn(nn.Conv2d(f, f, 3, padding=1, bias=False)),
                                    sn(nn.Conv2d(f, f, 3, padding=1, bias=False))])
        self.out = nn.Conv2d(f, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = lambda t: F.leaky_relu(t, 0.2)
        skips = [act(self.conv0(x))]                  # (B, f, H, W)
        for conv in self.down:
            skips.append(act(conv(skips[-1])))        # (B, 2f, H/2, W/2) ... (B, 8f, H/8, W/8)
        y = skips.pop()
        for conv in self.up:
            y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
            y = act(conv(y)) + skips.pop()            # back up to (B, f, H, W)
        for conv in self.extra:
            y = act(conv(y))
        return self.out(y)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
