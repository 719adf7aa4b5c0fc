"""`hdvg train-sr`: RCAN x4 trained from the curation shards, as Real-ESRGAN trains.

HR patches are random crops of random frames of the clips (`model.data.SRPatches` through the one shard loader,
`model.data.ShardStream`), flipped at random; the LR input is made on the fly by `degrade` (Real-ESRGAN's
second-order model). Two stages, by step:

* steps [0, l1_steps): L1 only (Real-ESRNet), Adam at `lr_l1`;
* steps [l1_steps, l1_steps + gan_steps): the GAN stage (Real-ESRGAN), which starts from the EMA weights of the
  first stage with a fresh Adam at `lr_gan`: L1 + VGG19 perceptual (when weights are given) + vanilla GAN loss
  against the spectral-norm U-Net discriminator, then one discriminator step.

Every step: EMA of the generator; bf16 autocast on GPU (degradations in fp32). A checkpoint (model, EMA, both
optimisers, the discriminator, every rank's RNG states and loader position) every `checkpoint_every` steps and
at the end, through `model.checkpoint`; `--resume` continues from the newest one that loads on exactly the
batches and random draws an uninterrupted run would have used. `RUN/log.jsonl` holds the losses of every logged
step; `RUN/upscaler.pt` the EMA generator for `hdvg upscale`.

Under torchrun each rank trains `batch_size / ranks` patches a step on cuda:LOCAL_RANK: the generator in DDP,
the discriminator's gradients averaged by `model.distributed.average_gradients` (its step runs it on real then
fake patches, as Real-ESRGAN does, two forwards DDP's reducer does not allow). A stop signal (SIGTERM, SIGINT,
SIGUSR1) on any rank finishes the step, checkpoints it and returns, as `hdvg train` does.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.checkpoint import latest_checkpoint, load_checkpoint, resume_state, rng_states, save_checkpoint
from model.data import ShardSet, ShardStream, SRPatches, train_loader
from model.distributed import (Dist, average_gradients, gather_objects, init_distributed, leave, sum_over_ranks,
                               wrap_ddp)
from model.ema import build_ema, ema_weights
from model.preempt import StopRequest
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

    def __init__(self, cfg: SRConfig, device: torch.device | None = None, env: Dist | None = None):
        self.env = env or Dist(device=device or torch.device("cpu"))
        self.cfg, self.device = cfg, self.env.device
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.generator = RCAN(cfg.rcan).to(self.device)
        self.generator_ddp = wrap_ddp(self.generator, self.env)  # the generator's forward, gradients averaged
        self.ema = build_ema(self.generator, cfg.train.ema_decay)
        self.disc = UNetDiscriminatorSN(cfg.loss.disc_features).to(self.device)
        self.opt_g = self._adam(self.generator, cfg.train.lr_l1)
        self.opt_d = self._adam(self.disc, cfg.train.lr_gan)
        # degradations and flips draw from here, on the training device: each rank its own draws
        self.rng = torch.Generator(self.device).manual_seed(cfg.train.seed + self.env.rank)
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
            sr = self.generator_ddp(lr)                                  # (N, 3, P, P)
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
            average_gradients(self.disc, self.env)
            self.opt_d.step()
            losses.update(d_real=float(d_real.detach()), d_fake=float(d_fake.detach()))
        self.ema.step(self.generator.parameters())
        self.step += 1
        return losses

    # -------------------------------------------------------------------------------------------- checkpoints

    def save(self, run_dir: Path, data_positions: list) -> Path | None:
        """A checkpoint on every rank's behalf (each rank's loader positions and RNG states gathered; rank 0
        writes it and the upscaler); every rank calls this."""
        positions = gather_objects(data_positions, self.env)
        rng = gather_objects(rng_states({"degrade": self.rng}), self.env)
        if not self.env.main:
            return None
        with ema_weights(self.ema, self.generator):
            save_upscaler(run_dir, self.cfg, {k: v.detach().cpu().clone()
                                              for k, v in self.generator.state_dict().items()}, self.step)
        return save_checkpoint(run_dir, self.step, model=self.generator, optimizer=self.opt_g, ema=self.ema, rng=rng,
                               data={"positions": positions, "world_size": self.env.world_size},
                               extra={"disc": self.disc.state_dict(), "opt_d": self.opt_d.state_dict()}, keep=2)

    def load(self, state: dict) -> list:
        """Restore a checkpoint's state; returns this rank's loader positions to resume from."""
        saved_ranks = state["data"]["world_size"]
        if saved_ranks != self.env.world_size:
            raise ValueError(f"train-sr checkpoint saved with {saved_ranks} processes, resumed with "
                             f"{self.env.world_size}: resume with the same number of GPUs")
        # the optimiser's saved param groups carry the learning rate of the stage it was saved in
        load_checkpoint(state, model=self.generator, optimizer=self.opt_g, ema=self.ema,
                        generators={"degrade": self.rng}, rank=self.env.rank)
        self.step = state["step"]
        self.ema.to(self.device)
        self.disc.load_state_dict(state["extra"]["disc"])
        self.opt_d.load_state_dict(state["extra"]["opt_d"])
        return list(state["data"]["positions"][self.env.rank])


def train_sr(cfg: SRConfig, shards: str | list[str], run_dir: str | Path, steps: int | None = None,
             resume: bool = False, device: str | None = None, env: Dist | None = None) -> dict:
    """Train until `steps` (default: l1_steps + gan_steps) or a stop signal; returns {"step", "last": losses
    of the last step, "stopped_by": the signal or None}. Under torchrun, every rank calls this."""
    run_dir = Path(run_dir)
    env = env or init_distributed(device)
    total_steps = cfg.train.l1_steps + cfg.train.gan_steps if steps is None else steps
    per_rank = cfg.train.batch_size // env.world_size
    if cfg.train.batch_size % (cfg.data.frames_per_clip * env.world_size):
        raise ValueError(f"train.batch_size ({cfg.train.batch_size}) must be a multiple of data.frames_per_clip "
                         f"({cfg.data.frames_per_clip}) x processes ({env.world_size}): a batch holds whole clips")
    existing = latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise FileExistsError(f"{run_dir} already holds a run ({existing.name}): pass --resume or a new --output")
    resumed = resume_state(run_dir, move_aside=env.main) if resume else None
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = SRTrainer(cfg, env=env)
    workers = cfg.data.workers
    positions: list = [0] * max(workers, 1)
    if resumed is not None:
        positions = trainer.load(resumed[1])
        log.info("train-sr: resumed %s at step %d", resumed[0], trainer.step)
    elif resume:
        log.info("train-sr: --resume with no checkpoint in %s: starting fresh", run_dir)
    log.info("train-sr: RCAN %.2f M parameters (%d groups x %d RCABs, %d features), discriminator %.2f M, "
             "%d x %s, steps %d -> %d (L1 stage until %d)", parameter_count(trainer.generator) / 1e6,
             cfg.rcan.num_groups, cfg.rcan.blocks_per_group, cfg.rcan.num_features,
             parameter_count(trainer.disc) / 1e6, env.world_size, env.device, trainer.step, total_steps,
             cfg.train.l1_steps)
    if env.main:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    result = _train_loop(trainer, patterns=[shards] if isinstance(shards, str) else list(shards), run_dir=run_dir,
                         total_steps=total_steps, per_rank=per_rank, positions=positions)
    leave(env, lambda: setattr(trainer, "generator_ddp", trainer.generator))
    return result


def _train_loop(trainer: SRTrainer, patterns: list[str], run_dir: Path, total_steps: int, per_rank: int,
                positions: list) -> dict:
    cfg, env = trainer.cfg, trainer.env
    if trainer.step >= total_steps:
        return {"step": trainer.step, "last": {}, "stopped_by": None}

    stream = ShardStream([ShardSet(p) for p in patterns],
                         SRPatches(num_frames=cfg.data.frames_per_clip, crop=cfg.data.patch_size),
                         batch_size=per_rank // cfg.data.frames_per_clip, seed=cfg.train.seed,
                         shuffle_buffer=cfg.data.shuffle, rank=env.rank,
                         positions=positions if trainer.step else None)
    losses: dict[str, float] = {}
    wait = frames_seen = 0.0
    stopped_by = None
    started = tick = time.perf_counter()
    log_here = (run_dir / LOG_FILE).open("a") if env.main else contextlib.nullcontext()
    with StopRequest() as stop, log_here as log_file:
        for batch in train_loader(stream, cfg.data.workers):
            got = time.perf_counter()
            wait += got - tick
            positions[batch["worker"]] = batch["resume_at"]
            losses = trainer.train_step(batch["frames"])
            frames_seen += int(np.prod(batch["frames"].shape[:2]))
            tick = time.perf_counter()
            step = trainer.step
            if sum_over_ranks([float(bool(stop))], env)[0]:  # a stop signal on any rank stops every rank
                stopped_by = stop.signal_name or "a stop signal on another rank"
            if log_file is not None and (step % cfg.train.log_every == 0 or step == total_steps or stopped_by):
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
            if step % cfg.train.checkpoint_every == 0 or step == total_steps or stopped_by:
                trainer.save(run_dir, positions)
            if step >= total_steps or stopped_by:
                break
    if stopped_by and env.main:
        log.info("train-sr: stopped by %s at step %d: checkpoint written, --resume continues from it", stopped_by,
                 trainer.step)
    return {"step": trainer.step, "last": losses, "stopped_by": stopped_by}
