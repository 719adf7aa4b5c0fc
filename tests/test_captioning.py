"""BLIP-2 captioning on a tiny random BLIP-2 (vision, Q-Former, OPT) saved here as a user's local
checkpoint and loaded through `from_pretrained`: direct path, batching, the Ray actor pool inside the real
curation job, the start-up check for missing weights, and `hdvg caption` over curated shards."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from hdvg.blip2 import WeightsMissing
from hdvg.captioning import (build_captioner, build_preprocessor, caption, caption_groups, caption_stream,
                             resolve_captioner)
from hdvg.cli import main
from hdvg.config import CaptionConfig, ConfigError, build_config
from hdvg.contract import INDEX_DIR, SHARDS_DIR
from hdvg.recaption import CAPTIONS_DIR, read_captions, recaption
from hdvg.validate import validate
from hdvg.blip2_random import save_random_blip2

MISSING = "Salesforce/blip2-opt-2.7b"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Two cores shared with Ray workers: a second intra-op thread only spins."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_random_blip2(tmp_path_factory.mktemp("tiny-blip2") / "tiny-blip2", seed=0)


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    """An empty HF cache and no hub: what a machine without the weights sees."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
        mp.delenv("HF_HUB_CACHE", raising=False)
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield


def jpegs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)).save(buf, "JPEG")
        out.append(buf.getvalue())
    return out


def blip2_cfg(model: Path | str, **kw) -> CaptionConfig:
    return CaptionConfig(name="blip2", model=str(model), **kw)


def direct_captions(model: Path, keyframes: list[bytes], **kw) -> list[str | None]:
    spec = resolve_captioner(blip2_cfg(model, **kw))
    return caption(build_captioner(spec), build_preprocessor(spec), keyframes, 1)


# ---------------------------------------------------------------------------------------------- direct path

def test_captions_are_strings_one_per_keyframe_and_batching_changes_nothing(tiny_model):
    frames = jpegs(7)
    spec = resolve_captioner(blip2_cfg(tiny_model))
    assert spec.name == f"blip2:{tiny_model.resolve()}@local"
    captioner, preprocess = build_captioner(spec), build_preprocessor(spec)
    batched = caption(captioner, preprocess, frames, 3)
    assert len(batched) == 7 and all(isinstance(c, str) and c for c in batched)
    assert len(set(batched)) > 1  # captions follow the image, so a reordering would show
    singles = [caption(captioner, preprocess, [f], 1)[0] for f in frames]
    assert batched == singles
    groups = caption_groups(captioner, [preprocess(frames[:2]), preprocess(frames[2:3]), preprocess(frames[3:])], 4)
    assert groups == [batched[:2], batched[2:3], batched[3:]]
    assert [c for got in caption_stream(captioner, preprocess, [frames[:4], frames[4:]]) for c in got] == batched


def test_same_seed_same_captions_other_seed_other_captions(tiny_model, tmp_path):
    frames = jpegs(4, seed=1)
    first = direct_captions(tiny_model, frames)
    assert direct_captions(save_random_blip2(tmp_path / "again", seed=0), frames) == first
    assert direct_captions(save_random_blip2(tmp_path / "other", seed=1), frames) != first


def test_generation_settings_reach_the_model(tiny_model):
    frames = jpegs(3, seed=2)
    short = direct_captions(tiny_model, frames, num_beams=1, min_new_tokens=1, max_new_tokens=2)
    long = direct_captions(tiny_model, frames, num_beams=1, min_new_tokens=12, max_new_tokens=12)
    assert all(len(s) < len(x) for s, x in zip(short, long))


@pytest.mark.parametrize("num_beams", [1, 5])
def test_a_static_cache_gives_the_same_captions(tiny_model, num_beams):
    frames = jpegs(5, seed=4)
    dynamic = direct_captions(tiny_model, frames, num_beams=num_beams)
    assert direct_captions(tiny_model, frames, num_beams=num_beams, kv_cache="static") == dynamic


def test_a_prompt_is_continued_and_cut_off(tiny_model):
    frames = jpegs(3, seed=3)
    plain = direct_captions(tiny_model, frames, num_beams=1)
    prompted = direct_captions(tiny_model, frames, num_beams=1, prompt="a photo of")
    assert prompted != plain and all(isinstance(c, str) and c for c in prompted)
    assert not any(c.startswith("a photo of") for c in prompted)


# ---------------------------------------------------------------------------------------- missing weights

def test_missing_weights_fail_at_start_up_naming_the_fixes(offline_hub, tmp_path, capsys):
    with pytest.raises(WeightsMissing) as err:
        resolve_captioner(blip2_cfg(MISSING))
    text = str(err.value)
    for needed in ("captioner.model", MISSING, "HF_HOME", os.environ["HF_HOME"], "--captioner-model",
                   "HF_HUB_OFFLINE", "on_missing_weights=uncaptioned"):
        assert needed in text
    out = tmp_path / "out"
    code = main(["curate", "--input", str(tmp_path / "no-videos-needed"), "--output", str(out),
                 "--captioner", "blip2", "--captioner-model", MISSING])
    assert code == 2 and "captioner.model" in capsys.readouterr().err
    assert not out.exists()  # nothing started: no OUT, no Ray, no video task


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="captioner.model"):
        resolve_captioner(blip2_cfg(tmp_path))


