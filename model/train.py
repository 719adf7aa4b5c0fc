"""`hdvg train`: the Swap-CA text-to-video model trained straight from the curation shards.

One process per GPU under torchrun (a single process without it). Each step: uint8 clips from the shard
loader (model.data) -> frozen VAE latents (or precomputed latents) -> DDPM noising -> the U-Net's loss;
captions dropped to the empty text with p_uncond. Gradients accumulate over micro-batches until the global
batch (128 in the paper) is reached, then AdamW, the LR schedule and the EMA step once. RUN holds
config.yaml (the resolved config), log.jsonl (one line per logged step) and checkpoints/ (exact resume).
"""
from __future__ import annotations

import contextlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import yaml

from model.checkpoint import (latest_checkpoint, load_checkpoint, read_checkpoint, restore_rng_states,
                              resume_state, rng_states, save_checkpoint)
from model.config import UNetConfig
from model.data import SKIP_REASONS, ShardSet, ShardStream, VideoClips, train_loader
from model.diffusion import build_noise_scheduler, diffusion_loss, draw_noise, drop_captions
from model.distributed import Dist, gather_objects, init_distributed, leave, sum_over_ranks, wrap_ddp
from model.ema import build_ema, ema_weights
from model.metrics import MetricsWriter
from model.preempt import StopRequest
from model.train_config import TrainConfig
from model.unet import VideoUNet

CONFIG_FILE, LOG_FILE = "config.yaml", "log.jsonl"


def build_unet(cfg: TrainConfig) -> VideoUNet:
    unet = VideoUNet(UNetConfig.from_dict(cfg.unet))
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet


def load_start(unet: VideoUNet, source: str, run_dir: Path) -> None:
    """The U-Net's start: a previous stage (a hdvg RUN folder: its newest checkpoint's model weights; or one
    step_*.pt file), else a diffusers U-Net (`model.pretrained`: ModelScope's UNet3DConditionModel or an SD
    UNet2DConditionModel, a folder or a hub pipeline id with unet/), whose load report goes to
    RUN/pretrained.json."""
    path = Path(source)
    if path.suffix == ".pt" or (path / "config.yaml").is_file():
        checkpoint = latest_checkpoint(path) if path.is_dir() else path
        if checkpoint is None or not checkpoint.exists():
            raise FileNotFoundError(f"pretrained {source}: a RUN folder without checkpoints")
        state = read_checkpoint(checkpoint)
        unet.load_state_dict(state["model"])
        print(f"U-Net weights from {checkpoint} (step {state['step']})", flush=True)
        return
    from model.pretrained import load_pretrained

    report = load_pretrained(unet, source, subfolder=None if path.exists() else "unet")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pretrained.json").write_text(json.dumps(report.to_dict(), indent=1))


