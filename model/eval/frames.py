"""Spatial preparation of frames shared by the metrics (uint8 in, uint8 out).

VideoFactory (appendix D.3) scores 16-frame clips: a real clip contributes its central 16 frames, a
generated clip (16 frames) all of them; `model.data` selects them (`central_indices`). At 16:9 the way a
frame becomes 224x224 changes FVD, so it is a named policy that every report records:

    full         the whole frame resized to 224x224 (aspect squeezed; what the TF FVD and StyleGAN-V's
                 TorchScript I3D with `resize=True` do)
    center-crop  short side resized to 224, then the central 224x224 (VideoGPT / common_metrics)

Resizing is bilinear with antialiasing: real clips are 720p and generated ones 344x192, and without the
low-pass the 720p side alone would alias, which FVD would count as a difference between the two sets.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CLIP_FRAMES = 16  # frames per scored clip (appendix D.3)
RESIZE_POLICIES = ("full", "center-crop")


def resize_frames(frames: np.ndarray | torch.Tensor, size: int, policy: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, size, size, 3) uint8 by `policy` (see module docstring)."""
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {policy!r}")
    x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    h, w = x.shape[-2:]
    if policy == "full":
        target = (size, size)
    else:
        scale = size / min(h, w)
        target = (max(size, round(h * scale)), max(size, round(w * scale)))
    if (h, w) != target:
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()  # (N, size, size, 3)