# ------------------------------------------------------------------------------------ curation on Ray

@pytest.fixture(scope="module")
def two_videos(sample_videos, tmp_path_factory) -> Path:
    """Two sample videos of 3 and 4 clips: enough for batches across videos and two shards."""
    folder = tmp_path_factory.mktemp("two_videos")
    for name in ("city_walk.mp4", "ocean_drive.mp4"):
        shutil.copy(sample_videos / name, folder / name)
    return folder


def shard_samples(out: Path, shards_dir: str = SHARDS_DIR) -> dict[str, dict]:
    return {s["__key__"]: s for tar in sorted((out / shards_dir).glob("*.tar"))
            for s in wds.WebDataset(str(tar), shardshuffle=False)}


@pytest.fixture(scope="module")
def uncaptioned_out(two_videos, ray_local, offline_hub, tmp_path_factory) -> tuple[Path, dict]:
    """`make shards` without weights, told to go on: shards of 3 clips, each clip marked uncaptioned."""
    from hdvg.pipeline import run_curation

    out = tmp_path_factory.mktemp("uncaptioned") / "out"
    cfg = build_config(values={"input": str(two_videos), "output": str(out), "captioner.name": "blip2",
                               "captioner.model": MISSING, "captioner.on_missing_weights": "uncaptioned",
                               "shards.samples_per_shard": 3, "detect.detector": "adaptive"})  # the cheap detector
    return out, run_curation(cfg)


def test_uncaptioned_run_says_so_in_summary_and_every_clip(uncaptioned_out):
    out, stats = uncaptioned_out
    assert "captioner.model" in stats["last_run"]["uncaptioned"]
    assert stats["last_run"]["captioner"] == f"none:weights-missing:blip2:{MISSING}"
    samples = shard_samples(out)
    assert len(samples) == stats["clips"] > 0
    for s in samples.values():
        meta = json.loads(s["json"])
        assert meta["caption"] is None and meta["captioner"] == stats["last_run"]["captioner"]


def test_actor_pool_captions_equal_the_direct_path(two_videos, ray_local, tiny_model, tmp_path):
    from hdvg.pipeline import run_curation

    out = tmp_path / "out"
    # batch 4 over videos of 3 and 4 clips; grouping across videos is checked on the direct path above
    cfg = build_config(values={"input": str(two_videos), "output": str(out), "captioner.name": "blip2",
                               "captioner.model": str(tiny_model), "captioner.batch_size": 4,
                               "captioner.num_cpus": 0.5})
    stats = run_curation(cfg)
    problems, summary = validate(out)
    assert not problems and summary["clips"] == stats["clips"] > 0
    samples = shard_samples(out)
    metas = [json.loads(s["json"]) for s in samples.values()]
    direct = direct_captions(tiny_model, [s["jpg"] for s in samples.values()])
    assert [m["caption"] for m in metas] == direct
    assert {m["captioner"] for m in metas} == {f"blip2:{tiny_model.resolve()}@local"}
    index = pq.read_table(out / INDEX_DIR).to_pylist()
    assert {r["clip_id"]: r["caption"] for r in index} == {m["clip_id"]: m["caption"] for m in metas}


# --------------------------------------------------------------------------------------------- re-caption

def test_recaption_gives_every_clip_the_new_caption_and_changes_nothing_else(uncaptioned_out, tiny_model,
                                                                             tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uncaptioned_out[0], out)
    cfg = blip2_cfg(tiny_model, batch_size=2)
    got = recaption(out, cfg, write_shards=True)
    assert got["shards_done"] == got["shards_total"] > 1
    before, after = shard_samples(out), shard_samples(out, f"{CAPTIONS_DIR}/tiny-blip2/{SHARDS_DIR}")
    assert sorted(before) == sorted(after)
    table = {r["clip_id"]: r for r in read_captions(out, "tiny-blip2")}
    direct = dict(zip(before, direct_captions(tiny_model, [s["jpg"] for s in before.values()])))
    for key, old in before.items():
        new = after[key]
        assert sorted(m for m in new if not m.startswith("__")) == sorted(m for m in old if not m.startswith("__"))
        for member in old:
            if not member.startswith("__") and member not in ("json", "txt"):
                assert new[member] == old[member], member
        old_meta, new_meta = json.loads(old["json"]), json.loads(new["json"])
        assert new_meta["caption"] == direct[key] == new["txt"].decode()
        assert new_meta["captioner"] == f"blip2:{tiny_model.resolve()}@local"
        assert {k: v for k, v in new_meta.items() if k not in ("caption", "captioner")} == \
               {k: v for k, v in old_meta.items() if k not in ("caption", "captioner")}
        row = table[new_meta["clip_id"]]
        assert (row["caption"], row["model"], row["revision"]) == (direct[key], str(tiny_model), "local")
    assert not validate(out)[0]  # the original OUT is untouched and still valid


