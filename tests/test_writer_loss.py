"""The job's only shard writer dies mid-job: a real job on its own local Ray cluster, its WriterActor process
killed with SIGKILL once the first shard is committed. The job finishes; every input has exactly one row; the
clips equal a clean run's; the shard numbers stay gapless (the writer counts its own numbers, and the next
one goes on after the last number the lost one committed)."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hdvg.config import build_config
from hdvg.pipeline import run_curation
from hdvg.validate import validate
from tests.conftest import ROOT
from tests.test_cluster_node_death import SMALL, VIDEOS, clips_of
from tests.test_sources import _three_colour_video

pytestmark = pytest.mark.slow


def _writer_pid(job: subprocess.Popen) -> int | None:
    """The pid of the job's WriterActor process (a descendant of the job: its raylet's worker)."""
    parent, name = {}, {}
    for proc in Path("/proc").iterdir():
        try:
            parent[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            name[int(proc.name)] = (proc / "cmdline").read_bytes().split(b"\0")[0]
        except (ValueError, OSError, IndexError):
            continue
    for pid in parent:
        ancestor = pid
        while ancestor in parent and ancestor != job.pid:
            ancestor = parent[ancestor]
        if ancestor == job.pid and name.get(pid, b"").startswith(b"ray::WriterActor"):  # idle, or in a call
            return pid
    return None


def test_the_lone_writer_killed_mid_job_loses_nothing_and_leaves_no_gap(tmp_path, ray_local):
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(VIDEOS):
        _three_colour_video(inp / f"v{k}.mp4")
    clean = tmp_path / "clean"
    run_curation(build_config(values={"input": str(inp), "output": str(clean), **SMALL}))

    out = tmp_path / "out"
    flags = [f"--{k.split('.')[-1].replace('_', '-')}={v}" for k, v in SMALL.items() if k != "captioner.name"]
    job = subprocess.Popen([sys.executable, "-m", "pipelines.curate", "--input", str(inp), "--output", str(out),
                            "--captioner", "none", "--address", "local", *flags],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None and not list((out / "videos").glob("*.parquet")):
        time.sleep(0.05)
    writer = _writer_pid(job)
    assert job.poll() is None and writer is not None, "the job ended before its writer could be killed"
    os.kill(writer, signal.SIGKILL)
    log, _ = job.communicate(timeout=600)
    assert job.returncode == 0, log[-3000:]
    assert "shard writer on head lost" in log

    rows = pq.read_table(out / "videos").to_pylist()
    assert sorted(r["video_id"] for r in rows) == [f"v{k}" for k in range(VIDEOS)]  # one row each
    assert {r["status"] for r in rows} == {"ok"}
    assert clips_of(out) == clips_of(clean)
    assert validate(out)[0] == []
    committed = sorted(p.stem for p in (out / "videos").glob("*.parquet"))
    assert committed == [f"{n:06d}" for n in range(len(committed))]
    assert sorted(p.stem for p in (out / "shards").glob("*.tar")) == committed
    assert json.loads((out / "stats.json").read_text())["clips"] == len(clips_of(clean))
