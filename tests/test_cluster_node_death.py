"""A Ray worker node dies mid-job: a real two-node cluster on this machine (a head, and a worker node started
with `ray start --address` with its own CPUs and resources), the worker node killed with SIGKILL once the job
has committed its first parts. The job finishes; every input has exactly one row; the clips equal a clean
run's, none twice, none missing.

Both nodes run in their own process groups and are stopped by signalling those groups: `ray stop` would stop
every Ray process on the machine."""
import json
import os
import secrets
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
from tests.test_ray_job import RAY, node_ports, start_head
from tests.test_sources import _three_colour_video

pytestmark = pytest.mark.slow
# PySceneDetect: these jobs are about nodes and writers, not shots (TransNetV2 on CPU only makes them slower)
SMALL = {"captioner.name": "none", "filter.min_height": 100, "encode.preset": "ultrafast",
         "detect.detector": "adaptive", "shards.samples_per_shard": 6}
VIDEOS = 8


def _start(cmd, env, log):
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def two_nodes(tmp_path):
    token = secrets.token_hex(32)
    # a dead node is noticed after 2 missed 1-second health checks instead of Ray's default ~30 s
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_health_check_period_ms": "1000",
           "RAY_health_check_failure_threshold": "2", "RAY_health_check_initial_delay_ms": "1000"}
    env.pop("RAY_ADDRESS", None)
    head, address, _ = start_head(["--num-cpus=1", '--resources={"video_slot": 1}', "--include-dashboard=false"],
                                  env, tmp_path / "head.log")
    worker = None
    try:
        worker = _start([RAY, "start", f"--address={address}", "--num-cpus=2", '--resources={"video_slot": 2}',
                         "--node-ip-address=127.0.0.1", "--block", *node_ports()], env, tmp_path / "worker.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # both nodes registered
            probe = subprocess.run([sys.executable, "-c", "import ray; ray.init(address=%r, logging_level='ERROR'); "
                                    "print(sum(n['Alive'] for n in ray.nodes()))" % address],
                                   env=env, capture_output=True, text=True, timeout=60)
            if probe.stdout.strip().endswith("2"):
                break
            assert head.poll() is None and worker.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(1)
        else:
            pytest.fail("the worker node did not join: " + (tmp_path / "worker.log").read_text()[-2000:])
        yield address, env, worker
    finally:
        for proc in (worker, head):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # this test's nodes only
                proc.wait()


def clips_of(out):
    return sorted((r["clip_id"], r["start_frame"], r["end_frame"]) for r in pq.read_table(out / "index").to_pylist())


def clean_run(tmp_path) -> tuple[Path, Path]:
    """VIDEOS three-colour inputs, and the OUT of an undisturbed run over them."""
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(VIDEOS):
        _three_colour_video(inp / f"v{k}.mp4")
    clean = tmp_path / "clean"
    run_curation(build_config(values={"input": str(inp), "output": str(clean), **SMALL}))
    return inp, clean


def start_job(inp, out, *args: str, env=None) -> subprocess.Popen:
    """The SMALL job as `pipelines.curate` in a process of its own, with `args` added."""
    flags = [f"--{k.split('.')[-1].replace('_', '-')}={v}" for k, v in SMALL.items() if k != "captioner.name"]
    return subprocess.Popen([sys.executable, "-m", "pipelines.curate", "--input", str(inp), "--output", str(out),
                             "--captioner", "none", *args, *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for_first_commit(job: subprocess.Popen, out) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and job.poll() is None and not list((out / "videos").glob("*.parquet")):
        time.sleep(0.05)


def assert_like_clean_run(out, clean) -> None:
    """Every input has exactly one row, ok; the clips equal the clean run's, none twice, none missing."""
    rows = pq.read_table(out / "videos").to_pylist()
    assert sorted(r["video_id"] for r in rows) == [f"v{k}" for k in range(VIDEOS)]
    assert {r["status"] for r in rows} == {"ok"}
    assert clips_of(out) == clips_of(clean)
    assert validate(out)[0] == []
    assert json.loads((out / "stats.json").read_text())["clips"] == len(clips_of(clean))


def test_a_worker_node_killed_mid_job_loses_nothing_and_duplicates_nothing(tmp_path, two_nodes, ray_local):
    address, env, worker = two_nodes
    inp, clean = clean_run(tmp_path)
    out = tmp_path / "out"
    # 1 video at a time on the head, 2 on the worker
    job = start_job(inp, out, "--address", address, "--writers", "per_node", "--cpus-per-video", "0.5",
                    "--set", 'run.video_resources={"video_slot": 1}', env={**env, "PYTHONPATH": str(ROOT)})
    wait_for_first_commit(job, out)
    assert job.poll() is None, "the job ended before the node could be killed"
    os.killpg(worker.pid, signal.SIGKILL)  # the worker node, its raylet, its workers and its shard writer
    worker.wait()
    log, _ = job.communicate(timeout=600)
    assert job.returncode == 0, log[-3000:]
    assert_like_clean_run(out, clean)
    assert json.loads((out / "stats.json").read_text())["last_run"]["writers"] >= 2
