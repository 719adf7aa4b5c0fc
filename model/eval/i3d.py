"""The FVD feature detector: an I3D network trained on Kinetics-400, loaded from a local file.

Two published files are accepted (neither is downloaded here; pass its path):

* `i3d_torchscript.pt` (StyleGAN-V, "perfectly reproduced" TF-hub I3D of the original FVD): a TorchScript
  module called as StyleGAN-V's `frechet_video_distance.py` calls it,
  `detector(x, rescale=True, resize=True, return_features=True)`, x uint8 (B, 3, T, H, W) in 0-255,
  returning the 400-d features before the softmax.
* `i3d_pretrained_400.pt` (VideoGPT / common_metrics_on_video_quality): a state dict of the PyTorch
  InceptionI3d port (piergiaj/pytorch-i3d); `InceptionI3d` below is that architecture with the same layer
  names, so the file loads strictly. Input is float in [-1, 1]; the output is the 400 logits averaged over
  time, as VideoGPT's port returns them.

Both receive the same prepared clip (16 frames, 224x224 by the report's resize policy, `frames.py`), so the
TorchScript module's internal resize is the identity and the two detectors differ only in their weights.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

KINETICS_CLASSES = 400
DETECTOR_KINDS = ("torchscript", "inception_i3d")


# ---------------------------------------------------------------------------------------------------------
# InceptionI3d (Carreira & Zisserman 2017), names as in piergiaj/pytorch-i3d
# ---------------------------------------------------------------------------------------------------------

def _same_padding(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """TensorFlow 'SAME' padding of a (B, C, T, H, W) tensor (extra padding at the end), as the port does."""
    pads = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):
        total = max(k - (s if size % s == 0 else size % s), 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm -> ReLU; the logits layer has a bias and neither of the others."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 activation: bool = True, batch_norm: bool = True, bias: bool = False):
        super().__init__()
        self.kernel, self.stride, self.activation = tuple(kernel), tuple(stride), activation
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=bias)
        # eps and momentum of VideoGPT's port, the module its i3d_pretrained_400.pt was published with
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_same_padding(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.activation else x


class MaxPool3dSame(nn.MaxPool3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_same_padding(x, self.kernel_size, self.stride))


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max-pool -> 1x1; concatenated on channels."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a = Unit3D(in_channels, widths[1])
        self.b1b = Unit3D(widths[1], widths[2], kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, widths[3])
        self.b2b = Unit3D(widths[3], widths[4], kernel=(3, 3, 3))
        self.b3a = MaxPool3dSame(kernel_size=(3, 3, 3), stride=(1, 1, 1))
        self.b3b = Unit3D(in_channels, widths[5])
        self.out_channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, in_channels, branch widths) of the Mixed blocks, and the pools between them
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)), "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)), "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)), "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)), "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """Inception-v1 inflated to 3D. (B, 3, T, 224, 224) in [-1, 1] -> (B, num_classes) logits, averaged
    over the remaining time steps (one for 16 frames)."""

    def __init__(self, num_classes: int = KINETICS_CLASSES, in_channels: int = 3):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame(kernel_size=(1, 3, 3), stride=(1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame(kernel_size=(1, 3, 3), stride=(1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame(kernel_size=(3, 3, 3), stride=(2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            setattr(self, name, InceptionModule(*_MIXED[name]))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame(kernel_size=(2, 2, 2), stride=(2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.avg_pool = nn.AvgPool3d(kernel_size=(2, 7, 7), stride=(1, 1, 1))
        self.dropout = nn.Dropout(0.5)
        self.logits = Unit3D(self.Mixed_5c.out_channels, num_classes, activation=False, batch_norm=False,
                             bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, module in self.named_children():
            if name in ("avg_pool", "dropout", "logits"):
                break
            x = module(x)  # (B, 1024, T/8, 7, 7) after Mixed_5c
        x = self.logits(self.dropout(self.avg_pool(x)))  # (B, classes, T', 1, 1)
        return x.flatten(2).mean(dim=2)  # (B, classes)


# ---------------------------------------------------------------------------------------------------------
# Loading and calling either file
# ---------------------------------------------------------------------------------------------------------

def detector_kind(path: str | Path) -> str:
    """'torchscript' for a TorchScript archive (it holds a code/ folder), else 'inception_i3d'."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D detector file not found: {path} (pass --i3d PATH: StyleGAN-V's "
                                f"i3d_torchscript.pt or VideoGPT's i3d_pretrained_400.pt)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any("/code/" in name for name in archive.namelist()):
                return "torchscript"
    return "inception_i3d"


class I3DDetector:
    """An I3D file loaded for inference: `features(clips)` maps uint8 (B, T, 224, 224, 3) clips to float64
    (B, 400) features."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        self.path, self.device = str(path), torch.device(device)
        self.kind = detector_kind(path)
        if self.kind == "torchscript":
            self.module = torch.jit.load(self.path, map_location=self.device).eval()
        else:
            self.module = InceptionI3d()
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            self.module.load_state_dict(state, strict=True)
            self.module = self.module.to(self.device).eval()

    @torch.no_grad()
    def features(self, clips: torch.Tensor) -> np.ndarray:
        x = torch.as_tensor(clips).to(self.device).permute(0, 4, 1, 2, 3).contiguous()  # (B, 3, T, H, W)
        if self.kind == "torchscript":
            out = self.module(x, rescale=True, resize=True, return_features=True)
        else:
            out = self.module(x.float() / 127.5 - 1.0)
        return out.double().cpu().numpy()  # (B, 400)
