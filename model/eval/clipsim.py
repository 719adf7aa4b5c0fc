"""CLIPSIM: the mean, over every frame of every sample, of the cosine similarity between the CLIP image
embedding of the frame and the CLIP text embedding of the sample's text (GODIVA's metric, which
VideoFactory reports for MSR-VTT and WebVid with CLIP ViT-B/32).

On the paper's 0-1 scale: the raw cosine, neither multiplied by 100 nor clipped at 0 as torchmetrics'
`CLIPScore` does. Frames go to the `CLIPProcessor` as uint8, so its `do_rescale` (1/255) applies once.
The crop policy is explicit because a 16:9 frame does not fit CLIP's square input:

    center-crop  the processor's own path: short side to 224, the central 224x224 (drops the left and
                 right 22 % of a 16:9 frame; what torchmetrics and most CLIPSIM scripts do)
    full         the whole frame squeezed to 224x224 first (`frames.resize_frames`), so nothing is cut
"""
from __future__ import annotations

import numpy as np
import torch

from hdvg.clip import ClipModel
from model.eval.frames import resize_frames

CLIPSIM_MODEL = "openai/clip-vit-base-patch32"  # CLIP ViT-B/32 (Table 5, appendix D.3)
CROP_POLICIES = ("center-crop", "full")


class ClipScorer(ClipModel):
    """`hdvg.clip.ClipModel` (a `transformers` CLIP from a local folder or hub name) with a crop policy."""

    def __init__(self, name_or_path: str = CLIPSIM_MODEL, device: str | torch.device = "cpu",
                 crop: str = "center-crop"):
        if crop not in CROP_POLICIES:
            raise ValueError(f"CLIPSIM crop policy must be one of {CROP_POLICIES}, got {crop!r}")
        super().__init__(str(name_or_path), device)
        self.crop = crop

    def image_embeddings(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) frames -> (N, D) unit-norm image embeddings."""
        if self.crop == "full":
            frames = resize_frames(frames, self.input_size, "full").numpy()
        return super().image_embeddings(frames)

    def frame_similarities(self, clips: list[np.ndarray], texts: list[str]) -> list[np.ndarray]:
        """Per clip, the cosine similarity of each of its frames with its text: (F_i,) float64 arrays."""
        if len(clips) != len(texts):
            raise ValueError(f"{len(clips)} clips but {len(texts)} texts")
        text = self.text_embeddings(texts)  # (B, D)
        image = self.image_embeddings(np.concatenate(clips))  # (sum F_i, D)
        owner = torch.repeat_interleave(torch.arange(len(clips)), torch.tensor([len(c) for c in clips]))
        sims = (image * text[owner.to(text.device)]).sum(-1).double().cpu().numpy()
        return np.split(sims, np.cumsum([len(c) for c in clips])[:-1])
