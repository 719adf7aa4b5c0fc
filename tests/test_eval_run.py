"""`hdvg eval` end to end on real shards (the `curated_out` fixture): scoring the dataset's own clips
against their captions and against themselves, and generating with a tiny trained run, resumed after an
interruption."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hdvg.cli import main as hdvg
from model.data import caption_of, expand_shards, iter_tar_samples
from tests.model_builders import save_i3d_torchscript_standin
from model.tiny import save_tiny_clip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_weights")
    return save_i3d_torchscript_standin(folder / "i3d_torchscript.pt"), save_tiny_clip(folder / "clip")


def test_eval_scores_the_dataset_own_clips(curated_out, weights, tmp_path, capsys):
    i3d, clip = weights
    shards = str(curated_out / "shards" / "*.tar")
    captions = [caption_of(s) for s in iter_tar_samples(expand_shards(shards))]
    # CLIPSIM of every clip against its caption; the fixture's last clip is uncaptioned and is skipped
    assert hdvg(["eval", "--videos", str(curated_out / "shards"), "--metrics", "clipsim", "--clip", str(clip),
                 "--output", str(tmp_path / "clipsim")]) == 0
    (clipsim,) = json.loads((tmp_path / "clipsim" / "report.json").read_text())["metrics"]
    assert clipsim["samples"] == len(captions) - 1 and clipsim["uncaptioned_skipped"] == 1 == captions.count(None)
    assert clipsim["frames"] == 16 * clipsim["samples"] and -1 <= clipsim["value"] <= 1
    assert clipsim["crop"] == "center-crop" and len(clipsim["clip"]["sha256"]) == 64
    from PIL import Image
    assert Image.open(tmp_path / "clipsim" / "grid.png").size[1] == 96 * min(8, len(captions))

    # FVD of the first two clips against the same two real clips: 0
    fvd_args = ["eval", "--videos", str(curated_out / "shards"), "--real", shards, "--i3d", str(i3d),
                "--metrics", "fvd", "--num-samples", "2", "--stats-cache", str(tmp_path / "cache")]
    assert hdvg(fvd_args + ["--output", str(tmp_path / "fvd")]) == 0
    (fvd,) = json.loads((tmp_path / "fvd" / "report.json").read_text())["metrics"]
    assert fvd["metric"] == "FVD" and fvd["generated_clips"] == fvd["real_clips"] == 2
    assert abs(fvd["value"]) < 1e-4 and fvd["resize"] == "full" and fvd["detector"]["kind"] == "torchscript"
    assert len(fvd["detector"]["sha256"]) == 64 and not fvd["real_stats"]["cached"]
    # again: the real statistics of the same shards, count, detector and policy come from the cache
    assert hdvg(fvd_args + ["--output", str(tmp_path / "again")]) == 0
    (again,) = json.loads((tmp_path / "again" / "report.json").read_text())["metrics"]
    assert again["real_stats"]["cached"] and again["value"] == fvd["value"]
    assert "FVD = " in capsys.readouterr().out


def test_eval_refuses_fvd_without_its_inputs(curated_out, tmp_path, capsys):
    assert hdvg(["eval", "--videos", str(curated_out / "shards"), "--output", str(tmp_path)]) == 2
    assert "--real" in capsys.readouterr().err
    assert hdvg(["eval", "--videos", str(curated_out / "shards"), "--output", str(tmp_path),
                 "--metrics", "clipsim", "--resize", "squash"]) == 2
    assert "\n  resize: Value error, one of" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_run(curated_out, tmp_path_factory):
    """A RUN of the tiny trainer config: one optimiser step on the real shards, its checkpoint saved."""
    from model.train import Trainer
    from model.train_config import tiny
    from model.tiny import save_tiny_components

    root = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny()
    cfg.components = str(save_tiny_components(root / "components"))
    cfg.data.shards = [str(curated_out / "shards" / "*.tar")]
    Trainer(cfg, root / "run").run(1)
    return root / "run"


def test_eval_generates_resumes_after_a_kill_and_shards_by_rank(tiny_run, curated_out, weights, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    i3d, clip = weights
    (tmp_path / "prompts.txt").write_text("a man in a suit\na slideshow of a city\n")
    report_dir = tmp_path / "report"
    args = ["eval", "--checkpoint", str(tiny_run), "--prompts", str(tmp_path / "prompts.txt"),
            "--real", str(curated_out / "shards"), "--i3d", str(i3d), "--clip", str(clip), "--output",
            str(report_dir), "--steps", "1", "--batch-size", "1", "--device", "cpu", "--real-count", "2",
            "--stats-cache", str(tmp_path / "cache")]
    first = report_dir / "videos" / "000000.mp4"
    # interrupted: killed (SIGKILL) once its first video is written
    job = subprocess.Popen([sys.executable, "-m", "hdvg.cli", *args, "--num-samples", "2"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not first.exists() and job.poll() is None:
        time.sleep(0.05)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert first.exists(), job.stderr.read().decode()[-2000:]
    written = (first.stat().st_ino, first.stat().st_mtime_ns)
    assert not (report_dir / "report.json").exists()

    # the rerun generates only what is missing, then scores
    assert hdvg(args + ["--num-samples", "2"]) == 0
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == written
    assert sorted(p.name for p in (report_dir / "videos").glob("*.mp4")) == ["000000.mp4", "000001.mp4"]
    report = json.loads((report_dir / "report.json").read_text())
    fvd, clipsim = report["metrics"]
    assert fvd["generated_clips"] == 2 and fvd["real_clips"] == 2 and np.isfinite(fvd["value"]) and fvd["value"] > 0
    assert clipsim["samples"] == 2 and clipsim["frames"] == 32  # every generated clip scores all 16 frames
    assert report["protocol_samples"] == 2 and report["complete_protocol"]
    assert report["checkpoint"]["file"].endswith(".pt") and len(report["checkpoint"]["sha256"]) == 64
    assert report["generation"] == {"steps": 1, "guidance": 9.0, "seed": 0, "sampler": "DDIM"}
    samples = [json.loads(line) for line in (report_dir / "samples.jsonl").read_text().splitlines()]
    assert [(s["prompt"], s["seed"]) for s in samples] == [("a man in a suit", 0), ("a slideshow of a city", 1)]

    # extended to 4 samples over two ranks: rank 1 makes only its share (index 3) and does not score; rank 0
    # makes index 2 and scores all four
    assert hdvg(args + ["--num-samples", "4", "--rank", "1", "--world-size", "2"]) == 0
    assert sorted(p.name for p in (report_dir / "videos").glob("*.mp4"))[2:] == ["000003.mp4"]
    assert json.loads((report_dir / "report.json").read_text())["metrics"][1]["samples"] == 2
    assert hdvg(args + ["--num-samples", "4", "--rank", "0", "--world-size", "2"]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["metrics"][1]["samples"] == 4 and report["metrics"][0]["real_stats"]["cached"]
    assert (first.stat().st_ino, first.stat().st_mtime_ns) == written
    # another evaluation in the same folder is refused rather than mixed in
    assert hdvg(args + ["--num-samples", "4", "--seed", "9"]) == 2
