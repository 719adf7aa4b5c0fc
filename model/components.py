"""The frozen pretrained parts of the video diffusion model, loaded with the real `from_pretrained(name_or_path)`:
a diffusers `AutoencoderKL` (f=8, 4 latent channels, its own `scaling_factor`; 344x192 frames -> 43x24
latents) and a transformers CLIP text encoder with its tokenizer. One folder (or hub id) in the diffusers
pipeline layout holds them: `vae/`, `text_encoder/`, `tokenizer/` (ModelScope's text-to-video repo, the
paper's start, has exactly these). Nothing here builds random weights: tests and `make train` save tiny
random ones with `model/tiny.py` and load them through this same code."""
from __future__ import annotations

import torch

# VAE frames per encode/decode call: bounds activation memory at 720p and 344x192 alike.
VAE_CHUNK = 16


class FrozenEncoders:
    """VAE + text encoder, eval mode, no gradients."""

    def __init__(self, vae, tokenizer, text_encoder, device: torch.device | str = "cpu"):
        self.vae, self.tokenizer, self.text_encoder = vae.eval(), tokenizer, text_encoder.eval()
        self.device = torch.device(device)
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False)
            module.to(self.device)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.text_dim = int(text_encoder.config.hidden_size)

    @classmethod
    def load(cls, name_or_path: str, device: torch.device | str = "cpu") -> "FrozenEncoders":
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel, CLIPTokenizer

        vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae")
        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder")
        return cls(vae, tokenizer, text_encoder, device)

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> CLIP's last hidden states (B, L=77, D); "" is the empty-text (unconditional) prompt."""
        ids = self.tokenizer(captions, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        return self.text_encoder(ids).last_hidden_state

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, generator: torch.Generator | None = None,
                      sample: bool = True) -> torch.Tensor:
        """uint8 frames (B, F, H, W, 3) -> scaled latents (B, 4, F, H/8, W/8): a sample of the posterior
        (training) or its mean (`sample=False`, stored latents)."""
        b, f = frames.shape[:2]
        x = frames.to(self.device).flatten(0, 1).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B*F, 3, H, W)
        x = x.to(self.vae.dtype)
        dists = [self.vae.encode(c).latent_dist for c in x.split(VAE_CHUNK)]
        z = torch.cat([d.sample(generator) if sample else d.mode() for d in dists])
        z = z * self.scaling_factor  # (B*F, 4, h, w)
        return z.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, F, h, w) -> uint8 frames (B, F, 8h, 8w, 3) on the CPU."""
        b, _, f = latents.shape[:3]
        z = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / self.scaling_factor  # (B*F, 4, h, w)
        z = z.to(self.device, self.vae.dtype)
        x = torch.cat([self.vae.decode(c).sample for c in z.split(VAE_CHUNK)])  # (B*F, 3, H, W) in [-1, 1]
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).unflatten(0, (b, f)).cpu()
