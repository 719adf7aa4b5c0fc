"""`hdvg score` and `hdvg filter` on a real curated OUT (the sample's videos, one of them copied under another
name): near-duplicates found clip by clip and nothing else, the clip-caption and aesthetic scores equal a
direct computation with the tiny random CLIP and head, the filter keeps exactly what pyarrow computes, a killed
pass resumes; FAISS range search finds the exact search's pairs. Curating the OUT takes minutes on two
shared cores: the tests that read it are slow."""
from __future__ import annotations

import io
import json
import math
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from hdvg import dedup
from hdvg.aesthetic import aesthetic_head, save_head
from hdvg.blip2_random import save_random_blip2
from hdvg.cli import main
from hdvg.config import ConfigError, build_config
from hdvg.contract import INDEX_DIR, MEASURE_FIELDS, clip_id_of_key
from hdvg.query import select
from hdvg.recaption import committed_shards, read_shard
from hdvg.scoring import SCORES_DIR, build_score_config, score
from hdvg.stats import SCORE_BINS, dataset_stats, write_figures
from hdvg.validate import validate
from model.tiny import save_tiny_clip, save_tiny_components
from tests.conftest import SHARED
from tests.test_storage import s3_env  # noqa: F401 (fixture: a real S3 server on 127.0.0.1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two cores shared with Ray workers: a second intra-op thread only spins."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return save_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def tiny_head(tmp_path_factory) -> Path:
    """A random LAION-layout head on the tiny CLIP's 16-d embeddings, saved as the release is (.pth)."""
    torch.manual_seed(0)
    return save_head(aesthetic_head(16), tmp_path_factory.mktemp("head") / "head.pth")


@pytest.fixture(scope="module")
def scored_source(sample_videos, ray_local, tmp_path_factory) -> Path:
    """city_walk, ocean_drive and city_walk again as city_walk_copy, curated with a tiny random BLIP-2 (so every
    clip has a caption) into shards of 3 clips."""
    from hdvg.pipeline import run_curation

    folder = tmp_path_factory.mktemp("videos")
    for name, target in (("city_walk", "city_walk"), ("ocean_drive", "ocean_drive"), ("city_walk", "city_walk_copy")):
        shutil.copy(sample_videos / f"{name}.mp4", folder / f"{target}.mp4")
    blip2 = save_random_blip2(tmp_path_factory.mktemp("blip2") / "tiny-blip2", seed=0)
    out = tmp_path_factory.mktemp("scored") / "out"
    run_curation(build_config(values={"input": str(folder), "output": str(out), "captioner.name": "blip2",
                                      "captioner.model": str(blip2), "captioner.num_cpus": 0.5,
                                      "shards.samples_per_shard": 3}))
    return out


