"""Temporal skip connections (Sec. 4): "skip connections that connect temporal modules separated by spatial
down/upsampling modules". The temporal features t of a block's last layer reach the first layer of the next
block across its down- or up-sampler, resized to the next size and projected, and are added to that layer's t
before its fusion (docs/swapca.md says why this reading)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TemporalSkip(nn.Module):
    """t of the previous block (B*F, C_in, h, w) -> a term for the next block's first t (B*F, C_out, H, W).

    Resized like the features it skips beside: area-averaged down (the down-sampler's size), nearest up to the
    encoder's size (what `Upsample2D` does with an explicit size). The projection is a 1x1 convolution when the
    width changes and a per-channel scale (a depthwise 1x1 convolution) when it does not; either starts at zero,
    so a new skip leaves the model unchanged (a loaded ModelScope or image U-Net computes what it computed)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        groups = out_channels if in_channels == out_channels else 1
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1, groups=groups)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, t: torch.Tensor, size: torch.Size | tuple[int, int]) -> torch.Tensor:
        size = tuple(size)
        if tuple(t.shape[-2:]) != size:
            mode = "area" if size[0] <= t.shape[-2] and size[1] <= t.shape[-1] else "nearest"
            t = F.interpolate(t, size=size, mode=mode)  # (B*F, C_in, H, W)
        return self.proj(t)  # (B*F, C_out, H, W)
