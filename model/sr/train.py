"""`hdvg train-sr`: RCAN x4 trained from the curation shards, as Real-ESRGAN trains.

HR patches are random crops of random frames of the clips (`model.data.SRPatches` through the one shard loader,
`model.data.ShardStream`), flipped at random; the LR input is made on the fly by `degrade` (Real-ESRGAN's
second-order model). Two stages, by step:

* steps [0, l1_steps): L1 only (Real-ESRNet), Adam at `lr_l1`;
* steps [l1_steps, l1_steps + gan_steps): the GAN stage (Real-ESRGAN), which starts from the EMA weights of the
  first stage with a fresh Adam at `lr_gan`: L1 + VGG19 perceptual (when weights are given) + vanilla GAN loss
  against the spectral-norm U-Net discriminator, then one discriminator step.

Every step: EMA of the generator; bf16 autocast on GPU (degradations in fp32). A checkpoint (model, EMA, both
optimisers, the discriminator, RNG states, the loader's data position) every `checkpoint_every` steps and at the
end, through `model.checkpoint`; `--resume` continues from the newest one on exactly the batches and random
draws an uninterrupted run would have used. `RUN/log.jsonl` holds the losses of every logged step;
`RUN/upscaler.pt` the EMA generator for `hdvg upscale`.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from model.data import ShardSet, ShardStream, SRPatches, train_loader
from model.ema import build_ema, ema_weights
from model.sr.config import SRConfig
from model.sr.degrade import degrade
from model.sr.losses import PerceptualLoss, gan_loss
from model.sr.rcan import RCAN, UNetDiscriminatorSN, parameter_count
from model.sr.upscale import save_upscaler

log = logging.getLogger(__name__)

LOG_FILE = "log.jsonl"


def to_images(frames: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (N, 3, H, W) in [0, 1] on `device`."""
    x = torch.as_tensor(frames)
    x = x.reshape(-1, *x.shape[-3:]).to(device)
    return x.permute(0, 3, 1, 2).float() / 255


