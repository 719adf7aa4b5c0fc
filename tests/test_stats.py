"""`hdvg stats`: the counts it prints and plots equal what the index and videos table of a real OUT hold.

The OUT is made the way the job makes it, without Ray: the sample videos go through `process_video` (real
probe, filter, scene detection and ffmpeg cutting) and `write_shards`. A second OUT gives the same clips
the source metadata a YouTube source carries (captions of the released HD-VG-130M, categories of
HD-VILA-100M videos from Shot2Story's table), so category and caption-length plots have something to count.
"""
import ast
import csv
import json
import math
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hdvg.cli import main
from hdvg.config import build_config
from hdvg.contract import INDEX_DIR
from hdvg.process import process_video
from hdvg.shards import write_shards
from hdvg.sources import list_inputs
from hdvg.stats import FIGURE_DPI, FIGURE_SIZE, FIGURES, UNKNOWN_CATEGORY, dataset_stats, write_figures
from hdvg.tally import reason_group
from tests.conftest import shared_file

PNG_SIZE = (int(FIGURE_SIZE[0] * FIGURE_DPI), int(FIGURE_SIZE[1] * FIGURE_DPI))


@pytest.fixture(scope="module")
def processed(sample_videos):
    """(row, clips) of every sample video, cut by the real stages."""
    # the fastest x264 preset at a small size: stats read only spans and metadata, never pixels
    # and PySceneDetect, the cheap detector (shots are tested elsewhere)
    cfg = build_config(values={"input": str(sample_videos), "output": "unused", "encode.preset": "ultrafast",
                               "encode.max_short_side": 180, "detect.detector": "adaptive"})
    results = [process_video(item, cfg) for item in list_inputs(sample_videos)]
    return [(r.row, [(c.meta, c.jpg, c.mp4) for c in r.clips]) for r in results]


def write_out(path, videos):
    write_shards(path, videos, samples_per_shard=5)  # several shards: stats must add parts up
    return path


def read_index(out):
    return pa.concat_tables(pq.read_table(p) for p in sorted((out / INDEX_DIR).glob("*.parquet"))).to_pylist()


def source_metadata(n):
    """n real (caption, categories) pairs: HD-VG-130M captions and HD-VILA-100M video categories."""
    hdvg = shared_file("metadata/hd-vg-130m/filtrain__hdvg_results__cut_part0@488afa4.jsonl")
    shot2story = shared_file("metadata/hd-vila-100m/shot2story_20k_meta_first300.csv")
    captions = [json.loads(line)["caption"] for line in hdvg.read_text().splitlines()[:n]]
    with shot2story.open(newline="") as f:
        categories = [ast.literal_eval(row["categories"]) for row, _ in zip(csv.DictReader(f), range(n))]
    return list(zip(captions, categories))


def check_pngs(dest):
    for name in FIGURES.values():
        with Image.open(dest / name) as im:
            assert im.format == "PNG" and im.size == PNG_SIZE, name


def test_stats_of_uncaptioned_local_sample(processed, tmp_path):
    out = write_out(tmp_path / "out", processed)
    index = read_index(out)
    stats = dataset_stats(out)
    drawn = write_figures(stats, tmp_path / "figures")
    check_pngs(tmp_path / "figures")

    # 4 of the 6 sample videos are kept (truth.json); each has clips
    assert stats.clips == len(index) == sum(len(clips) for _, clips in processed) > 0
    # the sample folder's truth.json is an input file too: its row is filtered
    assert stats.videos == 7 and stats.videos_by_status == {"ok": 4, "filtered": 2, "failed": 1}
    # local files carry no category and the 'none' captioner writes no caption
    assert drawn["categories"] == {UNKNOWN_CATEGORY: len(index)}
    assert drawn["caption_words"] == {} and stats.uncaptioned == len(index)
    durations = [r["end_time"] - r["start_time"] for r in index]
    assert drawn["durations"] == dict(Counter(math.floor(d) for d in durations))
    assert stats.hours == pytest.approx(sum(durations) / 3600)
    # broken_upload.mp4 cannot be probed, phone_clip_360p.mp4 is below 720p
    assert drawn["failures"] == {"failed: probe": 1, "filtered: below 720p": 1, "filtered: not a video file (.json)": 1}


def test_stats_count_categories_and_caption_words(processed, tmp_path):
    n_clips = sum(len(clips) for _, clips in processed)
    metadata = iter(source_metadata(n_clips))
    with_meta = []
    for row, clips in processed:
        tagged = []
        for meta, jpg, mp4 in clips:
            caption, categories = next(metadata)
            tagged.append(({**meta, "caption": caption, "captioner": "source", "categories": categories}, jpg, mp4))
        with_meta.append((row, tagged))
    out = write_out(tmp_path / "out", with_meta)

    index = read_index(out)
    drawn = write_figures(dataset_stats(out), tmp_path / "figures")
    check_pngs(tmp_path / "figures")
    assert drawn["categories"] == dict(Counter(c for r in index for c in r["categories"]))
    assert drawn["caption_words"] == dict(Counter(len(r["caption"].split()) for r in index))
    assert sum(drawn["caption_words"].values()) == len(index) == n_clips


def test_uncommitted_parts_are_not_counted(processed, tmp_path):
    out = write_out(tmp_path / "out", processed)
    before = dataset_stats(out).summary()
    # the residue of a crash between renames: an index part whose videos file (commit marker) is missing
    shutil.copy(sorted((out / INDEX_DIR).glob("*.parquet"))[0], out / INDEX_DIR / "999999.parquet")
    assert dataset_stats(out).summary() == before


def test_reason_group_keeps_stage_or_rule():
    assert reason_group("failed", "probe: unreadable container: /v/a.mp4: Invalid data") == "failed: probe"
    assert reason_group("filtered", "not widescreen: aspect 1.333 (960x720) vs 1.778 +/- 5%") == \
        "filtered: not widescreen"
    assert reason_group("filtered", "no scene of at least 1 s") == "filtered: no scene of at least 1 s"
    assert reason_group("failed", None) == "failed: no reason recorded"
    assert reason_group("failed", "download: private: ERROR: [youtube] x: Private video") == \
        "failed: download: private"
    assert reason_group("failed", "fetch: no such file: /v/a.mp4") == "failed: fetch"


def test_cli_prints_summary_and_writes_figures(processed, tmp_path, capsys):
    out = write_out(tmp_path / "out", processed)
    assert main(["stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"clips      {len(read_index(out))} (" in printed
    assert "1 x failed: probe" in printed
    check_pngs(out / "figures")
    summary = json.loads((out / "figures" / "summary.json").read_text())
    assert summary["videos_by_status"] == {"ok": 4, "filtered": 2, "failed": 1}


def test_cli_rejects_a_folder_that_is_not_an_out(tmp_path, capsys):
    assert main(["stats", str(tmp_path)]) == 2
    assert "not a curated OUT" in capsys.readouterr().err