@pytest.fixture
def out(scored_source, tmp_path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(scored_source, copy)
    return copy


def index(out: Path) -> list[dict]:
    return pq.read_table(out / INDEX_DIR).to_pylist()


def scores(out: Path, scorer: str) -> dict[str, dict]:
    return {r["clip_id"]: r for r in pq.read_table(sorted((out / SCORES_DIR / scorer).glob("*.parquet"))).to_pylist()}


def keyframes(out: Path) -> dict[str, Image.Image]:
    return {json.loads(s["json"])["clip_id"]: Image.open(io.BytesIO(s["jpg"])).convert("RGB")
            for tar in committed_shards(out) for s in read_shard(tar)}


# ------------------------------------------------------------------------------------------------- dedup

@pytest.mark.slow
def test_dedup_without_weights_finds_the_copied_video_clip_by_clip_and_nothing_else(out, capsys):
    assert main(["score", str(out), "--scorers", "dedup"]) == 0
    said = capsys.readouterr().out
    assert "features phash" in said and "exact search at cosine >= 0.95" in said
    rows = scores(out, "dedup")
    clips = {r["clip_id"] for r in index(out)}
    copies = {c for c in clips if c.startswith("city_walk_copy.")}
    assert len(copies) >= 3 and set(rows) == clips
    assert {c: r["duplicate_of"] for c, r in rows.items() if r["duplicate_of"]} == \
           {c: c.replace("city_walk_copy.", "city_walk.") for c in copies}
    assert json.loads((out / SCORES_DIR / "dedup" / "run.json").read_text())["features"] == "phash"
    assert dataset_stats(out).duplicates == len(copies)


@pytest.mark.slow
def test_dedup_with_clip_features_says_so_and_keeps_the_highest_aesthetic(out, tiny_clip, tiny_head):
    cfg = build_score_config(values={"scorers": "aesthetic,dedup", "clip_model": str(tiny_clip),
                                     "aesthetic_clip_model": str(tiny_clip), "aesthetic_head": str(tiny_head)})
    got = {g["scorer"]: g for g in score(out, cfg)}
    assert got["dedup"]["features"] == f"clip:{tiny_clip}"
    rows, aesthetic = scores(out, "dedup"), scores(out, "aesthetic")
    def kept(clip_id: str) -> str:
        return rows[clip_id]["duplicate_of"] or clip_id

    for clip_id, row in rows.items():
        if clip_id.startswith("city_walk_copy."):  # a copy and its original are in one group (random CLIP
            assert kept(clip_id) == kept(clip_id.replace("city_walk_copy.", "city_walk."))  # may join more)
        if row["duplicate_of"]:  # whoever is marked points at a clip its group keeps, and it scores no lower
            keeper = row["duplicate_of"]
            assert rows[keeper]["duplicate_of"] is None
            assert aesthetic[keeper]["aesthetic"] >= aesthetic[clip_id]["aesthetic"]


def test_faiss_range_search_finds_the_exact_pairs():
    rng = np.random.default_rng(0)
    base = dedup.unit(rng.normal(size=(4000, 64)))
    near = dedup.unit(base[:40] + 0.01 * rng.normal(size=(40, 64)))  # 40 planted near-copies, cosine ~0.997
    vectors = np.concatenate([base, near])
    exact = {(i, j) for i, j, _ in dedup.exact_pairs(vectors, 0.95)}
    assert exact == {(i, 4000 + i) for i in range(40)}
    approx = {(i, j) for i, j, _ in dedup.faiss_pairs(lambda: iter(np.array_split(vectors, 7)), 64,
                                                       len(vectors), 0.95)}
    assert approx == exact


def test_groups_keep_one_clip_by_the_stated_rule():
    component = dedup.groups(5, [(0, 1, 0.99), (1, 2, 0.97), (3, 4, 0.96)])
    assert list(component) == [0, 0, 0, 3, 3]
    rank = [dedup.keeper_order("a", 5.0, None), dedup.keeper_order("b", 9.0, None),
            dedup.keeper_order("c", 1.0, None), dedup.keeper_order("d", 9.0, 4.0), dedup.keeper_order("e", 1.0, 6.0)]
    assert dedup.duplicates_of(component, rank) == [1, None, 1, 4, None]  # longest; then highest aesthetic


def test_phash_cosine_counts_differing_bits():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    h = dedup.phash(buf.getvalue())
    assert h.shape == (256,) and set(np.unique(h)) == {-1.0, 1.0}
    assert float(dedup.unit(h[None])[0] @ dedup.unit(h[None])[0]) == pytest.approx(1.0)


# -------------------------------------------------------------------------------------- model scores

@pytest.mark.slow
def test_clip_and_aesthetic_scores_equal_a_direct_computation(out, tiny_clip, tiny_head, tmp_path):
    from transformers import CLIPModel, CLIPProcessor

    cfg = build_score_config(values={"scorers": "clip,aesthetic", "clip_model": str(tiny_clip), "batch_size": 2,
                                     "aesthetic_clip_model": str(tiny_clip), "aesthetic_head": str(tiny_head)})
    score(out, cfg)
    model, processor = CLIPModel.from_pretrained(tiny_clip).eval(), CLIPProcessor.from_pretrained(tiny_clip)
    head = aesthetic_head(16)
    head.load_state_dict({k.removeprefix("layers."): v for k, v in torch.load(tiny_head).items()})
    head.eval()
    clip_rows, aesthetic_rows = scores(out, "clip"), scores(out, "aesthetic")
    captions = {r["clip_id"]: r["caption"] for r in index(out)}
    frames = keyframes(out)
    assert set(clip_rows) == set(aesthetic_rows) == set(captions) == set(frames)
    for clip_id, image in frames.items():
        with torch.no_grad():
            pixels = processor(images=[image], return_tensors="pt")["pixel_values"]
            img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
            tokens = processor(text=[captions[clip_id]], return_tensors="pt", padding=True, truncation=True)
            txt = torch.nn.functional.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
            assert clip_rows[clip_id]["clip_score"] == pytest.approx(float((img * txt).sum()), abs=1e-5)
            assert aesthetic_rows[clip_id]["aesthetic"] == pytest.approx(float(head(img)[0, 0]), abs=1e-5)
    stats = dataset_stats(out)  # hdvg stats draws each score's histogram from the same tables
    drawn = write_figures(stats, tmp_path / "figures")
    for column, rows in (("clip_score", clip_rows), ("aesthetic", aesthetic_rows)):
        width = SCORE_BINS[column]
        expected = Counter(round(math.floor(r[column] / width) * width, 6) for r in rows.values())
        assert drawn[f"score_{column}"] == dict(expected) and (tmp_path / "figures" / f"score_{column}.png").exists()
    assert stats.duplicates is None and stats.summary()["scores"]["aesthetic"]["clips"] == len(frames)


@pytest.mark.slow
def test_missing_weights_and_bad_fields_are_named(out, tmp_path, capsys):
    assert main(["score", str(out), "--scorers", "clip"]) == 2
    assert "score.clip_model" in capsys.readouterr().err
    assert main(["score", str(out), "--scorers", "dedup", "--dedup-threshold", "2"]) == 2
    assert "score.dedup_threshold" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="score.scorers"):
        build_score_config(values={"scorers": "clip,ocr"})
    wrong = save_head(aesthetic_head(32), tmp_path / "wrong.safetensors")
    cfg = build_score_config(values={"scorers": "aesthetic", "aesthetic_clip_model": str(save_tiny_clip(
        tmp_path / "clip")), "aesthetic_head": str(wrong)})
    with pytest.raises(ValueError, match="takes 32-d embeddings"):
        score(out, cfg)


