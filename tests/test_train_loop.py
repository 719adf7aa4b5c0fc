"""The video diffusion trainer on real shards with tiny random components of the real classes: it overfits one
real clip, resumes exactly, accumulates per optimiser step, DDP (gloo) gives the combined batch's gradients,
and `hdvg train` runs under torchrun and says when it trains uncaptioned clips with empty text."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from model.data import decode_frames, expand_shards, iter_tar_samples
from model.diffusion import diffusion_loss
from model.train import Trainer
from model.train_config import ConfigError, load_config
from tests.conftest import ROOT
from tests.model_builders import downscaled_clip, write_shard
from model.tiny import save_tiny_components
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)

# A 2-level U-Net of the tiny family: seconds per step on a CPU (the 4-level tiny is tested in test_unet).
SMALL_UNET = ["unet.block_out_channels=[8, 16]", "unet.attention_levels=[true, false]", "unet.norm_num_groups=4",
              "unet.fusion_head_dim=8"]


@pytest.fixture(scope="module")
def components(tmp_path_factory) -> Path:
    return save_tiny_components(tmp_path_factory.mktemp("components"))


@pytest.fixture(scope="module")
def small_shards(curated_out, tmp_path_factory) -> Path:
    """The real curated clips re-encoded at 64x36: a captioned clip, then the uncaptioned one."""
    samples = {s["__key__"]: s for s in iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))}
    folder = tmp_path_factory.mktemp("small_shards")
    write_shard(folder / "000000.tar", [downscaled_clip(samples["testvideo%2E1"], 64, 36, max_frames=60)])
    write_shard(folder / "000001.tar", [downscaled_clip(samples["testvideo%2E3"], 64, 36, max_frames=60)])
    return folder


def config(components: Path, shards: str, *overrides: str):
    return load_config("tiny", [f"components={components}", f"data.shards=['{shards}']", "data.width=64",
                                "data.height=32", "data.frame_stride=1", *SMALL_UNET, *overrides])


def fixed_loss(trainer: Trainer, frames: np.ndarray, draws: int = 6) -> float:
    """The U-Net's loss on fixed latents, noise and timesteps (eval mode): comparable across training."""
    g = torch.Generator().manual_seed(123)
    latents = trainer.encoders.encode_frames(torch.as_tensor(frames)[None], g)
    text = trainer.encoders.encode_text(["a slideshow of photographs of a city"])
    trainer.unet.eval()
    with torch.no_grad():
        losses = [diffusion_loss(trainer.unet, trainer.noise_scheduler, latents, text,
                                 torch.randn(latents.shape, generator=g), torch.tensor([t]))
                  for t in np.linspace(50, 950, draws).astype(int)]
    return float(torch.stack(losses).mean())


def test_tiny_model_overfits_one_real_clip(components, small_shards, tmp_path):
    cfg = config(components, str(small_shards / "000000.tar"), "steps=30", "optim.lr=5e-3", "optim.weight_decay=0.0",
                 "diffusion.p_uncond=0.0", "log_every=10", "checkpoint_every=30")
    trainer = Trainer(cfg, tmp_path / "run")
    sample = next(iter_tar_samples([str(small_shards / "000000.tar")]))
    frames = decode_frames(sample["mp4"], [0, 1, 2, 3])[:, 2:34]  # (4, 32, 64, 3): the loader's crop
    before = fixed_loss(trainer, frames)
    records = trainer.run()
    after = fixed_loss(trainer, frames)
    assert after < 0.6 * before, (before, after)
    assert records[-1]["samples"] == 60 and records[-1]["step"] == 30
    assert (tmp_path / "run" / "checkpoints" / "step_000000030.pt").exists()


