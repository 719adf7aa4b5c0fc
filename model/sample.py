"""`hdvg sample-video`: text -> video with a trained RUN or an exported pipeline folder (`hdvg export`). DDIM
(diffusers `DDIMScheduler`) 50 steps with classifier-free guidance 9.0 (appendix D.2), 16 frames at 344x192,
written as H.264 MP4 with PyAV.

    sampler = Sampler.load("RUN")                       # EMA weights of RUN's newest checkpoint
    sampler = Sampler.load("EXPORTED")                  # or unet/ + vae/ + text_encoder/ + scheduler/ ...
    frames = sampler.generate(["a dog on a beach"], [0])  # uint8 (B, F, H, W, 3)
    write_video(frames[0], "out.mp4", fps=8)

Each sample's starting noise comes from its own generator seeded by its seed, so a (prompt, seed) pair gives
the same video whatever else is in the batch (up to float rounding of batched kernels). Nothing is unpickled:
checkpoints are read with weights_only=True (memory-mapped, so the optimiser state beside the EMA is never
read into memory), exported weights are safetensors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml

from model.checkpoint import latest_checkpoint, read_checkpoint
from model.config import UNetConfig
from model.distributed import local_device
from model.train_config import DiffusionConfig, TrainConfig, config_from_dict
from model.unet import VideoUNet

# Appendix D.2: 50 DDIM steps, guidance 9.0; the paper's videos are 16 frames at 344x192.
STEPS, GUIDANCE, NUM_FRAMES, WIDTH, HEIGHT = 50, 9.0, 16, 344, 192
# An exported pipeline folder: the diffusers layout plus the run's resolved training config
MODEL_INDEX, TRAIN_CONFIG = "model_index.json", "train_config.yaml"


def ddim_scheduler(d: DiffusionConfig):
    """The sampler's DDIM: the training betas and prediction type; "leading" spacing with offset 1 as in
    LDM/ModelScope sampling."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=d.num_train_timesteps, beta_start=d.beta_start, beta_end=d.beta_end,
                         beta_schedule=d.beta_schedule, prediction_type=d.prediction_type, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def run_config(run_dir: str | Path) -> TrainConfig:
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a training run (no config.yaml) nor an exported pipeline "
                                f"(no {MODEL_INDEX})")
    return config_from_dict(yaml.safe_load(config_file.read_text()))


def run_unet(run_dir: str | Path) -> tuple[VideoUNet, TrainConfig, Path]:
    """A `hdvg train` RUN's U-Net with the EMA weights of its newest checkpoint (the model's own weights when
    the checkpoint has no EMA), its config and the checkpoint read."""
    from model.ema import build_ema

    cfg = run_config(run_dir)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet")
    unet = VideoUNet(UNetConfig.from_dict(cfg.unet))
    state = read_checkpoint(checkpoint, mmap=True)
    unet.load_state_dict(state["model"])
    if state.get("ema") is not None:
        ema = build_ema(unet, cfg.optim.ema_decay)
        ema.load_state_dict(state["ema"])
        ema.copy_to(unet.parameters())
    return unet, cfg, checkpoint


def is_exported(path: str | Path) -> bool:
    return (Path(path) / MODEL_INDEX).is_file()


class Sampler:
    def __init__(self, unet: VideoUNet, encoders, cfg: TrainConfig, device: torch.device, scheduler=None):
        self.unet, self.encoders, self.cfg, self.device = unet.eval().to(device), encoders, cfg, device
        self.scheduler = scheduler or ddim_scheduler(cfg.diffusion)

    @classmethod
    def load(cls, source: str | Path, device: str | None = None) -> "Sampler":
        """A `hdvg train` RUN (its config.yaml, its newest checkpoint's EMA weights, the frozen components the
        run names) or a folder written by `hdvg export` (its unet/, vae/, text_encoder/, tokenizer/,
        scheduler/)."""
        from model.components import FrozenEncoders

        dev = local_device(device)
        if is_exported(source):
            from diffusers import DDIMScheduler

            folder = Path(source)
            cfg = config_from_dict(yaml.safe_load((folder / TRAIN_CONFIG).read_text()))
            cfg.components = str(folder)
            return cls(VideoUNet.from_pretrained(folder / "unet"), FrozenEncoders.load(str(folder), dev), cfg, dev,
                       DDIMScheduler.from_pretrained(folder, subfolder="scheduler"))
        unet, cfg, _ = run_unet(source)
        return cls(unet, FrozenEncoders.load(cfg.components, dev), cfg, dev)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int = STEPS, guidance: float = GUIDANCE,
                 num_frames: int = NUM_FRAMES, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
        """uint8 videos (B, F, H, W, 3), one per (prompt, seed)."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8 (the VAE's factor), got {width}x{height}")
        b = len(prompts)
        shape = (self.unet.config.in_channels, num_frames, height // 8, width // 8)
        latents = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        latents = latents.to(self.device) * self.scheduler.init_noise_sigma  # (B, 4, F, h, w)
        text = self.encoders.encode_text(["" for _ in prompts] + list(prompts))  # (2B, 77, D): uncond, cond
        cuda = self.device.type == "cuda"
        self.scheduler.set_timesteps(steps, device=self.device)
        for t in self.scheduler.timesteps:
            model_in = self.scheduler.scale_model_input(torch.cat([latents, latents]), t)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and self.cfg.mixed_precision == "bf16"):
                uncond, cond = self.unet(model_in, t, text).float().chunk(2)
            latents = self.scheduler.step(uncond + guidance * (cond - uncond), t, latents).prev_sample
        return self.encoders.decode_latents(latents).numpy().reshape(b, num_frames, height, width, 3)


def write_video(frames: np.ndarray, path: str | Path, fps: int = 8, crf: int = 18) -> Path:
    """uint8 (F, H, W, 3) -> H.264 (yuv420p) MP4 at `fps`."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": str(crf)}
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def export_pipeline(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`hdvg export RUN DIR`: a diffusers pipeline folder anyone can load part by part with the classes'
    own `from_pretrained`: unet/ (the EMA weights, config.json + safetensors), the run's vae/, text_encoder/,
    tokenizer/, scheduler/ (the sampler's DDIM), model_index.json, and train_config.yaml (the run's config:
    frame size, precision). Written beside DIR and renamed into place: DIR is complete or absent."""
    import shutil

    import diffusers
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists: export into a new folder")
    unet, cfg, checkpoint = run_unet(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    unet.save_pretrained(tmp / "unet")
    parts = {"vae": AutoencoderKL, "text_encoder": CLIPTextModel, "tokenizer": CLIPTokenizer}
    for name, cls in parts.items():
        cls.from_pretrained(cfg.components, subfolder=name).save_pretrained(tmp / name)
    ddim_scheduler(cfg.diffusion).save_pretrained(tmp / "scheduler")
    index = {"_class_name": "VideoFactoryPipeline", "_diffusers_version": diffusers.__version__,
             "unet": ["model.unet", "VideoUNet"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "scheduler": ["diffusers", "DDIMScheduler"],
             "hdvg": {"run": str(Path(run_dir).resolve()), "checkpoint": checkpoint.name}}
    (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    (tmp / TRAIN_CONFIG).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.rename(out)
    return out
