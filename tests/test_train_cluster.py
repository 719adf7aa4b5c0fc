"""`hdvg train` as a cluster runs it: real processes, real signals, torchrun with 2 gloo ranks. A stop signal
(SIGTERM, SIGUSR1) finishes the step, checkpoints it on every rank's behalf and exits 0; `--resume` goes on from
it; with 2 ranks and image + video shards, a run stopped at step N and resumed equals an uninterrupted one at
N + 1 bit for bit (each rank's RNG states and partly filled batches of the other kind are in the checkpoint)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model.checkpoint import list_checkpoints, read_checkpoint
from model.data import expand_shards, iter_tar_samples
from tests.conftest import ROOT
from tests.model_builders import write_shard
from tests.test_train_loop import SMALL_UNET, components, small_shards  # noqa: F401 (fixtures)

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def image_shards(curated_out, tmp_path_factory) -> Path:
    """img2dataset layout (jpg + txt): the curated clips' keyframes."""
    images = [{"__key__": s["__key__"], "jpg": s["jpg"], "txt": b"a photograph of a city"}
              for s in iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))]
    return write_shard(tmp_path_factory.mktemp("images") / "000000.tar", images)


def train_command(components: Path, shards: list[str], run: Path, *extra: str, ranks: int = 1) -> list[str]:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)] \
        if ranks > 1 else [sys.executable]
    return [*launch, "-m", "hdvg.cli", "train", "--config", "tiny", "--components", str(components),
            *[a for s in shards for a in ("--shards", s)], "--output", str(run), "--set", "data.width=64",
            "--set", "data.height=32", "--set", "data.frame_stride=1", *[a for o in SMALL_UNET for a in ("--set", o)],
            *extra]


def logged(run: Path) -> list[dict]:
    path = run / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def worker_pids(launcher: int) -> dict[int, int]:
    """torchrun's worker processes by RANK (from their environment)."""
    children = {}
    for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = next((int(e[5:]) for e in environ if e.startswith(b"RANK=")), None)
        if rank is not None:
            children[rank] = int(child)
    return children


def signal_after_step(cmd: list[str], run: Path, step: int, sig: int, target=None, timeout: float = 240):
    """Start `cmd`, send `sig` once log.jsonl reaches `step` (to the process, or to `target(pid)`), return the
    finished process's (returncode, stdout, stderr)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not any(r.get("step", 0) >= step for r in logged(run)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"no step {step} logged (rc {proc.returncode}): {out[-2000:]} {err[-3000:]}")
        time.sleep(0.2)
    os.kill(target(proc.pid) if target else proc.pid, sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.mark.slow
def test_sigterm_checkpoints_the_step_reached_and_exits_0_then_resume_goes_on(components, small_shards,
                                                                              tmp_path):
    run = tmp_path / "run"
    cmd = train_command(components, [str(small_shards / "000000.tar")], run, "--steps", "1000",
                        "--set", "checkpoint_every=1000")
    rc, out, err = signal_after_step(cmd, run, 1, signal.SIGTERM)
    assert rc == 0, err[-3000:]
    reached = logged(run)[-1]["step"]
    assert "SIGTERM received: finishing the current step" in err
    assert f"stopped by SIGTERM at step {reached}" in out
    assert [p.name for p in list_checkpoints(run)] == [f"step_{reached:09d}.pt"]

    resumed = subprocess.run(train_command(components, [str(small_shards / "000000.tar")], run, "--resume",
                                           "--steps", str(reached + 1)),
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {reached}" in resumed.stdout and logged(run)[-1]["step"] == reached + 1


@pytest.mark.slow
def test_two_ranks_stop_on_one_ranks_sigusr1_and_resume_exactly_with_mixed_kinds(components, small_shards,
                                                                                  image_shards, tmp_path):
    """torchrun, 2 gloo ranks, video + image shards, 2 clips per micro-batch: SIGUSR1 to rank 1 alone stops
    both after the same step, with a checkpoint; resumed one step further, the run equals an uninterrupted one
    at that step (weights, EMA, optimiser, loss) bit for bit."""
    shards = [str(small_shards / "*.tar"), str(image_shards)]
    common = ("--set", "data.uncaptioned=empty", "--set", "optim.batch_per_gpu=2", "--set", "optim.batch_size=4",
              "--set", "checkpoint_every=1000")
    stopped = tmp_path / "stopped"
    rc, out, err = signal_after_step(train_command(components, shards, stopped, "--steps", "1000", *common,
                                                   ranks=2),
                                     stopped, 2, signal.SIGUSR1, target=lambda pid: worker_pids(pid)[1])
    assert rc == 0, err[-3000:]
    n = logged(stopped)[-1]["step"]
    assert "SIGUSR1 received" in err and f"stopped by a stop signal on another rank at step {n}" in out
    state = read_checkpoint(list_checkpoints(stopped)[-1])
    assert state["step"] == n and len(state["rng"]) == 2 and state["data"]["world_size"] == 2
    assert not torch.equal(state["rng"][0]["generators"]["trainer"], state["rng"][1]["generators"]["trainer"])

    for run, extra in ((stopped, ("--resume",)), (tmp_path / "straight", ())):
        done = subprocess.run(train_command(components, shards, run, "--steps", str(n + 1), *common, *extra,
                                            ranks=2), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    a = read_checkpoint(list_checkpoints(tmp_path / "straight")[-1])
    b = read_checkpoint(list_checkpoints(stopped)[-1])
    assert a["step"] == b["step"] == n + 1
    assert logged(tmp_path / "straight")[-1]["loss"] == logged(stopped)[-1]["loss"]
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(a["ema"]["shadow_params"], b["ema"]["shadow_params"], rtol=0, atol=0)
    torch.testing.assert_close(a["optimizer"]["state"], b["optimizer"]["state"], rtol=0, atol=0)
    assert a["data"] == b["data"]
    for rank in (0, 1):
        torch.testing.assert_close(a["rng"][rank]["generators"], b["rng"][rank]["generators"], rtol=0, atol=0)