def test_resume_gives_the_uninterrupted_loss(components, small_shards, tmp_path):
    """Stop at step 2, resume: step 3's loss, weights, EMA and optimiser state equal an uninterrupted run's.
    Two micro-batches per step (accumulation) and a loader worker process; the warm-up LR moves once per
    optimiser step."""
    args = ("data.uncaptioned=empty", "data.num_workers=1", "optim.batch_per_gpu=1", "optim.batch_size=2",
            "optim.lr_schedule=constant_with_warmup", "optim.warmup_steps=4", "checkpoint_every=2")
    shards = str(small_shards / "*.tar")
    straight = Trainer(config(components, shards, "steps=3", *args), tmp_path / "a")
    assert straight.accumulation == 2
    uninterrupted = straight.run()
    assert [r["lr"] for r in uninterrupted] == pytest.approx([1e-3 * k / 4 for k in (1, 2, 3)])

    Trainer(config(components, shards, "steps=2", *args), tmp_path / "b").run()
    resumed_trainer = Trainer(config(components, shards, "steps=3", *args), tmp_path / "b", resume=True)
    assert resumed_trainer.step == 2
    resumed = resumed_trainer.run()
    assert resumed[-1]["step"] == 3 and resumed[-1]["loss"] == uninterrupted[-1]["loss"]
    a = torch.load(tmp_path / "a" / "checkpoints" / "step_000000003.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "checkpoints" / "step_000000003.pt", weights_only=False)
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=0)
    torch.testing.assert_close(a["ema"]["shadow_params"], b["ema"]["shadow_params"], rtol=0, atol=0)
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)
    assert a["data"] == b["data"] and a["data"]["counts"]["uncaptioned_empty_text"] >= 1
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(config(components, shards, "steps=3", *args), tmp_path / "a")
    # the next stage starts from this run's newest weights
    next_stage = Trainer(config(components, shards, f"pretrained={tmp_path / 'a'}", *args), tmp_path / "c")
    for name, tensor in next_stage.unet.state_dict().items():
        torch.testing.assert_close(tensor, a["model"][name], rtol=0, atol=0)


def test_joint_image_video_training(components, small_shards, curated_out, tmp_path):
    """Image shards (img2dataset layout: the curated keyframes as jpg + txt) mix with video shards; image
    micro-batches (one frame) train beside video ones."""
    images = [{"__key__": s["__key__"], "jpg": s["jpg"], "txt": b"a photograph of a city"}
              for s in iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))]
    write_shard(tmp_path / "images.tar", images)
    cfg = config(components, str(small_shards / "000000.tar"), "steps=4", "optim.batch_per_gpu=1",
                 "optim.batch_size=1", "checkpoint_every=100")
    cfg.data.shards.append(str(tmp_path / "images.tar"))
    cfg.data.weights = [0.5, 0.5]
    records = Trainer(cfg, tmp_path / "run").run()
    assert records[-1]["batches"]["image"] >= 1 and records[-1]["batches"]["video"] >= 1
    assert all(np.isfinite(r["loss"]) for r in records)


def _ddp_worker(rank: int, world: int, port: int, inputs: dict, out: str) -> None:
    from model.distributed import init_distributed, wrap_ddp
    from model.unet import VideoUNet

    # the parent hosts the rendezvous store, as torchrun's agent does: every rank connects to it as a client
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), TORCHELASTIC_USE_AGENT_STORE="True")
    env = init_distributed("cpu")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    unet = VideoUNet(inputs["unet"])
    model = wrap_ddp(unet, env)
    half = slice(rank * 2, rank * 2 + 2)
    loss = diffusion_loss(model, inputs["scheduler"], inputs["latents"][half], inputs["text"][half],
                          inputs["noise"][half], inputs["timesteps"][half])
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad for n, p in unet.named_parameters()}, out)
    torch.distributed.barrier()
    # leave without destroy_process_group: in a forked child its gloo destructor joins a thread that waits for
    # the GIL the destructor holds (a deadlock seen here once in ~10 runs)
    os._exit(0)


