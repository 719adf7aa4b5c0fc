"""The training objective: DDPM noising (diffusers `DDPMScheduler`) and the denoising loss, as plain
functions of explicit random draws, so the trainer, the DDP test and the resume test all compute the same
thing from the same numbers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from model.train_config import DiffusionConfig


def build_noise_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_start=cfg.beta_start,
                         beta_end=cfg.beta_end, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=False)


def drop_captions(captions: list[str], p_uncond: float, generator: torch.Generator) -> list[str]:
    """Per-sample classifier-free-guidance dropout: each caption becomes the empty text with probability
    p_uncond (Open-Sora's dropout_condition, applied before encoding so one text-encoder pass serves)."""
    drop = torch.rand(len(captions), generator=generator) < p_uncond
    return ["" if d else c for c, d in zip(captions, drop.tolist())]


def draw_noise(latents: torch.Tensor, num_train_timesteps: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian noise like `latents` and one timestep per sample, drawn on the CPU generator (the same
    numbers on any device)."""
    noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
    timesteps = torch.randint(0, num_train_timesteps, (latents.shape[0],), generator=generator)
    return noise, timesteps.to(latents.device)


def diffusion_loss(unet: torch.nn.Module, scheduler: DDPMScheduler, latents: torch.Tensor, text: torch.Tensor,
                   noise: torch.Tensor, timesteps: torch.Tensor, images: bool = False) -> torch.Tensor:
    """MSE between the U-Net's prediction on the noised latents (B, 4, F, h, w) and the target of the
    scheduler's prediction type (epsilon: the noise; v_prediction: the velocity)."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, timesteps)
    prediction = unet(noisy, timesteps, text, images=images)
    return F.mse_loss(prediction.float(), target.float())
