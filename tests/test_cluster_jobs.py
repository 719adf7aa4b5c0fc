"""The job's bookkeeping on a real local Ray cluster, one scenario a test: released captions survive a
rebuild, every input file gets exactly one row, a stalled source meets its deadline, one job per OUT."""
import http.server
import json
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hdvg.config import build_config
from hdvg.lock import OutLock, OutLocked
from hdvg.pipeline import merge_captions, run_curation
from hdvg.storage import Store
from hdvg.validate import validate
from tests.test_rebuild import _first_hdvila_clip
from tests.test_sources import _three_colour_video

pytestmark = pytest.mark.slow
# PySceneDetect: these jobs are about scheduling, not shots, and TransNetV2 on CPU would outlast their deadlines
SMALL = {"captioner.name": "none", "filter.min_height": 100, "encode.preset": "ultrafast",
         "detect.detector": "adaptive"}


def rows_of(out: Path) -> list[dict]:
    return [{**r, "part": p.stem} for p in sorted((out / "videos").glob("*.parquet")) for r in pq.read_table(p).to_pylist()]


def test_merge_fills_only_the_clips_that_need_a_caption():
    metas = [{"caption": "released", "captioner": "HD-VG-130M"}, {"caption": None, "captioner": None},
             {"caption": "also released", "captioner": "HD-VG-130M"}, {"caption": None, "captioner": None}]
    merge_captions(metas, [1, 3], (["one", "three"], "blip2:m@r"), "none")
    assert [(m["caption"], m["captioner"]) for m in metas] == [
        ("released", "HD-VG-130M"), ("one", "blip2:m@r"), ("also released", "HD-VG-130M"), ("three", "blip2:m@r")]


def test_a_rebuild_keeps_released_captions_when_a_scene_lacks_one(tmp_path, ray_local):
    hdvg, mirror = _first_hdvila_clip(tmp_path)
    record = json.loads(hdvg.read_text())
    scenes = record["1NRXqc74kQM"]["clip"]["1NRXqc74kQM.0.mp4"]["scene_split"]
    released = {s["clip_id"]: s["caption"] for s in scenes}
    del scenes[2]["caption"]  # one scene of the release has no caption
    hdvg.write_text(json.dumps(record))
    out = tmp_path / "out"
    run_curation(build_config(values={"input": str(hdvg), "output": str(out), "encode.preset": "ultrafast",
                                      "source.mirror": str(mirror / "{video_id}.mp4")}))
    index = {r["clip_id"]: r for r in pq.read_table(out / "index").to_pylist()}
    lacking = scenes[2]["clip_id"]
    # the default captioner's weights are not here: the scene stays uncaptioned and says why
    assert len(index) == 5 and index[lacking]["caption"] is None
    assert index[lacking]["captioner"].startswith("none:weights-missing:")
    for clip_id, caption in released.items():
        if clip_id != lacking:
            assert (index[clip_id]["caption"], index[clip_id]["captioner"]) == (caption, "HD-VG-130M")


