"""CLIP for curation and evaluation alike: one `transformers` CLIPModel + CLIPProcessor from a local folder
or hub id, giving unit-norm image and text embeddings. The clip-caption score of `hdvg score`, the
aesthetic predictor's backbone, dedup's image features and `model.eval`'s CLIPSIM all go through it.

torch and transformers (the `caption` extra) are imported when a model is built, never at `import hdvg`:
a curation node without them imports this module and only fails when asked to load CLIP.
"""
from __future__ import annotations

import numpy as np


class ClipModel:
    """Frames go to the processor as uint8, so its `do_rescale` (1/255) applies once; its own resize and
    centre crop make them square (a 16:9 frame loses its left and right 22 %)."""

    def __init__(self, name_or_path: str, device: str = "cpu"):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.name_or_path, self.device = str(name_or_path), torch.device(device)
        self.model = CLIPModel.from_pretrained(self.name_or_path).to(self.device).eval()
        self.processor = CLIPProcessor.from_pretrained(self.name_or_path)
        self.input_size = int(self.processor.image_processor.crop_size["height"])
        self.dim = int(self.model.config.projection_dim)

    def text_embeddings(self, texts: list[str]):
        """(N, D) unit-norm text embeddings (CLIP's 77-token limit truncates longer texts)."""
        import torch

        tokens = self.processor(text=list(texts), padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                               attention_mask=tokens["attention_mask"].to(self.device))
        return torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)

    def image_embeddings(self, frames: np.ndarray | list):
        """uint8 (N, H, W, 3) frames (or a list of PIL images) -> (N, D) unit-norm image embeddings."""
        import torch

        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
        return torch.nn.functional.normalize(out.pooler_output.float(), dim=-1)
