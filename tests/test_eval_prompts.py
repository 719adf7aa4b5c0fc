"""Prompt sets: the shipped UCF-101 list, MSR-VTT (one caption per video, seed 42) and WebVid annotation
files of ../shared/data, and the interleaved, seeded samples built from them."""
from __future__ import annotations

import json

import pytest

from model.eval.prompts import (PROMPTS_DIR, build_samples, load_prompts, msrvtt_prompts, protocol_size,
                                ucf101_prompts, video_order, webvid_prompts)
from tests.conftest import shared_file


def test_ucf101_prompts_are_the_papers_sentences_as_printed():
    prompts = ucf101_prompts()
    assert len(prompts) == 101 == len(set(prompts))
    assert prompts[0] == "A person is applying eye makeup." and prompts[-1] == "A person is playing YoYo."
    assert "A person is doing golf swing ." in prompts  # the appendix's spacing, kept
    # The shipped file is the appendix D.3 list byte for byte (../shared holds it as printed).
    shared = shared_file("metadata/videofactory/ucf101_prompts_appendix_d3.txt")
    assert (PROMPTS_DIR / "ucf101.txt").read_bytes() == shared.read_bytes()
    assert prompts == shared.read_text(encoding="utf-8").splitlines()


def test_ucf101_protocol_is_100_samples_per_prompt_interleaved_and_seeded():
    prompts, per_prompt = load_prompts("ucf101")
    samples = build_samples(prompts, per_prompt, None, seed=7)
    assert len(samples) == 10_100
    assert [s.prompt for s in samples[:3]] == prompts[:3] and samples[101].prompt == prompts[0]
    assert [s.seed for s in samples[:3]] == [7, 8, 9] and samples[-1].index == 10_099
    first = build_samples(prompts, per_prompt, 202, seed=7)
    assert first == samples[:202]  # a prefix covers every prompt twice
    assert {s.prompt for s in first} == set(prompts)


def test_msrvtt_one_caption_per_video_drawn_with_seed_42():
    path = shared_file("metadata/msrvtt/panda70m_msrvtt_caption_test_first300.json")
    entries = {e["video"].removesuffix(".mp4"): e["caption"] for e in json.loads(path.read_text())}
    prompts = msrvtt_prompts(path)
    assert len(prompts) == 300
    for (video, captions), prompt in zip(sorted(entries.items(), key=lambda e: video_order(e[0])), prompts):
        assert prompt in captions
    assert msrvtt_prompts(path) == prompts  # deterministic
    assert msrvtt_prompts(path, seed=0) != prompts  # and the draw really depends on the seed
    jsfusion = msrvtt_prompts(shared_file("metadata/msrvtt/MSRVTT_JSFUSION_test_semicolon.csv"))
    assert len(jsfusion) == 1000 and "a little girl does gymnastics" in jsfusion


def test_msrvtt_videos_come_in_numeric_order(tmp_path):
    entries = [{"video": f"video{n}.mp4", "caption": [f"caption of {n}"]} for n in (100, 9, 10, 7010)]
    (tmp_path / "test.json").write_text(json.dumps(entries))
    assert msrvtt_prompts(tmp_path / "test.json") == [f"caption of {n}" for n in (9, 10, 100, 7010)]
    sentences = {"sentences": [{"video_id": f"video{n}", "caption": f"c{n}"} for n in (11, 2)]}
    (tmp_path / "official.json").write_text(json.dumps(sentences))
    assert msrvtt_prompts(tmp_path / "official.json") == ["c2", "c11"]


def test_default_sample_counts_follow_the_protocol(tmp_path):
    prompts, per_prompt = load_prompts("ucf101")
    assert protocol_size("ucf101", prompts, per_prompt, 2048) == 10_100
    annotations = shared_file("metadata/msrvtt/panda70m_msrvtt_caption_test_first300.json")
    prompts, per_prompt = load_prompts("msrvtt", annotations)
    assert protocol_size("msrvtt", prompts, per_prompt, 2048) == 300  # one per test video (2,990 in full)
    (tmp_path / "mine.txt").write_text("a cat\na dog\n")
    assert protocol_size(str(tmp_path / "mine.txt"), *load_prompts(str(tmp_path / "mine.txt")), 2048) == 2048


def test_webvid_captions_from_a_csv_and_clear_errors(tmp_path):
    prompts = webvid_prompts(shared_file("metadata/webvid/video2dataset_test_webvid.csv"))
    assert len(prompts) == 20 and prompts[1] == "Horse grazing - seperated on green screen"
    with pytest.raises(ValueError, match="--annotations"):
        load_prompts("msrvtt")
    with pytest.raises(ValueError, match="ucf101"):
        load_prompts("no-such-set")
    (tmp_path / "bad.csv").write_text("videoid,url\n1,x\n")
    with pytest.raises(ValueError, match="`name`"):
        webvid_prompts(tmp_path / "bad.csv")
    (tmp_path / "mine.txt").write_text("# my prompts\na cat\n\na dog\n")
    assert load_prompts(str(tmp_path / "mine.txt")) == (["a cat", "a dog"], 1)
