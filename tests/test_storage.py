"""OUT on a local disk and in object storage (a real S3-compatible server, moto, on 127.0.0.1, started by the
test): the commit protocol, recovery, quarantine of damaged commits and the one-job lock, each tested once
over both stores."""
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdvg.contract import LOCK_DIR, QUARANTINE_DIR, VIDEO_SCHEMA
from hdvg.lock import OutLock, OutLocked
from hdvg.shards import ShardWriter, recover, write_shards, write_stats
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


@pytest.fixture(params=["local", "s3"])
def out_uri(request, tmp_path):
    """A fresh OUT on each store."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_env")
    return f"s3://hdvg/{uuid.uuid4().hex[:8]}"


def test_shards_validate_and_recover(out_uri):
    write_shards(out_uri, [(row("a", 2), [fake_clip("a", 0), fake_clip("a", 1)]), (row("b", 0, "failed"), [])],
                 samples_per_shard=1)
    store = Store(out_uri)
    assert store.list("shards") == ["000000.tar"]  # "b" has no clips: its row commits without a tar
    assert store.list("videos") == ["000000.parquet", "000001.parquet"]
    # the residue of a crash: a published tar and index part without their commit marker
    writer = ShardWriter(out_uri, samples_per_shard=10, first=2)
    writer.add(row("c", 1), [fake_clip("c", 0)])
    writer._tar.close()
    store.publish(writer._tmp(".tar"), "shards", "000002.tar")
    store.write_bytes("index", "000002.parquet", b"partial")
    store.write_bytes("shards", "000003.tar.part", b"junk")  # a stray file
    (writer.scratch / "stray.part").write_bytes(b"x")
    assert validate(out_uri)[1]["clips"] == 3  # the residue is visible before recovery...
    assert recover(out_uri) == ({"a", "b"}, 2)
    assert store.list("shards") == ["000000.tar"]  # ...and gone after it, scratch included
    assert store.list("index") == ["000000.parquet"]
    assert not writer.scratch.exists() and store.list("_tmp") == []
    write_stats(out_uri, {})
    problems, summary = validate(out_uri)
    assert problems == [] and summary["clips"] == 2 and summary["videos"] == 2


@pytest.mark.parametrize("damage", [b"", b"PAR1 truncated"])
def test_a_damaged_commit_is_quarantined_and_its_videos_redone(out_uri, damage):
    write_shards(out_uri, [(row(v, 1), [fake_clip(v, 0)]) for v in "abc"], samples_per_shard=1)
    store = Store(out_uri)
    store.write_bytes("videos", "000001.parquet", damage)  # a torn write of b's commit marker
    assert recover(out_uri) == ({"a", "c"}, 3)  # b is redone; resume does not raise
    assert store.list("shards") == ["000000.tar", "000002.tar"]
    quarantined = [n.removeprefix(store.root + "/") for n in _files(store, QUARANTINE_DIR)]
    assert sorted(p.split("/", 2)[2] for p in quarantined) == ["index/000001.parquet", "shards/000001.tar",
                                                               "videos/000001.parquet"]
    assert recover(out_uri) == ({"a", "c"}, 3)  # and stays resumable
    write_shards(out_uri, [(row("b", 1), [fake_clip("b", 0)])], samples_per_shard=1)
    assert recover(out_uri)[0] == {"a", "b", "c"}


def _files(store, folder):
    import pyarrow.fs as pafs

    sel = pafs.FileSelector(store.path(folder), recursive=True, allow_not_found=True)
    return sorted(i.path for i in store.fs.get_file_info(sel) if i.type == pafs.FileType.File)


def test_an_out_without_the_failure_column_still_resumes(out_uri):
    old = VIDEO_SCHEMA.remove(VIDEO_SCHEMA.get_field_index("failure"))
    store = Store(out_uri)
    store.makedirs("videos")
    tmp = store.scratch() / "old.parquet"
    pq.write_table(pa.Table.from_pylist([{**row("a", 0, "failed"), "reason": "worker: lost"},
                                         {**row("b", 0, "failed"), "reason": "probe: unreadable container"},
                                         row("c", 0, "filtered")], schema=old), tmp)
    store.publish(tmp, "videos", "000000.parquet")
    assert recover(out_uri)[0] == {"a", "b", "c"}
    assert recover(out_uri, retry_failed="transient")[0] == {"b", "c"}  # classified by its reason
    assert recover(out_uri, retry_failed="all")[0] == {"c"}


def test_one_job_per_out_stale_locks_are_taken_over(out_uri):
    store = Store(out_uri)
    first = OutLock(store, ttl_s=60, job_id="job-one").acquire()
    with pytest.raises(OutLocked, match="job-one"):  # the holder is named
        OutLock(store, ttl_s=60, job_id="job-two").acquire()
    first._stop.set()
    OutLock(store, ttl_s=60, job_id="forced").acquire(force=True).release()  # --force-unlock
    # a holder whose heartbeat stopped (its machine is gone) is taken over once the heartbeat is older than the ttl
    claim = {"job_id": "gone", "host": "another-host", "pid": 1, "heartbeat": 0}
    assert store.list(LOCK_DIR) == []
    store.write_bytes(LOCK_DIR, "gone.json", json.dumps(claim).encode())
    with pytest.raises(OutLocked, match="gone"):
        OutLock(store, ttl_s=1e12).acquire()
    lock = OutLock(store, ttl_s=60, job_id="job-three").acquire()
    assert store.list(LOCK_DIR) == ["job-three.json"]
    lock.release()
    assert store.list(LOCK_DIR) == []


def test_a_failed_upload_leaves_nothing_under_its_final_name(s3_env, tmp_path, monkeypatch):
    store = Store("s3://hdvg/failed-upload")
    real = store.fs

    class NoDelete:  # the delete after the failure fails too (the network is what broke the upload)
        def __getattr__(self, name):
            return getattr(real, name)

        def delete_file(self, path):
            raise OSError("connection reset")

    store.fs = NoDelete()

    def broken_copy(src, dst, length=0):
        dst.write(src.read(1000))
        raise OSError("connection reset")

    monkeypatch.setattr(shutil, "copyfileobj", broken_copy)
    big = tmp_path / "shard.tar"
    big.write_bytes(os.urandom(1 << 20))
    with pytest.raises(OSError):
        store.publish(big, "shards", "000000.tar")
    monkeypatch.undo()
    store.fs = real
    assert store.list("shards") == [] and big.exists()
    assert recover("s3://hdvg/failed-upload") == (set(), 0) and store.list("_tmp") == []  # the staged part


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
    scratch = tmp_path / "scratch"
    cmd = [sys.executable, "-m", "pipelines.curate", "--input", "s3://hdvg/in", "--output", out,
           "--samples-per-shard", "2", "--run-num-cpus", "2", "--captioner", "none", "--scratch-dir", str(scratch),
           "--detector", "adaptive"]  # about storage, not shots: PySceneDetect is the cheap detector
    first = subprocess.run([*cmd, "--limit", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    done_first = {r["video_id"] for r in Store(out).read_table("videos").to_pylist()}
    assert len(done_first) == 2
    second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    store = Store(out)
    stats = json.loads(store.fs.open_input_stream(store.path("stats.json")).read())
    assert stats["videos"] == 6 and stats["last_run"]["videos"] == 4  # the rerun did only the rest
    assert store.list(LOCK_DIR) == [] and store.list("_tmp") == []  # the lock is released, nothing staged is left
    assert scratch.is_dir()  # shards were staged under run.scratch_dir
    problems, summary = validate(out)
    assert problems == [] and summary["clips"] == stats["clips"] > 0
    local = store.copy_to_local(tmp_path / "copy")
    for path in local.rglob("*"):  # credentials never reach the outputs
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in first.stdout + first.stderr + second.stdout + second.stderr


def test_local_commits_fsync_each_file_before_its_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):  # the real fsync, recording what it flushed
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_shards(tmp_path, [(row("a", 1), [fake_clip("a", 0)])], samples_per_shard=1)
    renames = [i for i, e in enumerate(events) if e[0] == "rename"]
    assert [Path(events[i][2]).parent.name for i in renames] == ["shards", "index", "videos"]  # marker last
    for i in renames:
        src, dst = events[i][1], events[i][2]
        assert ("fsync", src) in events[:i]                              # the file's bytes, before its rename
        assert ("fsync", str(Path(dst).parent)) in events[i + 1:i + 2]   # its folder's entry, right after