def test_every_input_file_gets_exactly_one_row(tmp_path, ray_local):
    inp = tmp_path / "in"
    for folder in ("a", "b"):
        (inp / folder).mkdir(parents=True)
        _three_colour_video(inp / folder / "0001.mp4")  # the same name in two folders
    (inp / "b" / "voice.m4a").write_bytes(b"\0\0\0\x20ftypM4A ")
    out = tmp_path / "out"
    stats = run_curation(build_config(values={"input": str(inp), "output": str(out), **SMALL}))
    rows = {r["video_id"]: r for r in rows_of(out)}
    assert sorted(rows) == ["a/0001", "b/0001", "b/voice.m4a"] and len(rows_of(out)) == 3
    assert rows["a/0001"]["status"] == rows["b/0001"]["status"] == "ok"
    assert (rows["b/voice.m4a"]["status"], rows["b/voice.m4a"]["reason"]) == ("filtered", "not a video file (.m4a)")
    clips = pq.read_table(out / "index").to_pylist()
    assert sorted({c["video_id"] for c in clips}) == ["a/0001", "b/0001"] and stats["clips"] == len(clips) == 6
    assert validate(out)[0] == []

    # a duplicate id's row is committed only after the original's, so no crash can leave the original
    # done by its duplicate's row alone
    manifest = tmp_path / "dup.jsonl"
    video = str(inp / "a" / "0001.mp4")
    manifest.write_text("".join(json.dumps({"path": video, "video_id": "v"}) + "\n" for _ in range(3)))
    out2 = tmp_path / "out2"
    stats = run_curation(build_config(values={"input": str(manifest), "output": str(out2), **SMALL,
                                              "shards.samples_per_shard": 1}))
    got = rows_of(out2)
    (ok,) = [r for r in got if r["status"] == "ok"]
    dups = [r for r in got if r["status"] == "failed"]
    assert len(dups) == 2 and all(r["reason"].startswith("duplicate: video_id 'v'") for r in dups)
    assert all(r["part"] > ok["part"] for r in dups)
    assert stats["videos_by_status"] == {"ok": 1} and stats["duplicate_inputs"] == 2


class _Stall(http.server.BaseHTTPRequestHandler):
    """Sends the headers of a large MP4 and a few bytes, then nothing: a download that never ends."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(100 << 20))
        self.end_headers()
        self.wfile.write(b"\0\0\0\x18ftypmp42")
        self.wfile.flush()
        self.server.release.wait(120)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_a_stalled_source_is_cancelled_at_its_deadline(tmp_path, ray_local):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stall)
    server.daemon_threads, server.release = True, threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inp = tmp_path / "in"
    inp.mkdir()
    good = _three_colour_video(inp / "good.mp4")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"http://127.0.0.1:{server.server_port}/stall.mp4\n{good}\n")
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    scratch.mkdir()
    started = time.monotonic()
    try:
        stats = run_curation(build_config(values={
            "input": str(manifest), "output": str(out), **SMALL, "run.scratch_dir": str(scratch),
            # the socket never times out: only the job's deadline can end this video
            "encode.timeout_s": 4, "source.download_timeout_s": 1, "source.socket_timeout_s": 600,
            "source.retries": 0, "source.rate_limit": 0}))
    finally:
        server.release.set()
        server.shutdown()
    assert time.monotonic() - started < 60
    rows = {r["video_id"]: r for r in rows_of(out)}
    assert rows["good"]["status"] == "ok"
    stalled = rows["stall"]
    assert stalled["status"] == "failed" and stalled["failure"] == "transient"
    assert stalled["reason"].startswith("timeout: no result within 5 s")
    assert stats["videos_by_status"] == {"ok": 1, "failed": 1}
    deadline = time.monotonic() + 30
    while any(scratch.glob("hdvg-*")) and time.monotonic() < deadline:  # the cancelled task cleans up
        time.sleep(0.5)
    assert not any(scratch.glob("hdvg-*"))


def test_a_second_job_on_the_same_out_stops_naming_the_holder(tmp_path, ray_local):
    inp = tmp_path / "in"
    inp.mkdir()
    _three_colour_video(inp / "v.mp4")
    out = tmp_path / "out"
    store = Store(out)
    holder = OutLock(store, ttl_s=60, job_id="first-job").acquire()
    (store.scratch() / "first-job-shard.tar").write_bytes(b"being written")
    try:
        with pytest.raises(OutLocked, match="first-job"):
            run_curation(build_config(values={"input": str(inp), "output": str(out), **SMALL}))
        assert (store.scratch() / "first-job-shard.tar").exists()  # the holder's staging is untouched
        assert not (out / "videos").exists()
    finally:
        holder.release()
    stats = run_curation(build_config(values={"input": str(inp), "output": str(out), **SMALL}))
    assert stats["videos_by_status"] == {"ok": 1}
