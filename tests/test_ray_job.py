"""`ray job submit` round trip against a real local head with Ray's token authentication on.

The head is started with `ray start --head --block` in its own process group and stopped by signalling that
group: `ray stop` would stop every Ray process on the machine, other clusters included."""
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hdvg.validate import validate
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def start_head(args: list[str], env: dict, log: Path) -> tuple[subprocess.Popen, str, str | None]:
    """`ray start --head --block` in a process group of its own, every port Ray can choose itself taken from
    the OS at bind time (0); returns the process, the GCS address and the job API's URL (None without a
    dashboard), read from what `ray start` prints. The Ray Client server's port is the one exception: Ray
    refuses 0 for it, so it gets a port the OS has just given a socket (no test connects to it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        client_port = s.getsockname()[1]
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=0",
           f"--ray-client-server-port={client_port}", *node_ports(), *args]
    head = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = log.read_text()
        gcs = re.search(r"ray start --address='[^:']+:(\d+)'", text)
        api = re.search(r"RAY_API_SERVER_ADDRESS='(http://[^']+)'", text)
        if gcs and (api or "--include-dashboard=false" in args):
            return head, f"127.0.0.1:{gcs.group(1)}", api.group(1) if api else None
        assert head.poll() is None, text[-2000:]
        time.sleep(0.5)
    os.killpg(head.pid, signal.SIGKILL)
    raise AssertionError("ray start printed no address: " + log.read_text()[-2000:])


def node_ports() -> list[str]:
    """Ports of a node's processes, all chosen by the OS (0)."""
    return ["--node-manager-port=0", "--object-manager-port=0", "--dashboard-agent-listen-port=0",
            "--dashboard-agent-grpc-port=0", "--metrics-export-port=0", "--runtime-env-agent-port=0",
            "--disable-usage-stats"]


@pytest.fixture
def ray_head(tmp_path):
    token = secrets.token_hex(32)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    head, _, address = start_head(["--dashboard-host=127.0.0.1", "--dashboard-port=0", "--num-cpus=2"], env,
                                  tmp_path / "head.log")
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
    # about job submission, not shots: PySceneDetect, the cheap detector
    args = ["--input", str(sample_videos), "--output", str(out), "--samples-per-shard", "2", "--captioner", "none",
            "--detector", "adaptive"]
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