def test_recaption_resumes_after_a_kill(uncaptioned_out, tiny_model, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(uncaptioned_out[0], out)
    cfg = blip2_cfg(tiny_model)
    dest = out / CAPTIONS_DIR / "resume"
    first = recaption(out, cfg, name="resume", write_shards=True, max_shards=1)
    assert first["shards_done"] == 1 and len(list(dest.glob("*.parquet"))) == 1
    done = {p: p.stat().st_mtime_ns for p in dest.glob("*.parquet")}
    # a kill during the next shard: its tar renamed, its parquet (the marker) not, a temporary left
    second_tar = sorted((out / SHARDS_DIR).glob("*.tar"))[1]
    shutil.copy(second_tar, dest / SHARDS_DIR / second_tar.name)
    (dest / "_tmp").mkdir(exist_ok=True)
    (dest / "_tmp" / "000002.parquet").write_bytes(b"half written")
    rest = recaption(out, cfg, name="resume", write_shards=True)
    assert rest["shards_done"] == first["shards_total"] - 1
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished shards were not redone
    assert not (dest / "_tmp").exists()
    rows = read_captions(out, "resume")
    assert sorted(r["clip_id"] for r in rows) == sorted(json.loads(s["json"])["clip_id"]
                                                        for s in shard_samples(out).values())
    assert all(isinstance(r["caption"], str) for r in rows)
    assert all(json.loads(s["json"])["caption"] for s in shard_samples(out, f"{CAPTIONS_DIR}/resume/shards").values())
    with pytest.raises(ConfigError, match="other settings"):
        recaption(out, blip2_cfg(tiny_model, num_beams=2), name="resume")


def test_caption_command(uncaptioned_out, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(uncaptioned_out[0], out)
    code = main(["caption", str(out), "--captioner-model", str(tiny_model), "--name", "cli", "--batch-size", "8",
                 "--max-shards", "1"])
    assert code == 0 and "1 shards" in capsys.readouterr().out
    assert len(list((out / CAPTIONS_DIR / "cli").glob("*.parquet"))) == 1


def test_a_captioner_error_fails_its_videos_as_transient(ray_local, tiny_model, tmp_path):
    from hdvg.pipeline import run_curation
    from hdvg.shards import recover
    from tests.test_sources import _three_colour_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        _three_colour_video(videos / name)

    broken = tmp_path / "tiny-blip2"
    shutil.copytree(tiny_model, broken)
    for weights in broken.glob("*.safetensors"):  # config.json is fine, the weights are not: the actor raises
        weights.write_bytes(b"not safetensors")
    out = tmp_path / "out"
    values = {"input": str(videos), "output": str(out), "captioner.name": "blip2", "captioner.model": str(broken),
              "captioner.num_cpus": 0.5, "filter.min_height": 100, "encode.preset": "ultrafast"}
    stats = run_curation(build_config(values=values))
    rows = pq.read_table(out / "videos").to_pylist()
    assert stats["videos_by_status"] == {"failed": 2} and stats["clips"] == 0  # never written uncaptioned
    assert all(r["reason"].startswith("caption: ") and r["failure"] == "transient" for r in rows)
    assert recover(out, retry_failed="transient")[0] == set()  # `--retry-failed` redoes them


def stop_first_caption_actor(stopped: list[int], done: threading.Event) -> None:
    """SIGSTOP the first `ray::CaptionActor` process of this machine that appears (a hung GPU, as the job sees
    it: alive, silent); Ray's kill (SIGKILL) still ends it."""
    while not done.is_set() and not stopped:
        for proc in Path("/proc").iterdir():
            try:
                title = (proc / "cmdline").read_bytes().split(b"\0")[0]
            except OSError:
                continue
            if proc.name.isdigit() and title.startswith(b"ray::CaptionActor"):
                os.kill(int(proc.name), signal.SIGSTOP)
                stopped.append(int(proc.name))
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_hung_captioner_call_fails_its_videos_as_transient_and_the_job_ends(ray_local, tiny_model, tmp_path):
    from hdvg.pipeline import run_curation
    from tests.test_sources import _three_colour_video

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        _three_colour_video(videos / name)
    out = tmp_path / "out"
    values = {"input": str(videos), "output": str(out), "captioner.name": "blip2", "captioner.model": str(tiny_model),
              "captioner.num_cpus": 0.5, "captioner.call_timeout_s": 5, "filter.min_height": 100,
              "encode.preset": "ultrafast"}
    stopped, done = [], threading.Event()
    watcher = threading.Thread(target=stop_first_caption_actor, args=(stopped, done), daemon=True)
    watcher.start()
    try:
        stats = run_curation(build_config(values=values))
    finally:
        done.set()
        watcher.join()
    assert stopped, "the captioner actor was never seen"
    rows = pq.read_table(out / "videos").to_pylist()
    assert stats["videos_by_status"] == {"failed": 2} and stats["clips"] == 0
    assert all(r["reason"].startswith("caption: timeout: no answer within 5 s") and r["failure"] == "transient"
               for r in rows)