@pytest.mark.slow
def test_a_killed_score_pass_resumes_and_ends_as_an_uninterrupted_one(out, scored_source, tiny_clip, tmp_path):
    cfg = build_score_config(values={"scorers": "clip,dedup", "clip_model": str(tiny_clip)})
    first = score(out, cfg, max_shards=1)
    assert [g["shards_done"] for g in first] == [1, 1] and not first[1]["grouped"]
    dest = out / SCORES_DIR / "clip"
    done = {p: p.stat().st_mtime_ns for p in dest.glob("*.parquet")}
    (dest / "_tmp").mkdir()
    (dest / "_tmp" / "000001.parquet").write_bytes(b"half written")  # the kill, mid-shard
    rest = score(out, cfg)
    assert rest[0]["shards_done"] == rest[0]["shards_total"] - 1 and rest[1]["grouped"]
    assert {p: p.stat().st_mtime_ns for p in done} == done and not (dest / "_tmp").exists()
    whole = tmp_path / "whole"
    shutil.copytree(scored_source, whole)
    score(whole, cfg)
    for scorer in ("clip", "dedup"):
        assert scores(out, scorer) == scores(whole, scorer)
    with pytest.raises(ConfigError, match="other settings"):
        score(out, build_score_config(values={"scorers": "dedup"}))  # phash features into CLIP's folder