class SRTrainer:
    """Generator, EMA, discriminator, optimisers, losses and the degradation generator of one run."""

    def __init__(self, cfg: SRConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.train.seed)
        self.generator = RCAN(cfg.rcan).to(device)
        self.ema = build_ema(self.generator, cfg.train.ema_decay)
        self.disc = UNetDiscriminatorSN(cfg.loss.disc_features).to(device)
        self.opt_g = self._adam(self.generator, cfg.train.lr_l1)
        self.opt_d = self._adam(self.disc, cfg.train.lr_gan)
        # degradations and flips draw from here, on the training device
        self.rng = torch.Generator(device).manual_seed(cfg.train.seed)
        self.perceptual = self._perceptual()
        self.step = 0

    def _adam(self, module: torch.nn.Module, lr: float) -> torch.optim.Adam:
        return torch.optim.Adam(module.parameters(), lr=lr, betas=self.cfg.train.betas)

    def _perceptual(self) -> PerceptualLoss | None:
        path, weight = self.cfg.loss.vgg_path, self.cfg.loss.perceptual
        if weight == 0:
            log.info("train-sr: perceptual loss off (loss.perceptual = 0)")
            return None
        if not path or not Path(path).is_file():
            log.warning("train-sr: perceptual loss OFF: no VGG19 weights at loss.vgg_path=%r (a local torchvision "
                        "vgg19 state dict); the GAN stage trains with L1 + GAN only", path)
            return None
        log.info("train-sr: perceptual loss on, VGG19 from %s", path)
        return PerceptualLoss.from_file(path).to(self.device)

    @property
    def in_gan_stage(self) -> bool:
        return self.step >= self.cfg.train.l1_steps

    def enter_gan_stage(self) -> None:
        """Real-ESRGAN starts from Real-ESRNet's EMA weights (`param_key_g: params_ema`) with a new optimiser."""
        self.ema.copy_to(self.generator.parameters())
        self.opt_g = self._adam(self.generator, self.cfg.train.lr_gan)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def make_pair(self, frames: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 HR patches (..., P, P, 3) -> (HR, LR) float batches (N, 3, P, P), (N, 3, P/4, P/4)."""
        hr = to_images(frames, self.device)
        if self.cfg.data.hflip:
            flip = torch.rand(hr.shape[0], generator=self.rng, device=self.rng.device) < 0.5
            hr = torch.where(flip.to(self.device).view(-1, 1, 1, 1), hr.flip(-1), hr)
        return hr, degrade(hr, self.cfg.degrade, self.rng)

    def train_step(self, frames: np.ndarray) -> dict[str, float]:
        """One optimisation step on a batch of HR patches; returns the step's losses."""
        if self.step == self.cfg.train.l1_steps and self.step > 0:
            self.enter_gan_stage()
        hr, lr = self.make_pair(frames)
        loss_cfg, losses = self.cfg.loss, {}
        gan = self.in_gan_stage
        self.disc.requires_grad_(False)
        with self._autocast():
            sr = self.generator(lr)                                      # (N, 3, P, P)
            total = loss_cfg.l1 * F.l1_loss(sr.float(), hr)
            losses["l1"] = float(total.detach())
            if gan and self.perceptual is not None:
                percep = loss_cfg.perceptual * self.perceptual(sr, hr)
                losses["perceptual"] = float(percep.detach())
                total = total + percep
            if gan:
                adv = loss_cfg.gan * gan_loss(self.disc(sr), real=True)
                losses["g_gan"] = float(adv.detach())
                total = total + adv
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.opt_g.step()
        losses["g_total"] = float(total.detach())
        if gan:
            self.disc.requires_grad_(True)
            with self._autocast():
                d_real = gan_loss(self.disc(hr), real=True)
                d_fake = gan_loss(self.disc(sr.detach()), real=False)
            self.opt_d.zero_grad(set_to_none=True)
            (d_real + d_fake).backward()
            self.opt_d.step()
            losses.update(d_real=float(d_real.detach()), d_fake=float(d_fake.detach()))
        self.ema.step(self.generator.parameters())
        self.step += 1
        return losses

    # -------------------------------------------------------------------------------------------- checkpoints

    def save(self, run_dir: Path, data_positions: list) -> Path:
        with ema_weights(self.ema, self.generator):
            save_upscaler(run_dir, self.cfg, {k: v.detach().cpu().clone()
                                              for k, v in self.generator.state_dict().items()}, self.step)
        return save_checkpoint(run_dir, self.step, model=self.generator, optimizer=self.opt_g, ema=self.ema,
                               generators={"degrade": self.rng}, data={"positions": data_positions},
                               extra={"disc": self.disc.state_dict(), "opt_d": self.opt_d.state_dict()}, keep=2)

    def load(self, path: Path) -> list:
        """Restore a checkpoint; returns the loader positions to resume from."""
        # the optimiser's saved param groups carry the learning rate of the stage it was saved in
        state = load_checkpoint(path, model=self.generator, optimizer=self.opt_g, ema=self.ema,
                                generators={"degrade": self.rng})
        self.step = state["step"]
        self.ema.to(self.device)
        self.disc.load_state_dict(state["extra"]["disc"])
        self.opt_d.load_state_dict(state["extra"]["opt_d"])
        return list(state["data"]["positions"])


def _device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def train_sr(cfg: SRConfig, shards: str | list[str], run_dir: str | Path, steps: int | None = None,
             resume: bool = False, device: str | None = None) -> dict:
    """Train until `steps` (default: l1_steps + gan_steps); returns {"step", "last": losses of the last step}."""
    run_dir = Path(run_dir)
    dev = _device(device)
    total_steps = cfg.train.l1_steps + cfg.train.gan_steps if steps is None else steps
    if cfg.train.batch_size % cfg.data.frames_per_clip:
        raise ValueError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of data.frames_per_clip "
                         f"({cfg.data.frames_per_clip}): a batch holds whole clips")
    existing = latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds a run ({existing.name}): pass --resume or a new --output")
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = SRTrainer(cfg, dev)
    workers = cfg.data.workers
    positions = [0] * max(workers, 1)
    if resume and existing is not None:
        positions = trainer.load(existing)
        log.info("train-sr: resumed %s at step %d", existing, trainer.step)
    elif resume:
        log.info("train-sr: --resume with no checkpoint in %s: starting fresh", run_dir)
    log.info("train-sr: RCAN %.2f M parameters (%d groups x %d RCABs, %d features), discriminator %.2f M, "
             "device %s, steps %d -> %d (L1 stage until %d)", parameter_count(trainer.generator) / 1e6,
             cfg.rcan.num_groups, cfg.rcan.blocks_per_group, cfg.rcan.num_features,
             parameter_count(trainer.disc) / 1e6, dev, trainer.step, total_steps, cfg.train.l1_steps)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    if trainer.step >= total_steps:
        return {"step": trainer.step, "last": {}}

    patterns = [shards] if isinstance(shards, str) else list(shards)
    stream = ShardStream([ShardSet(p) for p in patterns],
                         SRPatches(num_frames=cfg.data.frames_per_clip, crop=cfg.data.patch_size),
                         batch_size=cfg.train.batch_size // cfg.data.frames_per_clip, seed=cfg.train.seed,
                         shuffle_buffer=cfg.data.shuffle, positions=positions if trainer.step else None)
    losses: dict[str, float] = {}
    wait = frames_seen = 0.0
    started = tick = time.perf_counter()
    with (run_dir / LOG_FILE).open("a") as log_file:
        for batch in train_loader(stream, workers):
            got = time.perf_counter()
            wait += got - tick
            positions[batch["worker"]] = batch["resume_at"]
            losses = trainer.train_step(batch["frames"])
            frames_seen += int(np.prod(batch["frames"].shape[:2]))
            tick = time.perf_counter()
            step = trainer.step
            if step % cfg.train.log_every == 0 or step == total_steps:
                elapsed = tick - started
                record = {"step": step, "stage": "gan" if step > cfg.train.l1_steps else "l1", **losses,
                          "patches_per_s": frames_seen / max(elapsed, 1e-9), "data_wait": wait / max(elapsed, 1e-9),
                          "skipped": {k: v for k, v in batch["counts"].items()
                                      if k not in ("samples", "frames_decoded", "frames_used")}}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log.info("train-sr step %d [%s] %s | %.1f patches/s, data wait %.0f%%", step, record["stage"],
                         " ".join(f"{k} {v:.4f}" for k, v in losses.items()), record["patches_per_s"],
                         100 * record["data_wait"])
            if step % cfg.train.checkpoint_every == 0 or step == total_steps:
                trainer.save(run_dir, positions)
            if step >= total_steps:
                break
    return {"step": trainer.step, "last": losses}