class Trainer:
    """Builds everything from a validated config; `run()` trains to `cfg.steps` optimiser steps."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, env: Dist | None = None):
        from diffusers.optimization import get_scheduler

        from model.components import FrozenEncoders

        self.env = env or init_distributed()
        self.cfg = cfg.validate(self.env.world_size)
        self.run_dir = Path(run_dir)
        self.accumulation = cfg.accumulation(self.env.world_size)
        if not resume and latest_checkpoint(self.run_dir) is not None:
            raise FileExistsError(f"{self.run_dir} already has checkpoints: pass --resume or another --output")
        # the newest checkpoint that loads (damaged newer ones moved aside by rank 0, which says so)
        resumed = resume_state(self.run_dir, move_aside=self.env.main) if resume else None
        if resume and resumed is None:
            print(f"--resume: no checkpoint in {self.run_dir} yet, starting at step 0", flush=True)
        checkpoint, state = resumed or (None, None)
        if not cfg.components:
            raise ValueError("train config components: a folder or hub id with vae/, text_encoder/, tokenizer/ "
                             "is needed (`make train` builds tiny random ones with model/tiny.py)")
        torch.manual_seed(cfg.seed + self.env.rank)  # dropout in the U-Net
        np.random.seed(cfg.seed + self.env.rank)
        # trainer draws (caption dropout, noise, timesteps, VAE posterior samples): one CPU generator per rank
        self.generator = torch.Generator().manual_seed(cfg.seed * 1000 + self.env.rank)
        # from here a stop signal (say, during the minutes of loading at scale) stops after the first step
        self.stop = StopRequest().install()

        if Path(cfg.components).exists():  # a local folder: absolute, so the sampler finds it from anywhere
            cfg.components = str(Path(cfg.components).resolve())
        self.encoders = FrozenEncoders.load(cfg.components, self.env.device)
        unet_cfg = UNetConfig.from_dict(cfg.unet)
        if self.encoders.text_dim != unet_cfg.cross_attention_dim:
            raise ValueError(f"unet.cross_attention_dim={unet_cfg.cross_attention_dim} but the text encoder of "
                             f"{cfg.components} gives states of width {self.encoders.text_dim}")
        self.unet = build_unet(cfg).to(self.env.device)
        if cfg.pretrained and checkpoint is None:  # a resumed run has its own weights
            load_start(self.unet, cfg.pretrained, self.run_dir)
        self.unet.set_fusion_enabled(unet_cfg.fusion_enabled)
        self.model = wrap_ddp(self.unet, self.env)
        self.optimizer = torch.optim.AdamW(self.unet.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                           weight_decay=cfg.optim.weight_decay)
        self.lr_schedule = get_scheduler(cfg.optim.lr_schedule, self.optimizer,
                                         num_warmup_steps=cfg.optim.warmup_steps, num_training_steps=cfg.steps)
        self.ema = build_ema(self.unet, cfg.optim.ema_decay) if self.env.main else None
        self.noise_scheduler = build_noise_scheduler(cfg.diffusion)
        self.step = 0
        self.base_counts: Counter = Counter()
        self.bad_steps: Counter = Counter()  # optimiser steps skipped, by reason, since the run began
        self.bad_in_a_row = 0
        self.last_checkpoint: Path | None = checkpoint
        self.stopped_by: str | None = None  # the stop signal that ended run(), seen on this rank or another
        positions = None
        if state is not None:
            load_checkpoint(state, model=self.unet, optimizer=self.optimizer, scheduler=self.lr_schedule,
                            ema=self.ema, restore_rng=False)
            self.step = state["step"]
            data = state["data"]
            self.base_counts = Counter(data["counts"])
            self.bad_steps = Counter(data.get("bad_steps", {}))
            if cfg.data.resume == "exact":
                if data["world_size"] != self.env.world_size:
                    raise ValueError(f"data position saved with {data['world_size']} processes, resumed with "
                                     f"{self.env.world_size}: use data.resume=reseed")
                positions = data["positions"][self.env.rank]
            if self.ema is not None:
                self.ema.to(self.env.device)
            print(f"resumed from {checkpoint} at step {self.step}", flush=True)
        self.stream = self._stream(positions)
        self.batches = iter(train_loader(self.stream, cfg.data.num_workers))
        self.positions = list(positions) if positions else [0] * max(1, cfg.data.num_workers)
        self.counts = [Counter() for _ in self.positions]
        self.batch_kinds: Counter = Counter()  # micro-batches of videos / images this process trained
        if state is not None:  # after the loader's workers took their seeds, as in an uninterrupted run
            if len(state["rng"]) == self.env.world_size:  # each rank its own states
                restore_rng_states(state["rng"][self.env.rank], {"trainer": self.generator})
            else:  # data.resume=reseed on another number of processes: fresh draws, not step 0's again
                self.generator.manual_seed(int(np.random.SeedSequence([cfg.seed, self.step, self.env.rank])
                                               .generate_state(1)[0]))
        self.metrics = None
        if self.env.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            self.metrics = MetricsWriter(self.run_dir, cfg.report_to, cfg.to_dict())

    def _stream(self, positions: list[int] | None) -> ShardStream:
        d = self.cfg.data
        if not d.shards:
            raise ValueError("train config data.shards: no shard set given (--shards 'OUT/shards/*.tar')")
        weights = d.weights or [1.0] * len(d.shards)
        seed = self.cfg.seed
        if self.step and d.resume == "reseed":
            seed = int(np.random.SeedSequence([self.cfg.seed, self.step]).generate_state(1)[0])
        if d.latents:
            from model.latents import LatentClips

            make_sample = LatentClips(d.num_frames, d.frame_stride, d.uncaptioned)
        else:
            make_sample = VideoClips(d.num_frames, d.frame_stride, d.width, d.height, d.uncaptioned)
        where = d.where or [""] * len(d.shards)
        return ShardStream([ShardSet(s, w, q or None) for s, w, q in zip(d.shards, weights, where)], make_sample,
                           self.cfg.optim.batch_per_gpu, seed=seed, shuffle_buffer=d.shuffle_buffer,
                           rank=self.env.rank, positions=positions)

    # ------------------------------------------------------------------------------------------ one step

    def _micro_batch(self) -> tuple[torch.Tensor, float]:
        """Loss of one micro-batch (backward not yet done) and the seconds spent waiting for it."""
        start = time.perf_counter()
        batch = next(self.batches)
        waited = time.perf_counter() - start
        self.positions[batch["worker"]] = batch["resume_at"]
        self.batch_kinds[batch["kind"]] += 1
        self.counts[batch["worker"]] = Counter(batch["counts"])
        frames = torch.as_tensor(batch["frames"])
        images = batch["kind"] == "image"
        cuda = self.env.device.type == "cuda"
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and self.cfg.mixed_precision == "bf16" \
            else contextlib.nullcontext()
        captions = drop_captions(batch["caption"], self.cfg.diffusion.p_uncond, self.generator)
        with autocast:
            text = self.encoders.encode_text(captions)  # (B, 77, D)
            if self.cfg.data.latents:
                latents = frames.to(self.env.device, torch.float32)  # (B, 4, F, h, w)
            else:
                latents = self.encoders.encode_frames(frames, self.generator)  # (B, 4, F, h, w)
            noise, timesteps = draw_noise(latents, self.cfg.diffusion.num_train_timesteps, self.generator)
            loss = diffusion_loss(self.model, self.noise_scheduler, latents, text, noise, timesteps, images=images)
        return loss, waited

    def train_step(self) -> dict:
        """One optimiser step over `accumulation` micro-batches. A non-finite loss or gradient norm on any rank
        skips the step (no optimiser, LR or EMA step; `step_skipped` names the reason); a stop signal on any rank
        sets `stop` on every rank."""
        start = time.perf_counter()
        self.model.train()
        losses, waited = [], 0.0
        for i in range(self.accumulation):
            sync = i == self.accumulation - 1 or self.env.world_size == 1
            with contextlib.nullcontext() if sync else self.model.no_sync():
                loss, w = self._micro_batch()
                (loss / self.accumulation).backward()
            losses.append(loss.item())
            waited += w
        # DDP averaged the gradients: the norm is the same on every rank; the losses are each rank's own
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.cfg.optim.max_grad_norm))
        # one collective for the loss (non-finite on any rank -> non-finite sum), the data wait and the stop flag
        loss, waited_all, seconds_all, stops = sum_over_ranks(
            [float(np.mean(losses)), waited, time.perf_counter() - start, float(bool(self.stop))], self.env)
        skipped = "nonfinite_loss" if not np.isfinite(loss) else "nonfinite_grad" if not np.isfinite(grad_norm) \
            else None
        if skipped is None:
            self.optimizer.step()
            self.lr_schedule.step()
            if self.ema is not None:
                self.ema.step(self.unet.parameters())
            self.step += 1
            self.bad_in_a_row = 0
        else:
            self.bad_steps[skipped] += 1
            self.bad_in_a_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        clips = self.accumulation * self.cfg.optim.batch_per_gpu * self.env.world_size
        return {"step": self.step, "loss": loss / self.env.world_size, "lr": self.lr_schedule.get_last_lr()[0],
                "grad_norm": grad_norm, "clips_per_s": clips / seconds, "batches": dict(self.batch_kinds),
                "data_wait": waited_all / seconds_all, "step_skipped": skipped,
                "skipped_steps": dict(self.bad_steps), "stop": stops > 0}

    def loader_counts(self) -> dict:
        """Samples used and skipped by reason, over all workers and ranks since the run began."""
        names = ["samples", *SKIP_REASONS, "uncaptioned_empty_text", "frames_decoded", "frames_used"]
        total = Counter(self.base_counts)
        for c in self.counts:
            total.update(c)
        summed = sum_over_ranks([float(total[n] - self.base_counts[n]) for n in names], self.env)
        return {n: int(self.base_counts[n] + v) for n, v in zip(names, summed)}

    def save(self) -> Path | None:
        """A checkpoint on every rank's behalf: each rank's data position and RNG states gathered to rank 0,
        which writes it (every rank must call this). Returns the path on rank 0."""
        data = {"positions": gather_objects(self.positions, self.env), "counts": self.loader_counts(),
                "world_size": self.env.world_size, "bad_steps": dict(self.bad_steps)}
        rng = gather_objects(rng_states({"trainer": self.generator}), self.env)
        if self.env.main:
            self.last_checkpoint = save_checkpoint(
                self.run_dir, self.step, model=self.unet, optimizer=self.optimizer, scheduler=self.lr_schedule,
                ema=self.ema, rng=rng, data=data, extra={"unet": self.cfg.unet}, keep=self.cfg.keep_checkpoints)
            return self.last_checkpoint
        return None

    def run(self, steps: int | None = None) -> list[dict]:
        """Train until `steps` (default cfg.steps) optimiser steps, or until a stop signal (then the step
        reached is checkpointed and `stopped_by` names the signal); returns the logged records."""
        steps = steps or self.cfg.steps
        d = self.cfg.data
        if self.env.main:
            print(f"training {sum(p.numel() for p in self.unet.parameters()) / 1e6:.2f} M U-Net parameters on "
                  f"{self.env.world_size} x {self.env.device.type}, {self.accumulation} micro-batch(es) of "
                  f"{self.cfg.optim.batch_per_gpu} per step, shards {d.shards}", flush=True)
            if d.uncaptioned == "empty":
                print("NOTE: uncaptioned clips are trained with EMPTY text (unconditional samples)", flush=True)
        records = []
        from tqdm import tqdm

        # a progress line with ETA on a terminal, none in a log file (the log lines say the same)
        progress = tqdm(total=steps, initial=self.step, unit="step", dynamic_ncols=True,
                        disable=not (self.env.main and sys.stderr.isatty()))
        with self.stop, progress:
            while self.step < steps:
                record = self.train_step()
                if record["step_skipped"]:
                    self._bad_step(record)
                else:
                    progress.update(1)
                    last = self.step == steps or record["stop"]
                    if self.step % self.cfg.log_every == 0 or last:
                        record.update(self.loader_counts())
                        records.append(record)
                        if self.env.main:
                            self._log(record)
                    if self.step % self.cfg.checkpoint_every == 0 or last:
                        self.save()
                    if self.env.main and self.cfg.sample_every and self.step % self.cfg.sample_every == 0:
                        self.preview()
                if record["stop"]:
                    if record["step_skipped"]:  # the data consumed since the last good step is in the position
                        self.save()
                    self.stopped_by = self.stop.signal_name or "a stop signal on another rank"
                    break
        return records

    def preview(self) -> Path:
        """The EMA model samples the fixed prompts at the training frame size: RUN/samples/step_N/{i}.mp4 and
        grid.png (a row of frames per prompt), and the metrics. Sampling draws from its own seeded generators
        and the training weights come back unchanged, so a run with previews trains exactly as one without."""
        from PIL import Image

        from model.metrics import frame_grid
        from model.sample import Sampler, write_video

        d, prompts = self.cfg.data, self.cfg.sample_prompts
        with ema_weights(self.ema, self.unet):
            videos = Sampler(self.unet, self.encoders, self.cfg, self.env.device).generate(
                prompts, list(range(len(prompts))), steps=self.cfg.sample_steps, num_frames=d.num_frames,
                width=d.width, height=d.height)  # uint8 (P, F, H, W, 3)
        folder = self.run_dir / "samples" / f"step_{self.step:09d}"
        for i, video in enumerate(videos):
            write_video(video, folder / f"{i}.mp4", fps=8)
        Image.fromarray(frame_grid(videos)).save(folder / "grid.png")
        (folder / "prompts.txt").write_text("\n".join(prompts) + "\n")
        self.metrics.videos(self.step, videos, prompts, fps=8)
        return folder

    def _bad_step(self, record: dict) -> None:
        """Say and log a skipped step; stop the run after `optim.max_bad_steps` in a row."""
        if self.env.main:
            print(f"step {self.step + 1} skipped: {record['step_skipped']} (loss {record['loss']}, grad norm "
                  f"{record['grad_norm']}), {self.bad_in_a_row} in a row, {sum(self.bad_steps.values())} in all",
                  flush=True)
            with (self.run_dir / LOG_FILE).open("a") as f:
                f.write(json.dumps({k: record[k] for k in ("step_skipped", "loss", "grad_norm", "skipped_steps")}
                                   | {"step": self.step + 1}) + "\n")
            self.metrics.scalars(self.step + 1, {f"skipped_steps/{k}": v for k, v in record["skipped_steps"].items()})
        if self.bad_in_a_row >= self.cfg.optim.max_bad_steps:
            raise FloatingPointError(
                f"{self.bad_in_a_row} optimiser steps in a row skipped for a non-finite loss or gradient at step "
                f"{self.step + 1} (optim.max_bad_steps={self.cfg.optim.max_bad_steps}); the last good checkpoint "
                f"is {self.last_checkpoint or 'none (no checkpoint written yet)'}")

    def _log(self, record: dict) -> None:
        skipped = {r: record[r] for r in SKIP_REASONS if record.get(r)}
        print(f"step {record['step']} loss {record['loss']:.4f} lr {record['lr']:.2e} "
              f"{record['clips_per_s']:.2f} clips/s data-wait {record['data_wait']:.0%} "
              f"samples {record['samples']} skipped {skipped or 0}"
              + (f" empty-text {record['uncaptioned_empty_text']}" if record.get("uncaptioned_empty_text") else ""),
              flush=True)
        with (self.run_dir / LOG_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.metrics.scalars(record["step"], {
            "train/loss": record["loss"], "train/lr": record["lr"], "train/grad_norm": record["grad_norm"],
            "speed/clips_per_s": record["clips_per_s"], "speed/data_wait": record["data_wait"],
            "data/samples": record["samples"], **{f"data/skipped/{r}": record[r] for r in SKIP_REASONS},
            **{f"skipped_steps/{k}": v for k, v in record["skipped_steps"].items()}})


def main(trainer: Trainer) -> int:
    """Train to the configured steps, report, leave the process group."""
    try:
        records = trainer.run()
    finally:
        if trainer.metrics is not None:
            trainer.metrics.close()
    if trainer.env.main and trainer.stopped_by:
        print(f"stopped by {trainer.stopped_by} at step {trainer.step}: checkpoint {trainer.last_checkpoint}; "
              f"--resume continues from it", flush=True)
    elif trainer.env.main and records:
        print(f"done: step {trainer.step}, last loss {records[-1]['loss']:.4f}, RUN {trainer.run_dir}", flush=True)
    leave(trainer.env, lambda: setattr(trainer, "model", trainer.unet))
    return 0
