"""`hdvg train-sr` and `hdvg upscale` on real shards (the `curated_out` fixture: real 720p clips): exact resume
across the L1 -> GAN stage switch, finite GAN losses, a trained tiny RCAN beating bicubic on a held-out real
video, and a 4x video with the source's frame count, rate and timestamps."""
from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hdvg.cli import main as hdvg
from model.sr.config import load_config
from model.sr.degrade import degrade
from tests.conftest import shared_file

# 32-pixel patches, 4 frames of one clip a step: 3 L1 steps then 3 GAN steps, every step logged
FAST = ["data.patch_size=32", "data.frames_per_clip=4", "train.batch_size=4", "train.l1_steps=3",
        "train.gan_steps=3", "train.log_every=1", "train.checkpoint_every=3", "data.shuffle=4"]
STEPS = 200  # L1 steps of the tiny RCAN before it is compared with bicubic


def losses_of(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def shards(curated_out) -> str:
    return str(curated_out / "shards" / "*.tar")


@pytest.fixture(scope="module")
def full_run(shards, tmp_path_factory) -> Path:
    """6 uninterrupted steps through the CLI."""
    run = tmp_path_factory.mktemp("sr_full")
    args = ["train-sr", "--config", "tiny", "--shards", shards, "--output", str(run), "--steps", "6"]
    assert hdvg(args + [a for item in FAST for a in ("--set", item)]) == 0
    return run


def test_resume_continues_the_same_loss_curve(full_run, shards, tmp_path):
    from model.sr.train import train_sr

    cfg = load_config("tiny", FAST)
    train_sr(cfg, shards, tmp_path, steps=3)
    with pytest.raises(FileExistsError, match="--resume"):
        train_sr(cfg, shards, tmp_path, steps=6)
    assert train_sr(cfg, shards, tmp_path, steps=6, resume=True)["step"] == 6
    full, resumed = losses_of(full_run), losses_of(tmp_path)
    assert sorted(full) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    keys = ("l1", "g_total", "g_gan", "d_real", "d_fake")
    for step in range(1, 7):
        assert {k: full[step].get(k) for k in keys} == {k: resumed[step].get(k) for k in keys}, step
    # the EMA weights exported for inference are the same too
    a = torch.load(full_run / "upscaler.pt", weights_only=True)["rcan"]
    b = torch.load(tmp_path / "upscaler.pt", weights_only=True)["rcan"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gan_stage_losses_are_finite(full_run):
    records = losses_of(full_run)
    assert [records[s]["stage"] for s in range(1, 7)] == ["l1"] * 3 + ["gan"] * 3
    assert "g_gan" not in records[3] and "d_real" not in records[3]
    for step in (4, 5, 6):
        for key in ("l1", "g_gan", "d_real", "d_fake", "g_total"):
            assert np.isfinite(records[step][key]) and records[step][key] > 0, (step, key)
        assert records[step]["g_total"] == pytest.approx(records[step]["l1"] + records[step]["g_gan"], rel=1e-5)


def test_one_gan_step_updates_both_networks():
    from model.sr.train import SRTrainer

    trainer = SRTrainer(load_config("tiny", ["train.l1_steps=0", "data.patch_size=32"]), torch.device("cpu"))
    g0 = [p.detach().clone() for p in trainer.generator.parameters()]
    d0 = [p.detach().clone() for p in trainer.disc.parameters()]
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    losses = trainer.train_step(frames)
    assert all(np.isfinite(v) for v in losses.values()) and {"g_gan", "d_real", "d_fake"} <= set(losses)
    assert any(not torch.equal(a, b) for a, b in zip(g0, trainer.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d0, trainer.disc.parameters()))


def test_tiny_rcan_beats_bicubic_on_a_held_out_video(shards):
    """Trained on the shards' real clips; evaluated on frames of another real video, degraded with fixed seeds."""
    from model.data import ShardSet, ShardStream, SRPatches, VideoBytes
    from model.ema import ema_weights
    from model.sr.train import SRTrainer

    # the tiny RCAN at 32 features: at 16 the held-out PSNR wanders around bicubic's for the first 300 steps
    cfg = load_config("tiny", ["rcan.num_features=32", "data.patch_size=48", "train.batch_size=8"])
    # a pool of 128-pixel patches from the loader (decoding is the slow part), re-cropped at random each step
    stream = iter(ShardStream([ShardSet(shards)], SRPatches(num_frames=4, crop=128), batch_size=2, seed=0,
                              shuffle_buffer=4))
    pool = np.concatenate([next(stream)["frames"].reshape(-1, 128, 128, 3) for _ in range(4)])  # (32, 128, 128, 3)
    video = VideoBytes(shared_file("repo_videos/imageio_test_images/cockatoo.mp4").read_bytes())
    held = video.decode([0, 100, 200, 270])[:, 264:456, 544:736]  # (4, 192, 192, 3), not in the shards
    video.close()
    hr = torch.from_numpy(held).permute(0, 3, 1, 2).float().div(255)
    lr = torch.cat([degrade(hr, cfg.degrade, torch.Generator().manual_seed(s)) for s in (1, 2, 3)])
    hr = hr.repeat(3, 1, 1, 1)
    psnr = lambda x: float(10 * torch.log10(1 / ((x.clamp(0, 1) - hr) ** 2).mean()))
    bicubic = psnr(F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False))

    trainer = SRTrainer(cfg, torch.device("cpu"))
    rng, p = np.random.default_rng(0), cfg.data.patch_size
    for _ in range(STEPS):
        top, left = rng.integers(0, 128 - p + 1, 2)
        trainer.train_step(pool[rng.integers(len(pool), size=8), top:top + p, left:left + p])
    with torch.no_grad(), ema_weights(trainer.ema, trainer.generator) as model:
        trained = psnr(model(lr))
    assert trained > bicubic + 1.0, (trained, bicubic)  # measured: 30.52 vs 28.82 dB


def test_upscale_writes_a_4x_video_with_the_same_frames_and_timestamps(full_run, tmp_path):
    src = shared_file("repo_videos/decord/unordered.mov")  # real H.264 with B-frames: pts not in decode order
    out = tmp_path / "up.mp4"
    assert hdvg(["upscale", str(src), str(out), "--checkpoint", str(full_run), "--batch-size", "3"]) == 0

    def probe(path):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            frames = list(c.decode(s))
            return (s.average_rate, [f.pts * f.time_base for f in frames], frames[0].width, frames[0].height,
                    frames[-1].to_ndarray(format="rgb24"))

    rate_in, times_in, w, h, _ = probe(src)
    rate_out, times_out, w4, h4, last = probe(out)
    assert (w4, h4) == (4 * w, 4 * h) and rate_out == rate_in
    assert times_out == times_in and len(times_out) == 4
    assert last.std() > 1  # a picture, not a blank frame
    with pytest.raises(SystemExit):
        hdvg(["upscale", str(src), str(out)])  # --checkpoint is required
    with pytest.raises(FileNotFoundError, match="not a train-sr run"):
        hdvg(["upscale", str(src), str(out), "--checkpoint", str(tmp_path)])
