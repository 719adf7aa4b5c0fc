"""Prompt sets of the evaluation protocol (appendix D.3) and the samples generated from them.

    ucf101   the paper's 101 prompts shipped in prompts/ucf101.txt, 100 samples each (10,100 in all; FVD)
    msrvtt   MSR-VTT test: one sample per video (2,990), videos in numeric order (video7010, ..., video9999),
             one of each video's captions drawn with seed 42 (CLIPSIM); from a user-supplied
             annotation file: Panda-70M / CLIP4Clip style json `[{"video", "caption": [20 strings]}]`,
             the official `{"sentences": [{"video_id", "caption"}]}` json, or the JSFusion csv
             (`key;vid_key;video_id;sentence`, already one caption per video)
    webvid   WebVid validation captions (FVD, CLIPSIM): the `name` column of a user-supplied csv
             (`results_2M_val.csv`: videoid,name,...)
    FILE     any .txt file, one prompt a line (`#` starts a comment line)

`ucf101` and `msrvtt` are generated in full unless `--num-samples` says otherwise (`protocol_size`).
Samples are interleaved (sample i has prompt i mod P, repeat i div P), so any prefix of a set covers its
prompts evenly and `--num-samples N` evaluates the first N; sample i is generated with seed `seed + i`.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROMPTS_DIR = Path(__file__).with_name("prompts")
PROMPT_SETS = ("ucf101", "msrvtt", "webvid")
UCF101_SAMPLES_PER_PROMPT = 100  # appendix D.3: 100 videos per UCF-101 prompt
MSRVTT_CAPTION_SEED = 42  # one caption per MSR-VTT test video, drawn with this seed
# Sets whose protocol is the whole set (appendix D.3): their default sample count is their size.
FULL_PROTOCOL_SETS = ("ucf101", "msrvtt")


@dataclass(frozen=True)
class Sample:
    index: int
    prompt: str
    seed: int


def read_prompt_file(path: str | Path) -> list[str]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"{path}: no prompts (one a line, '#' for comments)")
    return prompts


def ucf101_prompts() -> list[str]:
    return read_prompt_file(PROMPTS_DIR / "ucf101.txt")


def video_order(video_id: str) -> tuple[int, str]:
    """Sort key of an MSR-VTT video id: its number ("video9" before "video10"), then the id itself."""
    number = re.search(r"(\d+)$", video_id)
    return (int(number.group(1)) if number else -1, video_id)


def msrvtt_prompts(annotations: str | Path, seed: int = MSRVTT_CAPTION_SEED) -> list[str]:
    """One caption per MSR-VTT video, videos in their numeric order; where a video has several captions, one
    drawn with `seed` (a numpy Generator consumed once per video in that order)."""
    path = Path(annotations)
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter=";"))
        if not rows or not {"video_id", "sentence"} <= set(rows[0]):
            raise ValueError(f"{path}: expected the JSFusion csv header key;vid_key;video_id;sentence")
        captions = {row["video_id"]: [row["sentence"]] for row in rows}
    else:
        data = json.loads(path.read_text(encoding="utf-8"))
        captions: dict[str, list[str]] = {}
        if isinstance(data, dict) and "sentences" in data:
            for sentence in data["sentences"]:
                captions.setdefault(str(sentence["video_id"]), []).append(sentence["caption"])
        elif isinstance(data, list) and data and {"video", "caption"} <= set(data[0]):
            for entry in data:
                caps = entry["caption"]
                captions[Path(entry["video"]).stem] = [caps] if isinstance(caps, str) else list(caps)
        else:
            raise ValueError(f"{path}: not an MSR-VTT annotation file (expected a list of "
                             f"{{video, caption}} or {{sentences: [{{video_id, caption}}]}})")
    rng = np.random.default_rng(seed)
    return [captions[video][int(rng.integers(len(captions[video])))] for video in sorted(captions, key=video_order)]


def webvid_prompts(annotations: str | Path) -> list[str]:
    with Path(annotations).open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if "name" not in (reader.fieldnames or []):
            raise ValueError(f"{annotations}: expected a WebVid csv with a `name` (caption) column")
        return [row["name"].strip() for row in reader if row["name"].strip()]


def load_prompts(prompt_set: str, annotations: str | Path | None = None) -> tuple[list[str], int]:
    """(prompts, samples per prompt of the set's protocol)."""
    if prompt_set == "ucf101":
        return ucf101_prompts(), UCF101_SAMPLES_PER_PROMPT
    if prompt_set in ("msrvtt", "webvid"):
        if annotations is None:
            raise ValueError(f"--prompts {prompt_set} needs --annotations FILE (the {prompt_set} annotation "
                             f"file; see docs/evaluation.md)")
        return (msrvtt_prompts(annotations) if prompt_set == "msrvtt" else webvid_prompts(annotations)), 1
    if Path(prompt_set).is_file():
        return read_prompt_file(prompt_set), 1
    raise ValueError(f"--prompts must be one of {PROMPT_SETS} or an existing .txt file, got {prompt_set!r}")


def protocol_size(prompt_set: str, prompts: list[str], per_prompt: int, default: int) -> int:
    """Samples an evaluation makes when `--num-samples` is not given: the whole protocol of `ucf101`
    (101 x 100 = 10,100) and `msrvtt` (one per test video, 2,990), `default` for any other set."""
    return len(prompts) * per_prompt if prompt_set in FULL_PROTOCOL_SETS else default


def build_samples(prompts: list[str], per_prompt: int, num_samples: int | None, seed: int) -> list[Sample]:
    """The first `num_samples` samples (default: the whole protocol, len(prompts) * per_prompt)."""
    total = len(prompts) * per_prompt if num_samples is None else num_samples
    if total < 1:
        raise ValueError(f"--num-samples must be at least 1, got {total}")
    return [Sample(i, prompts[i % len(prompts)], seed + i) for i in range(total)]
