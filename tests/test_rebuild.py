"""Rebuild mode on the real HD-VG-130M sample: every released scene becomes its clip, with its id and
caption, cut at the right source frames. The "source" video is built here so that every frame shows its
own number (12 bits as black/white cells), which the test reads back from each cut clip."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from hdvg.config import build_config
from hdvg.contract import CLIP_FIELDS, MEASURE_FIELDS, STATUS_FAILED, STATUS_OK
from hdvg.metadata import RELEASE_HDVG, HdvilaClip, ReleasedScene, map_scene, parse_timestamp
from hdvg.process import process_video
from hdvg.sources import list_inputs

from tests.conftest import shared_file

HDVG_BATCH = "metadata/hd-vg-130m/filtrain__metafiles__hdvg_batch_0-1@37fb225.json"
HDVG_SAMPLES = ["metadata/hd-vg-130m/filtrain__metafiles__hdvg_0_first_10@4c44e5b.json",
                "metadata/hd-vg-130m/filtrain__metafiles__hdvg_0_first_10@5deb6d4.json", HDVG_BATCH]
W, H, COLS, ROWS = 128, 72, 4, 3  # 12 cells of 32x24: frame numbers up to 4095


def numbered_video(path: Path, num_frames: int, rate: str) -> Path:
    """An H.264 MP4 whose frame i shows i in binary, one black/white cell per bit."""
    cw, ch = W // COLS, H // ROWS
    frames = np.zeros((num_frames, H, W), np.uint8)
    for bit in range(COLS * ROWS):
        on = ((np.arange(num_frames) >> bit) & 1).astype(bool)
        r, c = divmod(bit, COLS)
        frames[on, r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = 255
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{W}x{H}",
                    "-r", rate, "-i", "-", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12",
                    "-pix_fmt", "yuv420p", str(path)], input=frames.tobytes(), check=True)
    return path


def frame_numbers(mp4: bytes, tmp: Path) -> list[int]:
    clip = tmp / "clip.mp4"
    clip.write_bytes(mp4)
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, H, W)
    cells = frames.reshape(-1, ROWS, H // ROWS, COLS, W // COLS).mean(axis=(2, 4)) > 128  # (n, ROWS, COLS)
    return [int(sum(1 << b for b in range(COLS * ROWS) if f.reshape(-1)[b])) for f in cells]


def test_every_released_scene_of_the_samples_is_one_item_scene():
    for name in HDVG_SAMPLES:
        released = json.loads(shared_file(name).read_text())
        items = list(list_inputs(shared_file(name)))
        assert [i.video_id for i in items] == list(released)
        for item in items:
            assert item.problem is None and item.release == RELEASE_HDVG
            assert item.source == f"https://www.youtube.com/watch?v={item.video_id}"
            want = {s["clip_id"]: s["caption"] for c in released[item.video_id]["clip"].values()
                    for s in c["scene_split"]}
            got = {s.clip_id: s.caption for s in item.scenes}
            assert got == want  # duplicates (4ZiwuL0K7KU.13_0 is listed twice) kept once
            assert len(item.scenes) == len(want)
            starts = [(s.span.start, s.first) for s in item.scenes]
            assert starts == sorted(starts)  # unsorted scene_split comes out in time order


def test_scene_frames_map_through_source_timestamps():
    clip = HdvilaClip(index=4, start=1.0, end=2.0)
    same_rate = np.arange(100) / 30.0
    assert (map_scene(ReleasedScene("v.4_0", clip, 30.0, 0, 10, None), same_rate).start,
            map_scene(ReleasedScene("v.4_0", clip, 30.0, 0, 10, None), same_rate).end) == (30, 40)
    double_rate = np.arange(200) / 60.0  # a mirror copy at 60 fps of a 30 fps HD-VILA clip
    m = map_scene(ReleasedScene("v.4_1", clip, 30.0, 10, -1, None), double_rate)
    assert (m.start, m.end, m.overshoot, m.clamped) == (80, 120, 0, False)
    m = map_scene(ReleasedScene("v.4_2", clip, 30.0, 20, 45, None), same_rate)  # 15 frames past the span
    assert (m.start, m.end, m.overshoot, m.clamped) == (50, 75, 15, False)
    m = map_scene(ReleasedScene("v.4_3", clip, 30.0, 20, 90, None), same_rate)  # past the source's end
    assert (m.start, m.end, m.overshoot, m.clamped) == (50, 100, 60, True)


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """The 2-video HD-VG batch rebuilt from a mirror that holds only 1NRXqc74kQM (built here, 123 s:
    shorter than its last released scene, which must be cut at the source's end)."""
    tmp = tmp_path_factory.mktemp("rebuild")
    mirror = tmp / "mirror"
    mirror.mkdir()
    numbered_video(mirror / "1NRXqc74kQM.mp4", num_frames=3686, rate="30000/1001")
    cfg = build_config(values={"input": str(shared_file(HDVG_BATCH)), "output": str(tmp / "out"),
                               "source.mirror": str(mirror / "{video_id}.mp4"),
                               "encode.preset": "ultrafast"})
    items = {i.video_id: i for i in list_inputs(cfg.input, cfg.source)}
    return tmp, items, {vid: process_video(item, cfg, tmp) for vid, item in items.items()}


def test_rebuild_cuts_each_released_scene_at_its_source_frames(rebuilt):
    tmp, items, results = rebuilt
    released = json.loads(shared_file(HDVG_BATCH).read_text())["1NRXqc74kQM"]["clip"]
    result = results["1NRXqc74kQM"]
    assert result.row["status"] == STATUS_OK, result.row["reason"]
    fps, n = 30000 / 1001, 3686
    expected = {}
    for key, clip in released.items():
        start, end = (parse_timestamp(t) for t in clip["span"])
        first = math.ceil((start - 0.001) * fps)  # first source frame at/after the span start
        span_end = math.ceil((end - 0.001) * fps)
        for s in clip["scene_split"]:
            a, b = s["scene_cut"]
            expected[s["clip_id"]] = (first + a, min(n, span_end if b == -1 else first + b), s["caption"])
    metas = {c.meta["clip_id"]: c for c in result.clips}
    assert set(metas) == set(expected) and len(result.clips) == 52
    for clip_id, (a, b, caption) in expected.items():
        meta = metas[clip_id].meta
        assert list(meta) == [*CLIP_FIELDS, *MEASURE_FIELDS]
        assert (meta["start_frame"], meta["end_frame"]) == (a, b), clip_id
        assert meta["caption"] == caption and meta["captioner"] == RELEASE_HDVG
        assert meta["start_time"] == pytest.approx(a / fps, abs=1e-3)
    # the frames themselves, on a few clips: first scene, an overlapping pair, the clamped last one
    for clip_id in ("1NRXqc74kQM.0_0", "1NRXqc74kQM.1_7", "1NRXqc74kQM.2_0", "1NRXqc74kQM.10_1"):
        a, b, _ = expected[clip_id]
        assert frame_numbers(metas[clip_id].mp4, tmp) == list(range(a, b)), clip_id
    note = result.row["note"]
    assert "end past their HD-VILA span" in note and "1NRXqc74kQM.10_1" in note  # overshoot, clamp recorded


def test_rebuild_records_a_video_missing_from_the_mirror(rebuilt):
    _, _, results = rebuilt
    row = results["44ot5_2UaaU"].row
    assert row["status"] == STATUS_FAILED and not results["44ot5_2UaaU"].clips
    assert row["reason"].startswith("download: not_found: mirror: no such file: ")
    assert row["reason"].endswith("44ot5_2UaaU.mp4")


def _first_hdvila_clip(tmp_path: Path) -> tuple[Path, Path]:
    """An HD-VG json with the real record of 1NRXqc74kQM cut down to its first HD-VILA clip (5 scenes), and
    a mirror folder holding a numbered source for it."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    numbered_video(mirror / "1NRXqc74kQM.mp4", num_frames=260, rate="30000/1001")
    record = json.loads(shared_file(HDVG_BATCH).read_text())["1NRXqc74kQM"]
    record["clip"] = {"1NRXqc74kQM.0.mp4": record["clip"]["1NRXqc74kQM.0.mp4"]}
    hdvg = tmp_path / "hdvg_one.json"
    hdvg.write_text(json.dumps({"1NRXqc74kQM": record}, indent=2))
    return hdvg, mirror


def test_recaption_leaves_released_captions_out(tmp_path):
    hdvg, mirror = _first_hdvila_clip(tmp_path)
    cfg = build_config(values={"input": str(hdvg), "output": str(tmp_path / "out"), "encode.preset": "ultrafast",
                               "source.mirror": str(mirror / "{video_id}.mp4"), "source.recaption": True})
    (item,) = list_inputs(cfg.input, cfg.source)
    result = process_video(item, cfg, tmp_path)
    assert result.row["status"] == STATUS_OK, result.row["reason"]
    assert [c.meta["clip_id"] for c in result.clips] == [f"1NRXqc74kQM.0_{j}" for j in range(5)]
    assert all(c.meta["caption"] is None and c.meta["captioner"] is None for c in result.clips)


def test_rebuilt_shards_carry_released_ids_and_captions(tmp_path, ray_local):
    from hdvg.pipeline import run_curation
    from hdvg.validate import validate

    hdvg, mirror = _first_hdvila_clip(tmp_path)
    out = tmp_path / "out"
    run_curation(build_config(values={"input": str(hdvg), "output": str(out), "encode.preset": "ultrafast",
                                      "source.mirror": str(mirror / "{video_id}.mp4")}))
    assert validate(out)[0] == []
    index = pq.read_table(out / "index").to_pylist()
    released = json.loads(hdvg.read_text())["1NRXqc74kQM"]["clip"]["1NRXqc74kQM.0.mp4"]["scene_split"]
    assert {r["clip_id"]: r["caption"] for r in index} == {s["clip_id"]: s["caption"] for s in released}
    assert {r["captioner"] for r in index} == {RELEASE_HDVG}
    (row,) = pq.read_table(out / "videos").to_pylist()
    assert row["status"] == STATUS_OK and row["num_clips"] == 5


@pytest.mark.slow
def test_a_rebuild_captions_the_released_scenes_without_a_caption(tmp_path, ray_local):
    import io

    import webdataset as wds
    from PIL import Image

    from hdvg.blip2_random import save_random_blip2
    from hdvg.captioning import build_captioner, build_preprocessor, caption, resolve_captioner
    from hdvg.config import CaptionConfig
    from hdvg.pipeline import run_curation

    hdvg, mirror = _first_hdvila_clip(tmp_path)
    record = json.loads(hdvg.read_text())
    scenes = record["1NRXqc74kQM"]["clip"]["1NRXqc74kQM.0.mp4"]["scene_split"]
    scenes[2]["caption"] = None  # a released scene without a caption
    hdvg.write_text(json.dumps(record))
    blip2 = save_random_blip2(tmp_path / "tiny-blip2", seed=0)
    out = tmp_path / "out"
    run_curation(build_config(values={"input": str(hdvg), "output": str(out), "encode.preset": "ultrafast",
                                      "source.mirror": str(mirror / "{video_id}.mp4"), "captioner.model": str(blip2),
                                      "captioner.num_cpus": 0.5}))
    index = {r["clip_id"]: r for r in pq.read_table(out / "index").to_pylist()}
    (sample,) = [s for s in wds.WebDataset(str(out / "shards" / "000000.tar"), shardshuffle=False)
                 if json.loads(s["json"])["clip_id"] == scenes[2]["clip_id"]]
    assert Image.open(io.BytesIO(sample["jpg"])).size[0] > 0
    spec = resolve_captioner(CaptionConfig(model=str(blip2)))
    (direct,) = caption(build_captioner(spec), build_preprocessor(spec), [sample["jpg"]], 1)
    for scene in scenes:
        row = index[scene["clip_id"]]
        if scene["caption"] is None:
            assert (row["caption"], row["captioner"]) == (direct, spec.name) and direct
        else:
            assert (row["caption"], row["captioner"]) == (scene["caption"], RELEASE_HDVG)
