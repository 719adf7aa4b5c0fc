"""Readers of HD-VILA-100M and HD-VG-130M metadata (the real samples in ../shared/data), slicing of the input
between jobs, HD-VILA span-restricted curation, and untrusted ids that must not escape OUT or scratch."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hdvg.config import SourceConfig, build_config
from hdvg.contract import STATUS_FAILED, STATUS_OK
from hdvg.metadata import parse_timestamp, sniff
from hdvg.process import process_video
from hdvg.sources import FetchError, WorkItem, fetch, list_inputs

from tests.conftest import shared_file

HDVILA = "metadata/hd-vila-100m/DERIVED_hdvila_format_from_hdvg_first10.jsonl"
HDVG = "metadata/hd-vg-130m/filtrain__metafiles__hdvg_0_first_10@4c44e5b.json"


def test_hdvila_reader_on_the_sample():
    path = shared_file(HDVILA)
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    items = list(list_inputs(path))
    assert [i.video_id for i in items] == [line["video_id"] for line in lines] and len(items) == 10
    for item, line in zip(items, lines):
        assert item.problem is None and item.scenes == () and item.release is None
        assert item.source == f"https://www.youtube.com/watch?v={item.video_id}"
        want = sorted((parse_timestamp(c["span"][0]), parse_timestamp(c["span"][1]),
                       int(c["clip_id"].split(".")[-2])) for c in line["clip"])
        assert [(c.start, c.end, c.index) for c in item.clips] == want  # HD-VILA order is not time order
    assert all(i.clips == () for i in list_inputs(path, SourceConfig(hdvila_spans=False)))


def test_input_kinds_are_recognised_by_content_not_name(tmp_path):
    hdvg, hdvila = tmp_path / "meta.txt", tmp_path / "part.json"
    hdvg.write_bytes(shared_file(HDVG).read_bytes())
    hdvila.write_bytes(shared_file(HDVILA).read_bytes())
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(json.dumps({"path": "a.mp4"}) + "\n")
    assert (sniff(hdvg), sniff(hdvila), sniff(manifest)) == ("hdvg", "hdvila", None)
    one_line = tmp_path / "one.json"  # an HD-VG object dumped without indent
    one_line.write_text(json.dumps(json.loads(shared_file(HDVG).read_text())))
    assert sniff(one_line) == "hdvg"
    assert [i.video_id for i in list_inputs(hdvg)] == list(json.loads(shared_file(HDVG).read_text()))


def test_parts_split_the_input_between_jobs():
    path = shared_file(HDVILA)
    every = [i.video_id for i in list_inputs(path)]
    parts = [[i.video_id for i in list_inputs(path, SourceConfig(part=p, parts=3))] for p in range(3)]
    assert sorted(sum(parts, [])) == sorted(every) and all(parts)
    assert parts[1] == every[1::3]
    with pytest.raises(ValueError, match="source.parts"):
        build_config(values={"input": "-", "output": "-", "source.part": 3, "source.parts": 3})


HOSTILE_IDS = ["../../x", "-rf", "a/b", "", "x" * 11 + "/", "AAAAAAAAAA."]


def test_hostile_ids_become_failed_rows_and_touch_no_file(tmp_path):
    lines = [{"video_id": v, "url": "https://www.youtube.com/watch?v=x", "clip": []} for v in HOSTILE_IDS]
    for clip_id, span in (("../../x.0.mp4", ["0:00:00.0", "0:00:01.0"]), ("44ot5_2UaaU.-1.mp4", ["0:00:00.0", "1"])):
        lines.append({"video_id": "44ot5_2UaaU", "clip": [{"clip_id": clip_id, "span": span}]})
    hdvila = tmp_path / "hdvila_part0.jsonl"
    hdvila.write_text("".join(json.dumps(x) + "\n" for x in lines))
    hdvg = tmp_path / "hdvg_0.json"
    good = json.loads(shared_file(HDVG).read_text())["44ot5_2UaaU"]
    bad_scene = json.loads(json.dumps(good))
    next(iter(bad_scene["clip"].values()))["scene_split"][0]["clip_id"] = "../../evil"
    hdvg.write_text(json.dumps({"a/b": good, "-rf": good, "44ot5_2UaaU": bad_scene}, indent=1))
    scratch, out = tmp_path / "scratch", tmp_path / "out"
    scratch.mkdir()
    cfg = build_config(values={"input": str(hdvila), "output": str(out),
                               "source.mirror": str(tmp_path / "mirror" / "{video_id}.mp4")})
    items = [*list_inputs(hdvila), *list_inputs(hdvg)]
    assert len(items) == len(lines) + 3 and all(i.problem for i in items)
    for item in items:
        row = process_video(item, cfg, scratch).row
        assert row["status"] == STATUS_FAILED and row["reason"].startswith("input: ")
    assert "invalid YouTube id '../../x'" in process_video(items[0], cfg, scratch).row["reason"]
    assert "bad HD-VILA clip id '../../x.0.mp4'" in items[len(HOSTILE_IDS)].problem
    assert "bad scene clip_id '../../evil'" in items[-1].problem
    assert not any(scratch.iterdir()) and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hdvg_0.json", "hdvila_part0.jsonl", "scratch"]
    # a manifest row may name a YouTube URL with any video_id: it is checked before a path is built
    with pytest.raises(FetchError, match="invalid_input"):
        fetch(WorkItem("../../x", "https://www.youtube.com/watch?v=../../x"), scratch, cfg.source)


def _three_colour_video(path: Path) -> Path:
    """2 s red, 2 s green, 2 s blue at 25 fps: cuts at frames 50 and 100."""
    inputs = []
    for colour in ("red", "green", "blue"):
        inputs += ["-f", "lavfi", "-i", f"color=c={colour}:size=320x180:rate=25:duration=2"]
    subprocess.run(["ffmpeg", "-v", "error", *inputs, "-filter_complex", "concat=n=3:v=1:a=0",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def test_hdvila_spans_restrict_scenes_and_name_clips_like_hdvg(tmp_path):
    """A real id that begins with '-' (from the HD-VG sample), held by a mirror as '-bmS0RumV9U.mp4'."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _three_colour_video(mirror / "-bmS0RumV9U.mp4")
    hdvila = tmp_path / "hdvila_part3.jsonl"
    clips = [{"clip_id": "-bmS0RumV9U.7.mp4", "span": ["00:00:04.400", "00:00:05.800"]},
             {"clip_id": "-bmS0RumV9U.3.mp4", "span": ["00:00:01.000", "00:00:03.000"]}]
    hdvila.write_text(json.dumps({"video_id": "-bmS0RumV9U", "url": "https://www.youtube.com/watch?v=-bmS0RumV9U",
                                  "clip": clips}))
    cfg = build_config(values={"input": str(hdvila), "output": str(tmp_path / "out"), "filter.min_height": 100,
                               "encode.preset": "ultrafast", "source.mirror": str(mirror / "{video_id}.mp4")})
    (item,) = list_inputs(cfg.input, cfg.source)
    result = process_video(item, cfg, tmp_path)
    assert result.row["status"] == STATUS_OK, result.row["reason"]
    got = [(c.meta["clip_id"], c.meta["start_frame"], c.meta["end_frame"]) for c in result.clips]
    assert got == [("-bmS0RumV9U.3_0", 25, 50), ("-bmS0RumV9U.3_1", 50, 75), ("-bmS0RumV9U.7_0", 110, 145)]
    assert all(c.meta["captioner"] is None for c in result.clips)  # new clips: captioned by the pipeline
    whole = process_video(WorkItem(item.video_id, item.source), cfg, tmp_path)  # no spans: whole video
    assert [c.meta["clip_id"] for c in whole.clips] == [f"-bmS0RumV9U.{k}" for k in range(3)]


def test_mirror_resolves_ids_and_a_miss_goes_to_youtube_only_when_asked(tmp_path):
    item = WorkItem("44ot5_2UaaU", "https://www.youtube.com/watch?v=44ot5_2UaaU")
    cfg = SourceConfig(mirror=str(tmp_path / "{video_id}.mp4"), retries=0, rate_limit=0)
    with pytest.raises(FetchError, match="not_found: mirror: no such file"):
        fetch(item, tmp_path, cfg)
    # with the fallback, yt-dlp's YouTube extractor is tried; a dead local proxy keeps it offline
    fallback = cfg.model_copy(update={"mirror_fallback": True, "proxy": "http://127.0.0.1:9"})
    with pytest.raises(FetchError, match=r"connection: ERROR: \[youtube\] 44ot5_2UaaU: .*proxy"):
        fetch(item, tmp_path, fallback)
    (tmp_path / "44ot5_2UaaU.mp4").write_bytes(b"held")
    assert fetch(item, tmp_path, cfg).path == tmp_path / "44ot5_2UaaU.mp4"
    with pytest.raises(ValueError, match="source.mirror"):
        build_config(values={"input": "-", "output": "-", "source.mirror": "/data/{id}.mp4"})