def test_two_ddp_processes_give_the_combined_batch_gradients(tmp_path):
    from model.config import UNetConfig
    from model.diffusion import build_noise_scheduler
    from model.train_config import DiffusionConfig
    from model.unet import VideoUNet

    g = torch.Generator().manual_seed(0)
    # dropout off: the two set-ups draw their dropout masks from different generators
    unet_cfg = UNetConfig.tiny(block_out_channels=(8, 16), attention_levels=(True, False), norm_num_groups=4,
                               temporal_conv_dropout=0.0)
    inputs = {"unet": unet_cfg, "scheduler": build_noise_scheduler(DiffusionConfig()),
              "latents": torch.randn(4, 4, 3, 4, 6, generator=g), "text": torch.randn(4, 7, 32, generator=g),
              "noise": torch.randn(4, 4, 3, 4, 6, generator=g), "timesteps": torch.tensor([10, 300, 600, 999])}
    # the rendezvous store listens on a port the OS gives it at bind time (no port chosen in advance)
    store = torch.distributed.TCPStore("127.0.0.1", 0, world_size=2, is_master=True, wait_for_workers=False)
    # fork: the children start with torch and the model code already imported (spawn re-imports them)
    mp.start_processes(_ddp_worker, args=(2, store.port, inputs, str(tmp_path / "ddp.pt")), nprocs=2, join=True,
                       start_method="fork")
    del store
    ddp_grads = torch.load(tmp_path / "ddp.pt")

    torch.manual_seed(0)
    unet = VideoUNet(unet_cfg)
    diffusion_loss(unet, inputs["scheduler"], inputs["latents"], inputs["text"], inputs["noise"],
                   inputs["timesteps"]).backward()
    assert any(float(p.grad.abs().sum()) > 0 for p in unet.parameters())
    for name, p in unet.named_parameters():
        torch.testing.assert_close(ddp_grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_hdvg_train_under_torchrun_says_it_trains_empty_text(components, small_shards, tmp_path):
    """`hdvg train` on two gloo processes: both ranks' data positions are checkpointed, the log names the
    uncaptioned clips trained with empty text."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "hdvg.cli", "train", "--config", "tiny", "--components", str(components),
           "--shards", str(small_shards / "000000.tar"), "--shards", str(small_shards / "000001.tar"),
           "--weights", "1", "--weights", "3", "--output", str(run), "--steps", "2",
           "--set", "data.uncaptioned=empty", "--set", "data.width=64", "--set", "data.height=32",
           "--set", "optim.batch_per_gpu=1", "--set", "optim.batch_size=2",
           *[arg for o in SMALL_UNET for arg in ("--set", o)]]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "uncaptioned clips are trained with EMPTY text" in result.stdout
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[-1]["samples"] == 4  # 2 ranks x 1 x 2 steps
    assert records[-1]["uncaptioned_empty_text"] >= 1 and "empty-text" in result.stdout
    state = torch.load(run / "checkpoints" / "step_000000002.pt", weights_only=False)
    assert len(state["data"]["positions"]) == 2 and state["data"]["world_size"] == 2


def test_config_errors_name_the_field(components):
    with pytest.raises(ConfigError, match="optim.batch_size"):
        load_config("tiny", ["optim.batch_size=3"]).validate()
    with pytest.raises(ConfigError, match="optim.learning_rate: Extra inputs are not permitted"):
        load_config("tiny", ["optim.learning_rate=1"])
    with pytest.raises(ConfigError, match="data.weights: Value error, needs one weight per shard set"):
        load_config("tiny", ["data.shards=[a, b]", "data.weights=[1]"]).validate()
    with pytest.raises(ConfigError, match="unet: .*UNetConfig.fusion"):
        load_config("tiny", ["unet.fusion=bogus"]).validate()
    stages = [load_config(f"stage{i}").validate(world_size=32) for i in (1, 2, 3)]
    assert [s.steps for s in stages] == [18000, 10000, 12500]
    assert [s.unet["fusion_enabled"] for s in stages] == [False, False, True]
    assert stages[0].accumulation(32) == 1 and stages[0].accumulation(8) == 4
