"""The job's only shard writer dies mid-job: a real job on its own local Ray cluster, its WriterActor process
killed with SIGKILL once the first shard is committed. The job finishes; every input has exactly one row; the
clips equal a clean run's; the shard numbers stay gapless (the writer counts its own numbers, and the next
one goes on after the last number the lost one committed)."""
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.test_cluster_node_death import assert_like_clean_run, clean_run, start_job, wait_for_first_commit

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
    inp, clean = clean_run(tmp_path)
    out = tmp_path / "out"
    job = start_job(inp, out, "--address", "local")
    wait_for_first_commit(job, out)
    writer = _writer_pid(job)
    assert job.poll() is None and writer is not None, "the job ended before its writer could be killed"
    os.kill(writer, signal.SIGKILL)
    log, _ = job.communicate(timeout=600)
    assert job.returncode == 0, log[-3000:]
    assert "shard writer on head lost" in log
    assert_like_clean_run(out, clean)
    committed = sorted(p.stem for p in (out / "videos").glob("*.parquet"))
    assert committed == [f"{n:06d}" for n in range(len(committed))]
    assert sorted(p.stem for p in (out / "shards").glob("*.tar")) == committed
