"""OUT in object storage: a real S3-compatible server (moto) on 127.0.0.1, started by the test."""
import json
import os
import subprocess
import sys

import pytest

from hdvg.shards import ShardWriter, recover, write_shards
from hdvg.storage import Store
from hdvg.validate import validate
from tests.conftest import ROOT
from tests.test_shards import fake_clip, row

SECRET = "hdvg-test-secret-7f3a"


@pytest.fixture(scope="module")
def s3_env():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "hdvg-test",
           "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="hdvg")
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def test_shards_in_s3_validate_and_recover(s3_env):
    out = "s3://hdvg/unit"
    write_shards(out, [(row("a", 2), [fake_clip("a", 0), fake_clip("a", 1)]), (row("b", 0, "failed"), [])],
                 samples_per_shard=1)
    store = Store(out)
    assert store.list("shards") == ["000000.tar"]  # "b" has no clips: its row commits without a tar
    assert store.list("videos") == ["000000.parquet", "000001.parquet"]
    # the residue of a crash: a published tar and index part without their commit marker
    writer = ShardWriter(out, samples_per_shard=10, first=2)
    writer.add(row("c", 1), [fake_clip("c", 0)])
    writer._tar.close()
    store.publish(writer._tmp(".tar"), "shards", "000002.tar")
    assert validate(out)[1]["clips"] == 3  # the residue is visible before recovery...
    assert recover(out) == ({"a", "b"}, 2)
    assert store.list("shards") == ["000000.tar"]  # ...and gone after it
    problems, summary = validate(out)
    assert summary["clips"] == 2 and summary["videos"] == 2


def upload(local, uri):
    store = Store(uri)
    with local.open("rb") as src, store.fs.open_output_stream(store.root) as dst:
        dst.write(src.read())


def test_mirror_and_inputs_in_s3(s3_env, sample_videos, tmp_path):
    from hdvg.config import SourceConfig
    from hdvg.sources import FetchError, WorkItem, fetch, list_inputs

    upload(sample_videos / "city_walk.mp4", "s3://hdvg/mirror/dQw4w9WgXcQ.mp4")
    cfg = SourceConfig(mirror="s3://hdvg/mirror/{video_id}.mp4")
    (tmp_path / "a").mkdir()
    got = fetch(WorkItem("dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"), tmp_path / "a", cfg)
    assert got.path.read_bytes() == (sample_videos / "city_walk.mp4").read_bytes()
    (tmp_path / "b").mkdir()
    with pytest.raises(FetchError) as err:
        fetch(WorkItem("aaaaaaaaaaa", "https://www.youtube.com/watch?v=aaaaaaaaaaa"), tmp_path / "b", cfg)
    assert err.value.classification == "not_found" and not list((tmp_path / "b").iterdir())
    (tmp_path / "manifest.txt").write_text("s3://hdvg/mirror/dQw4w9WgXcQ.mp4\n")
    upload(tmp_path / "manifest.txt", "s3://hdvg/lists/manifest.txt")
    assert [i.source for i in list_inputs("s3://hdvg/lists/manifest.txt")] == ["s3://hdvg/mirror/dQw4w9WgXcQ.mp4"]
    assert [i.video_id for i in list_inputs("s3://hdvg/mirror")] == ["dQw4w9WgXcQ"]


def test_released_metadata_in_s3_is_recognised_before_start_up(s3_env, tmp_path):
    from hdvg.sources import is_release_input
    from tests.conftest import shared_file

    upload(shared_file("metadata/hd-vg-130m/filtrain__metafiles__hdvg_batch_0-1@37fb225.json"),
           "s3://hdvg/meta/hdvg_0.json")
    assert is_release_input("s3://hdvg/meta/hdvg_0.json")  # a rebuild keeps its captions: no weights needed
    (tmp_path / "list.txt").write_text("a.mp4\n")
    upload(tmp_path / "list.txt", "s3://hdvg/meta/list.txt")
    assert not is_release_input("s3://hdvg/meta/list.txt") and not is_release_input("s3://hdvg/meta")


def test_job_reads_and_writes_s3_and_resumes(s3_env, sample_videos, tmp_path):
    for video in sorted(sample_videos.glob("*.mp4")):
        upload(video, f"s3://hdvg/in/{video.name}")
    out = "s3://hdvg/job"
    env = {**os.environ, **s3_env, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "pipelines.curate", "--input", "s3://hdvg/in", "--output", out,
           "--samples-per-shard", "2", "--run-num-cpus", "2", "--captioner", "none"]
    first = subprocess.run([*cmd, "--limit", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    done_first = {r["video_id"] for r in Store(out).read_table("videos").to_pylist()}
    assert len(done_first) == 2
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    store = Store(out)
    stats = json.loads(store.fs.open_input_stream(store.path("stats.json")).read())
    assert stats["videos"] == 6 and stats["last_run"]["videos"] == 4  # the rerun did only the rest
    problems, summary = validate(out)
    assert problems == [] and summary["clips"] == stats["clips"] > 0
    local = store.copy_to_local(tmp_path / "copy")
    for path in local.rglob("*"):  # credentials never reach the outputs
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in first.stdout + first.stderr + second.stdout + second.stderr
