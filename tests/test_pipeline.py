"""The whole job on a real local Ray cluster: sample, edge cases, kill -9 and resume. These are about the job,
not shots: they pin PySceneDetect, the cheap detector (the default, TransNetV2, runs end to end in test_shots,
the image check of test_packaging and `make shards`)."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hdvg.config import build_config
from hdvg.pipeline import run_curation
from hdvg.validate import validate
from tests.conftest import ROOT, SHARED, shared_file
from tests.test_download import VideoServer

pytestmark = pytest.mark.slow
CHECKER = SHARED.parent / "tools" / "check_output.py"


def clips_of(out: Path) -> dict:
    index = pq.read_table(out / "index").to_pylist() if list((out / "index").glob("*.parquet")) else []
    return {r["clip_id"]: (r["source"].rsplit("/", 1)[-1], r["start_frame"], r["end_frame"]) for r in index}


@pytest.fixture(scope="module")
def sample_out(tmp_path_factory, sample_videos, ray_local):
    out = tmp_path_factory.mktemp("sample_out")
    cfg = build_config(values={"input": str(sample_videos), "output": str(out), "shards.samples_per_shard": 4,
                               "captioner.name": "none", "detect.detector": "adaptive"})
    stats = run_curation(cfg)
    return out, stats


def test_sample_end_to_end(sample_out, sample_videos):
    out, stats = sample_out
    problems, summary = validate(out)
    assert problems == []
    truth = json.loads((sample_videos / "truth.json").read_text())
    ok = [n for n, t in truth.items() if t["expect"] == "ok"]
    # truth.json is an input file too: every file of the folder has its row
    assert stats["videos_by_status"] == {"ok": len(ok), "filtered": 2, "failed": 1}
    clips = clips_of(out)
    for name in ok:  # every true cut starts a clip, and no clip spans a cut
        starts = {s for src, s, _ in clips.values() if src == name}
        assert set(truth[name]["cuts"]) <= starts
        for src, s, e in clips.values():
            if src == name:
                assert not any(s < c < e for c in truth[name]["cuts"])
    assert summary["shards"] >= 2 and stats["clips"] == len(clips)  # 4 samples per shard, whole videos
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in pq.read_table(out / "videos").to_pylist()}
    assert rows["phone_clip_360p.mp4"]["reason"].startswith("below 720p")
    assert rows["broken_upload.mp4"]["reason"].startswith("probe: unreadable container")
    assert rows["truth.json"]["reason"] == "not a video file (.json)"


def test_sample_passes_the_independent_contract_check(sample_out, sample_videos):
    if not CHECKER.exists():
        pytest.skip("needs ../shared/tools/check_output.py, absent here")
    out, _ = sample_out
    proc = subprocess.run([sys.executable, str(CHECKER), str(out), "--videos", str(sample_videos), "--truth",
                           str(sample_videos / "truth.json"), "--check-frames", "20"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert "cut_recall=1.00" in proc.stdout


EDGE_CASES = {  # file -> (expected status, words the reason must contain)
    "repo_videos/moviepy/doc_medias__result.webm": ("failed", "empty file"),
    "pypi_videos/pymediainfo-7.0.1/sample.mkv": ("failed", "unreadable container"),
    "pypi_videos/pymediainfo-7.0.1/mpeg4.mp4": ("failed", "no streams"),
    "repo_videos/decord/corrupted.mp4": ("failed", "undecodable"),
    "pypi_videos/pymediainfo-7.0.1/mp4-with-audio.mp4": ("failed", "no video stream"),
    "pypi_videos/pymediainfo-7.0.1/issue55.flv": ("failed", "no video stream"),
    "pypi_videos/pymediainfo-7.0.1/vbr_requires_parsespeed_1.mp4": ("failed", "no video stream"),
    "repo_videos/moviepy/-video-with-dash-.mp4": ("filtered", "below 720p"),
    "repo_videos/moviepy/transparent.webm": ("filtered", "below 720p"),
    "repo_videos/decord/unordered.mov": ("filtered", "below 720p"),
    "repo_videos/imageio_test_images/test.webm": ("filtered", "below 720p"),
    "pyscenedetect_resources/issue-195-aspect-ratio.mp4": ("filtered", "below 720p"),
    "pyscenedetect_resources/goldeneye-vfr-drop3.mp4": ("filtered", "below 720p"),
    "pyscenedetect_resources/issue-134-rotate.mp4": ("filtered", "below 720p"),
    "pypi_videos/pymediainfo-7.0.1/sample.mp4": ("filtered", "too short"),
}


def test_edge_cases_are_rows_with_reasons_while_good_videos_produce_clips(tmp_path, ray_local):
    for rel in EDGE_CASES:
        shared_file(rel)
    manifest = tmp_path / "inputs.jsonl"
    good = ["repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4", "repo_videos/moviepy/no_duration.webm"]
    lines = [{"path": str(SHARED / rel), "video_id": Path(rel).name} for rel in [*EDGE_CASES, *good]]
    lines.append({"path": str(tmp_path / "missing.mp4"), "video_id": "missing"})
    lines.append({"path": str(SHARED / good[0]), "video_id": Path(good[0]).name})  # duplicate id
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    stats = run_curation(build_config(values={"input": str(manifest), "output": str(out), "captioner.name": "none"}))
    rows = {}
    for r in pq.read_table(out / "videos").to_pylist():
        rows.setdefault(r["video_id"], []).append(r)
    for rel, (status, words) in EDGE_CASES.items():
        (r,) = rows[Path(rel).name]
        assert r["status"] == status and words in r["reason"], (rel, r)
    twice = sorted(rows[Path(good[0]).name], key=lambda r: r["status"])
    assert [r["status"] for r in twice] == ["failed", "ok"]
    assert twice[0]["reason"].startswith("duplicate: video_id")
    assert rows["missing"][0]["reason"].startswith("fetch: no such file")
    assert rows["no_duration.webm"][0]["status"] == "ok"
    assert stats["clips"] == len(clips_of(out)) >= 2
    assert validate(out)[0] == []


def curate_cmd(inp, out, *extra):
    return [sys.executable, "-m", "pipelines.curate", "--input", str(inp), "--output", str(out),
            "--samples-per-shard", "1", "--run-num-cpus", "2", "--captioner", "none", "--detector", "adaptive", *extra]


def test_kill_9_then_rerun_gives_the_clean_result(tmp_path, sample_videos, sample_out):
    """The sample as a manifest, one video of it served by an HTTP server on 127.0.0.1 that holds it back until
    the test lets it go: the job cannot end before the kill, however fast the machine."""
    held = sample_videos / "city_walk.mp4"
    server = VideoServer(held.read_bytes())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    manifest = tmp_path / "sample.txt"
    manifest.write_text("".join(f"{server.base}/hold/{p.name}\n" if p == held else f"{p}\n"
                                for p in sorted(sample_videos.iterdir())))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(curate_cmd(manifest, out), cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((out / "videos").glob("*.parquet"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the job ended while one of its videos was held back"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    server.release.set()
    done_before = {r["video_id"] for r in pq.read_table(out / "videos").to_pylist()}
    assert 2 <= len(done_before) < 7 and "city_walk" not in done_before and not (out / "stats.json").exists()

    rerun = subprocess.run(curate_cmd(manifest, out), cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    server.shutdown()
    server.server_close()
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    clean, _ = sample_out
    assert clips_of(out) == clips_of(clean)  # same clips, same frames, nothing twice
    rows = pq.read_table(out / "videos").to_pylist()
    assert len(rows) == len({r["video_id"] for r in rows}) == 7
    assert validate(out)[0] == []
    stats = json.loads((out / "stats.json").read_text())
    assert stats["videos"] == 7 and stats["last_run"]["videos"] == 7 - len(done_before)
