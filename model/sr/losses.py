"""The SR losses beyond L1: Real-ESRGAN's VGG19 perceptual loss and the vanilla GAN loss.

VGG19 is defined here, layer for layer as torchvision's `vgg19().features` (same module indices, so a torchvision
or BasicSR VGG19 state dict loads by name); torchvision itself does not import beside this torch. Weights come
only from a local file: without one the perceptual loss is off.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# torchvision's VGG19 ("E") feature layers: channels of each 3x3 conv, "M" a 2x2 max pool
VGG19_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# Real-ESRGAN x4plus perceptual_opt: features before ReLU, by torchvision module index, and their weights
PERCEPTUAL_LAYERS = {2: 0.1, 7: 0.1, 16: 1.0, 25: 1.0, 34: 1.0}  # conv1_2, conv2_2, conv3_4, conv4_4, conv5_4
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def vgg19_features(last: int = max(PERCEPTUAL_LAYERS)) -> nn.Sequential:
    """torchvision's `vgg19().features[: last + 1]`, randomly initialised."""
    layers: list[nn.Module] = []
    channels = 3
    for spec in VGG19_LAYERS:
        if spec == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, spec, 3, padding=1), nn.ReLU(inplace=False)]
            channels = spec
    return nn.Sequential(*layers[:last + 1])


class PerceptualLoss(nn.Module):
    """Weighted L1 between VGG19 features (before ReLU) of output and target, inputs in [0, 1] normalised with
    ImageNet statistics (x4plus use_input_norm). Frozen."""

    def __init__(self, features: nn.Sequential, layer_weights: dict[int, float] = PERCEPTUAL_LAYERS):
        super().__init__()
        self.features, self.layer_weights = features.eval(), layer_weights
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> "PerceptualLoss":
        """A VGG19 state dict saved by torch (torchvision's `vgg19` layout: `features.N.weight`; the classifier and
        layers past conv5_4 are ignored)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = vgg19_features()
        wanted = {f"features.{k}" for k in features.state_dict()}
        missing = sorted(wanted - set(state))
        if missing:
            raise ValueError(f"{path}: not a VGG19 state dict (torchvision layout): missing {missing[:3]}")
        features.load_state_dict({k[len("features."):]: state[k] for k in wanted})
        return cls(features)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        taps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.layer_weights:
                taps.append(x)
        return taps

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_taps = self._taps(target)
        return sum(w * F.l1_loss(o, t) for w, o, t in zip(self.layer_weights.values(), self._taps(output),
                                                           target_taps))


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Vanilla GAN loss: binary cross-entropy with logits against all-real (1) or all-fake (0) labels."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())
