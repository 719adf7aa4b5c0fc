"""The video trainer under faults a cluster run meets: a damaged newest checkpoint (resume goes back one and
says so), a non-finite loss or gradient (the step is skipped, counted, and too many in a row stop the run
naming the last good checkpoint). Real trainer, real shards, tiny random components of the real classes."""
from __future__ import annotations

import json

import pytest
import torch

from model.checkpoint import DAMAGED_SUFFIX, NoLoadableCheckpoint, list_checkpoints, read_checkpoint
from model.train import Trainer
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.test_train_loop import components, config, small_shards  # noqa: F401 (fixtures)


def test_a_damaged_newest_checkpoint_is_moved_aside_and_the_previous_one_resumes(components, small_shards,
                                                                                 tmp_path, capfd):
    shards = str(small_shards / "000000.tar")
    run = tmp_path / "run"
    Trainer(config(components, shards, "steps=2", "checkpoint_every=1"), run).run()
    _, step2 = list_checkpoints(run)
    step2.write_bytes(b"")  # what a power loss after the rename can leave
    capfd.readouterr()
    trainer = Trainer(config(components, shards, "steps=3", "checkpoint_every=1"), run, resume=True)
    err = capfd.readouterr().err
    assert trainer.step == 1
    assert f"checkpoint {step2} does not load (EOFError" in err and "using the one before it" in err
    assert not step2.exists() and step2.with_name(step2.name + DAMAGED_SUFFIX).exists()
    trainer.run()
    assert [p.name for p in list_checkpoints(run)] == ["step_000000001.pt", "step_000000002.pt",
                                                       "step_000000003.pt"]
    assert read_checkpoint(run / "checkpoints" / "step_000000003.pt")["step"] == 3

    # none loads: a clear error, not a silent restart from step 0
    for path in list_checkpoints(run):
        path.write_bytes(path.read_bytes()[:100])  # truncated zip
    with pytest.raises(NoLoadableCheckpoint, match="no checkpoint in .* loads: step_000000003.pt"):
        Trainer(config(components, shards, "steps=4"), run, resume=True)


def test_a_non_finite_loss_or_gradient_skips_the_step(components, small_shards, tmp_path):
    trainer = Trainer(config(components, str(small_shards / "000000.tar"), "steps=3"), tmp_path / "run")
    before = {n: p.detach().clone() for n, p in trainer.unet.named_parameters()}
    ema_before = [p.clone() for p in trainer.ema.shadow_params]

    nan_output = trainer.unet.register_forward_hook(lambda module, args, out: out * float("nan"))
    record = trainer.train_step()
    nan_output.remove()
    param = next(p for p in trainer.unet.parameters() if p.requires_grad)
    inf_grad = param.register_hook(lambda grad: grad * float("inf"))
    record2 = trainer.train_step()
    inf_grad.remove()

    assert record["step_skipped"] == "nonfinite_loss" and record2["step_skipped"] == "nonfinite_grad"
    assert trainer.step == 0 and trainer.bad_in_a_row == 2
    assert dict(trainer.bad_steps) == {"nonfinite_loss": 1, "nonfinite_grad": 1}
    for name, p in trainer.unet.named_parameters():  # no optimiser step, no weight decay
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
    assert not trainer.optimizer.state and trainer.lr_schedule.last_epoch == 0
    assert trainer.ema.optimization_step == 0
    for shadow, old in zip(trainer.ema.shadow_params, ema_before):
        torch.testing.assert_close(shadow, old, rtol=0, atol=0)

    records = trainer.run()  # healthy again: trains on, the skips counted in the log and the checkpoint
    assert trainer.step == 3 and trainer.bad_in_a_row == 0 and records[-1]["skipped_steps"]["nonfinite_loss"] == 1
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "step_000000003.pt")["data"]["bad_steps"] == {
        "nonfinite_loss": 1, "nonfinite_grad": 1}


def test_too_many_bad_steps_in_a_row_stop_the_run_naming_the_last_good_checkpoint(components, small_shards,
                                                                                     tmp_path, capsys):
    trainer = Trainer(config(components, str(small_shards / "000000.tar"), "steps=6", "checkpoint_every=1",
                             "optim.max_bad_steps=3"), tmp_path / "run")
    trainer.run(steps=1)
    trainer.unet.register_forward_hook(lambda module, args, out: out * float("nan"))
    with pytest.raises(FloatingPointError, match=r"3 optimiser steps in a row skipped .* at step 2 .*"
                                                 r"last good checkpoint is .*step_000000001\.pt"):
        trainer.run()
    assert "step 2 skipped: nonfinite_loss" in capsys.readouterr().out
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r.get("step_skipped") for r in logged] == [None, "nonfinite_loss", "nonfinite_loss", "nonfinite_loss"]
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step_000000001.pt"]


class _RunsCode:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_checkpoint_that_would_run_code_is_refused_not_run(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "run" / "checkpoints" / "step_000000001.pt"
    path.parent.mkdir(parents=True)
    torch.save({"step": 1, "model": {}, "rng": [], "payload": _RunsCode(marker)}, path)
    with pytest.raises(NoLoadableCheckpoint, match="UnpicklingError"):
        from model.checkpoint import resume_state

        resume_state(tmp_path / "run")
    assert not marker.exists()
