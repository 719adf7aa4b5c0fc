"""model/distributed.py: every GPU command's device is cuda:LOCAL_RANK under torchrun; `hdvg train-sr` trains
under torchrun with 2 gloo ranks (each rank's loader position and RNG state in the checkpoint, a resume that
goes on from it), as `hdvg train` does; `hdvg encode-latents` splits the shards by rank."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from model.checkpoint import list_checkpoints, read_checkpoint
from model.data import iter_tar_samples
from model.distributed import local_device
from tests.conftest import ROOT
from tests.test_train_cluster import ENV
from tests.test_train_loop import components, small_shards  # noqa: F401 (fixtures)


def test_local_device_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert local_device("cuda") == torch.device("cuda:3")  # not GPU 0 for every rank
    assert local_device("cuda:1") == torch.device("cuda:1") and local_device("cpu") == torch.device("cpu")
    assert local_device(torch.device("cuda")) == torch.device("cuda:3")  # a torch.device is read the same way
    assert local_device(torch.device("cpu")) == torch.device("cpu")
    assert local_device() == (torch.device("cuda:3") if torch.cuda.is_available() else torch.device("cpu"))


@pytest.mark.slow
def test_train_sr_under_torchrun_with_two_ranks(curated_out, tmp_path):
    run = tmp_path / "run"
    fast = ["data.patch_size=32", "data.frames_per_clip=2", "train.batch_size=4", "train.l1_steps=1",
            "train.gan_steps=2", "train.log_every=1", "train.checkpoint_every=2", "data.shuffle=4", "data.workers=0"]

    def train_sr(*extra: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "hdvg.cli", "train-sr", "--config", "tiny", "--shards", str(curated_out / "shards" / "*.tar"),
               "--output", str(run), *[a for item in fast for a in ("--set", item)], *extra]
        return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)

    first = train_sr("--steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    state = read_checkpoint(list_checkpoints(run)[-1])
    assert state["step"] == 2 and state["data"]["world_size"] == 2 and len(state["data"]["positions"]) == 2
    assert not torch.equal(state["rng"][0]["generators"]["degrade"], state["rng"][1]["generators"]["degrade"])
    resumed = train_sr("--steps", "3", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["stage"] == "gan"  # one writer: rank 0
    assert "hdvg train-sr: step 3" in resumed.stdout


def test_train_sr_config_errors_exit_2_naming_the_field(tmp_path, capsys):
    from hdvg.cli import main as hdvg

    assert hdvg(["train-sr", "--shards", "x/*.tar", "--output", str(tmp_path), "--set", "rcan.scale=2"]) == 2
    # the model is x4 only: no scale field to set (it would do nothing but fail later)
    assert "rcan.scale: Extra inputs are not permitted" in capsys.readouterr().err


@pytest.mark.slow
def test_encode_latents_under_torchrun_splits_the_shards_by_rank(components, small_shards, tmp_path):
    """2 gloo ranks: each encodes its own shard (on its own device: cuda:LOCAL_RANK on GPUs), together what one
    process writes."""
    def encode(out, ranks: int) -> subprocess.CompletedProcess:
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] \
            if ranks > 1 else [sys.executable]
        return subprocess.run([*launch, "-m", "hdvg.cli", "encode-latents", "--shards", str(small_shards / "*.tar"),
                               "--output", str(out), "--config", "tiny", "--components", str(components)],
                              cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)

    split, alone = encode(tmp_path / "split", 2), encode(tmp_path / "alone", 1)
    assert split.returncode == 0 and alone.returncode == 0, split.stderr[-3000:] + alone.stderr[-3000:]
    assert split.stdout.count("hdvg encode-latents: 1 clips") == 2 and "2 clips" in alone.stdout
    for name in ("000000.tar", "000001.tar"):
        a, b = (next(iter_tar_samples([str(root / "shards" / name)]))
                for root in (tmp_path / "split", tmp_path / "alone"))
        assert a["npy"] == b["npy"]