@pytest.mark.slow
def test_a_ray_actor_pool_scores_what_one_process_scores(out, scored_source, tiny_clip, ray_local, tmp_path):
    values = {"scorers": "clip,dedup", "clip_model": str(tiny_clip)}
    score(out, build_score_config(values={**values, "actors": 2, "num_cpus": 0.5}))  # the session's local Ray
    alone = tmp_path / "alone"
    shutil.copytree(scored_source, alone)
    score(alone, build_score_config(values=values))
    for scorer in ("clip", "dedup"):
        assert scores(out, scorer) == scores(alone, scorer)


# ------------------------------------------------------------------------------------------------ filter

@pytest.mark.slow
def test_filter_keeps_exactly_the_rows_the_predicate_selects(out, tiny_clip, capsys, tmp_path):
    score(out, build_score_config(values={"scorers": "clip,dedup", "clip_model": str(tiny_clip)}))
    clip_rows, dup_rows = scores(out, "clip"), scores(out, "dedup")
    threshold = float(np.median([r["clip_score"] for r in clip_rows.values()]))
    where = f"clip_score > {threshold} AND duplicate_of IS NULL AND end_time - start_time BETWEEN 1 AND 30"
    keep = tmp_path / "keep.parquet"
    assert main(["filter", str(out), "--where", where, "--output", str(keep)]) == 0
    said = capsys.readouterr().out
    table = pq.read_table(out / INDEX_DIR)
    seconds = pc.subtract(table["end_time"], table["start_time"]).to_pylist()
    ids = table["clip_id"].to_pylist()
    conds = [{c for c in ids if clip_rows[c]["clip_score"] > threshold},
             {c for c in ids if dup_rows[c]["duplicate_of"] is None},
             {c for c, s in zip(ids, seconds) if 1 <= s <= 30}]
    expected = conds[0] & conds[1] & conds[2]
    kept = pq.read_table(keep)
    assert sorted(kept["clip_id"].to_pylist()) == sorted(expected) and 0 < len(expected) < len(ids)
    assert set(kept.column_names) >= set(table.column_names) | {"clip_score", "duplicate_of"}
    got = select(out, where)
    assert [r["clips"] for r in got["conditions"]] == [len(c) for c in conds]
    assert [r["clips_cumulative"] for r in got["conditions"]] == \
           [len(conds[0]), len(conds[0] & conds[1]), len(expected)]
    hours = sum(s for c, s in zip(ids, seconds) if c in expected) / 3600
    assert got["clips"] == len(expected) and got["hours"] == pytest.approx(hours)
    assert f"kept {len(expected)} clips" in said and "(duplicate_of IS NULL)" in said


@pytest.mark.slow
def test_filter_names_a_bad_predicate_and_an_unscored_column(out, capsys):
    assert main(["filter", str(out), "--where", "clip_score >> 1"]) == 2
    assert "where:" in capsys.readouterr().err
    assert main(["filter", str(out), "--where", "aesthetic >= 4.75"]) == 2
    err = capsys.readouterr().err
    assert "aesthetic" in err and "clip_id" in err and "hdvg score" in err


@pytest.mark.slow
def test_a_training_stream_with_where_yields_exactly_the_selected_clips_undecoded_rest(out):
    from model.data import ShardSet, ShardStream, VideoClips
    from model.train_config import load_config

    score(out, build_score_config(values={"scorers": "dedup"}))
    where = "duplicate_of IS NULL AND end_time - start_time > 2"
    table = pq.read_table(out / INDEX_DIR)
    dups = scores(out, "dedup")
    expected = {r["clip_id"] for r in table.to_pylist()
                if dups[r["clip_id"]]["duplicate_of"] is None and r["end_time"] - r["start_time"] > 2}
    by_shard = {}
    for r in table.to_pylist():
        if r["clip_id"] in expected:
            by_shard.setdefault(r["shard"], []).append(r["clip_id"])
    left_out = next(ids[0] for ids in by_shard.values() if len(ids) > 1)  # its shard is read all the same
    where += f" AND clip_id <> '{left_out}'"
    expected.discard(left_out)
    assert 0 < len(expected) < table.num_rows
    stream = ShardStream([ShardSet(str(out / "shards" / "*.tar"), 1.0, where)],
                         VideoClips(2, 1, 32, 32, "empty"), batch_size=2, seed=0, shuffle_buffer=4)
    seen, counts = set(), {}
    for batch, _ in zip(stream, range(40)):
        seen.update(batch["clip_id"])
        counts = batch["counts"]
    assert seen == expected
    assert counts["where"] > 0 and counts["samples"] == 80  # the others were skipped before decoding
    with pytest.raises(ValueError, match="one predicate per shard set"):
        load_config("tiny", ["data.shards=[\"a/*.tar\", \"b/*.tar\"]", "data.where=[\"aesthetic > 4\"]"])
    with pytest.raises(ValueError, match="selects no clip"):
        ShardStream([ShardSet(str(out / "shards" / "*.tar"), 1.0, "end_time < 0")], VideoClips(2, 1, 32, 32, "empty"),
                    batch_size=2)


