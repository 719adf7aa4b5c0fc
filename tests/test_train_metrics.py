"""What a training run shows: TensorBoard event files in RUN/tb/ read back with tensorboard's own reader
(loss, lr, grad norm, clips/s, data wait, skips by reason; preview videos and their frame grid), previews of
the EMA model in RUN/samples/step_N/ that leave the training itself unchanged."""
from __future__ import annotations

import av
import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from model.checkpoint import read_checkpoint
from model.train import Trainer, main
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.test_train_loop import components, config, small_shards  # noqa: F401 (fixtures)


def test_tensorboard_scalars_and_previews(components, small_shards, tmp_path):
    shards = str(small_shards / "000000.tar")
    run = tmp_path / "run"
    assert main(Trainer(config(components, shards, "steps=3", "sample_every=2", "sample_steps=1",
                               "checkpoint_every=3"), run)) == 0

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = events.Tags()
    for tag in ("train/loss", "train/lr", "train/grad_norm", "speed/clips_per_s", "speed/data_wait",
                "data/samples", "data/skipped/undecodable", "data/skipped/uncaptioned"):
        assert tag in tags["scalars"], (tag, tags["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    logged = [float(line.split('"loss": ')[1].split(",")[0]) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/loss")] == np.float32(logged).tolist()
    assert {"samples/0", "samples/1", "samples/grid"} <= set(tags["images"])
    gif = events.Images("samples/0")[0]
    assert gif.step == 2 and gif.encoded_image_string[:6] == b"GIF89a" and (gif.width, gif.height) == (64, 32)

    folder = run / "samples" / "step_000000002"
    with av.open(str(folder / "0.mp4")) as video:
        assert video.streams.video[0].frames == 4  # the training clip length
    assert Image.open(folder / "grid.png").size == (4 * 64, 2 * 32)  # a row of 4 frames per prompt

    # a step after the preview: the previews draw nothing from the training's generators and put the training weights back
    plain = tmp_path / "plain"
    Trainer(config(components, shards, "steps=3", "sample_every=0", "checkpoint_every=3",
                   "report_to=none"), plain).run()
    a, b = (read_checkpoint(r / "checkpoints" / "step_000000003.pt") for r in (run, plain))
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=0)
    assert not (plain / "tb").exists() and not (plain / "samples").exists()
