"""`ray job submit` round trip against a real local head with Ray's token authentication on.

The head is started with `ray start --head --block` in its own process group and stopped by signalling that
group: `ray stop` would stop every Ray process on the machine, other clusters included."""
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from hdvg.validate import validate
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    dash = free_port()
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
           f"--dashboard-agent-listen-port={free_port()}", "--num-cpus=2", "--disable-usage-stats"]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=(tmp_path / "head.log").open("w"),
                            stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{dash}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        probe = subprocess.run([RAY, "job", "list", "--address", address], env=env, capture_output=True, text=True)
        if probe.returncode == 0:
            break
        assert head.poll() is None, (tmp_path / "head.log").read_text()[-2000:]
        time.sleep(2)
    yield address, env
    os.killpg(head.pid, signal.SIGKILL)  # `ray start`, its raylet and GCS: this head only
    head.wait()


def submit(address, env, *args, timeout=600):
    runtime_env = {"working_dir": str(ROOT), "excludes": [".venv", "data", ".git", "**/__pycache__"]}
    cmd = [RAY, "job", "submit", "--address", address, "--runtime-env-json", json.dumps(runtime_env), "--",
           sys.executable, "-m", "pipelines.curate", *args]
    for _ in range(30):  # a new head answers `job list` before its node's job agent has registered
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if "No available agent to submit job" not in proc.stdout + proc.stderr:
            return proc
        time.sleep(2)
    return proc


def test_job_submit_runs_and_resubmit_resumes(ray_head, sample_videos, tmp_path):
    address, env = ray_head
    wrong = subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, text=True,
                           env={**env, "RAY_AUTH_TOKEN": "0" * 64})
    assert wrong.returncode != 0 and "token" in (wrong.stdout + wrong.stderr).lower()  # auth is really on
    out = tmp_path / "out"
    args = ["--input", str(sample_videos), "--output", str(out), "--samples-per-shard", "2", "--captioner", "none"]
    first = submit(address, env, *args, "--limit", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    assert "succeeded" in first.stdout.lower()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == 3 and stats["last_run"]["ray_cpus"] == 2  # it ran on the head's cluster
    again = submit(address, env, *args)  # the resubmitted job continues where the first stopped
    assert again.returncode == 0, again.stdout[-3000:]
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == 7 and stats["last_run"]["videos"] == 4  # 6 videos and truth.json
    assert validate(out)[0] == []