# ------------------------------------------------------------------------------- the cutter's measures

@pytest.mark.slow
def test_the_curation_pass_writes_the_measures_and_filter_and_stats_read_them(out, capsys):
    table = pq.read_table(out / INDEX_DIR)
    rows = table.to_pylist()
    for row in rows:  # real footage: every clip measured, in range
        assert all(row[f] is not None for f in MEASURE_FIELDS), row
        assert row["motion_score"] >= row["motion_min_region"] >= 0 and 0 <= row["static_fraction"] <= 1
        assert 0 < row["luma_mean"] < 255 and row["content_aspect"] == pytest.approx(16 / 9, rel=0.05)
    json_measures = {json.loads(s["json"])["clip_id"]: {f: json.loads(s["json"])[f] for f in MEASURE_FIELDS}
                     for tar in committed_shards(out) for s in read_shard(tar)}
    assert json_measures == {r["clip_id"]: {f: r[f] for f in MEASURE_FIELDS} for r in rows}
    motion = sorted(r["motion_score"] for r in rows)
    threshold = motion[len(motion) // 2]
    where = f"motion_score >= {threshold} AND static_fraction < 0.5"
    expected = [r for r in rows if r["motion_score"] >= threshold and r["static_fraction"] < 0.5]
    assert 0 < len(expected) < len(rows)
    got = select(out, where)
    assert got["clips"] == len(expected)
    assert got["hours"] == pytest.approx(sum(r["end_time"] - r["start_time"] for r in expected) / 3600)
    stats = dataset_stats(out)
    assert {stats.scored[f] for f in MEASURE_FIELDS} == {len(rows)}
    drawn = write_figures(stats, out / "figures")
    width = SCORE_BINS["motion_score"]
    assert drawn["score_motion_score"] == dict(Counter(round(math.floor(m / width) * width, 6) for m in motion))


@pytest.mark.slow
def test_an_out_written_before_the_measures_reads_them_as_null(out, capsys):
    """Index parts without the measure columns (as written before them), beside one that has them: every reader
    goes on, and the old parts' clips read null."""
    parts = sorted((out / INDEX_DIR).glob("*.parquet"))
    assert len(parts) >= 3
    old_ids = set()
    for part in parts[1:]:
        table = pq.read_table(part)
        old_ids |= set(table["clip_id"].to_pylist())
        pq.write_table(table.drop_columns(list(MEASURE_FIELDS)), part)
    new_ids = set(pq.read_table(parts[0])["clip_id"].to_pylist())
    got = select(out, "motion_score IS NULL")
    assert got["clips"] == len(old_ids) and select(out, "motion_score > 0")["clips"] == len(new_ids)
    assert validate(out)[0] == []
    stats = dataset_stats(out)
    assert stats.clips == len(old_ids | new_ids) and stats.scored["luma_mean"] == len(new_ids)
    for part in parts[:1]:  # no part has them: the columns are still there, all null
        pq.write_table(pq.read_table(part).drop_columns(list(MEASURE_FIELDS)), part)
    assert select(out, "content_aspect IS NULL")["clips"] == stats.clips
    assert main(["filter", str(out), "--where", "luma_mean > 20"]) == 0
    assert "kept 0 clips" in capsys.readouterr().out
    assert not dataset_stats(out).scores
    checker = SHARED.parent / "tools" / "check_output.py"
    if checker.exists():  # the contract's own check reads the old layout too
        proc = subprocess.run([sys.executable, str(checker), str(out), "--check-frames", "2"],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:]


@pytest.mark.slow
def test_hdvg_train_where_streams_only_the_selected_clips(out, tmp_path, capsys):
    """`hdvg train --where` over the measures: it trains, and its loader counts report the clips the predicate
    left out; a predicate that keeps nothing, or names no column, is a usage error (exit 2)."""
    components = save_tiny_components(tmp_path / "components")
    motion = sorted(pq.read_table(out / INDEX_DIR)["motion_score"].to_pylist())
    shards = str(out / "shards" / "*.tar")
    small = ["--set", "data.width=64", "--set", "data.height=32", "--set", "optim.batch_per_gpu=1",
             "--set", "optim.batch_size=1", "--set", "data.num_workers=0",
             *[a for o in ("unet.block_out_channels=[8, 16]", "unet.attention_levels=[true, false]",
                           "unet.norm_num_groups=4", "unet.fusion_head_dim=8") for a in ("--set", o)]]
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--components", str(components), "--shards", shards,
                 "--where", f"motion_score >= {motion[len(motion) // 2]}", "--output", str(run), "--steps", "2",
                 "--report-to", "none", *small]) == 0
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 2 and last["samples"] >= 2 and last["where"] > 0
    capsys.readouterr()
    assert main(["train", "--components", str(components), "--shards", shards, "--where", "motion_score < 0",
                 "--output", str(tmp_path / "none"), *small]) == 2
    assert "selects no clip" in capsys.readouterr().err
    assert main(["train", "--components", str(components), "--shards", shards, "--where", "motion > 1",
                 "--output", str(tmp_path / "bad"), *small]) == 2
    assert "motion_score" in capsys.readouterr().err  # the columns there are, named


@pytest.mark.slow
def test_filter_and_train_where_read_an_out_in_object_storage(out, s3_env):
    """The same OUT, scores included, in object storage (a real S3 server on 127.0.0.1): `hdvg filter` and a
    training stream's `where` select what they select on the local copy."""
    import uuid

    import pyarrow.fs as pafs

    from hdvg.storage import Store
    from model.data import ShardSet, ShardStream, VideoClips, selected_keys

    score(out, build_score_config(values={"scorers": "dedup"}))
    uri = f"s3://hdvg/{uuid.uuid4().hex[:8]}"
    store = Store(uri)
    pafs.copy_files(str(out), store.root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=store.fs)
    where = "duplicate_of IS NULL AND motion_score > 0.01"
    local, remote = select(out, where), select(uri, where)
    assert 0 < remote["clips"] < remote["total_clips"]
    def counts(got: dict) -> list:  # clip counts exactly, hours to rounding (DuckDB sums in its own order)
        rows = [(r["condition"], r["clips"], r["clips_cumulative"], round(r["hours"], 9),
                 round(r["hours_cumulative"], 9)) for r in got["conditions"]]
        return [got["total_clips"], got["clips"], round(got["hours"], 9), round(got["total_hours"], 9), rows]

    assert counts(remote) == counts(local)
    local_keys = selected_keys(sorted(str(p) for p in (out / "shards").glob("*.tar")), where)
    remote_keys = selected_keys([f"{uri}/shards/{p.name}" for p in sorted((out / "shards").glob("*.tar"))], where)
    assert {u.rsplit("/", 1)[1]: k for u, k in remote_keys.items()} == {Path(u).name: k for u, k in local_keys.items()}
    stream = ShardStream([ShardSet(f"{uri}/shards/*.tar", 1.0, where)], VideoClips(2, 1, 32, 32, "empty"),
                         batch_size=2, shuffle_buffer=2)
    batch = next(iter(stream))
    assert set(batch["clip_id"]) <= {clip_id_of_key(k) for keys in local_keys.values() for k in keys}
