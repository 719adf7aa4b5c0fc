"""`hdvg caption OUT`: caption the clips of existing shards again, with another model or other settings,
without downloading or cutting anything again (the paper compared captioners; users will too).

    OUT/captions/<name>/run.json           the captioner settings of this pass (a rerun must match them)
    OUT/captions/<name>/NNNNNN.parquet     one row per clip of shard NNNNNN (RECAPTION_SCHEMA)
    OUT/captions/<name>/shards/NNNNNN.tar  with --shards: shard NNNNNN with the new caption in each clip's
                                           json and txt, every other member byte for byte as it was

Each shard is captioned as a whole and committed by renames (tar first, parquet last as the marker),
so a killed pass leaves only temporaries, and a rerun skips the shards whose parquet exists.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds
from tqdm import tqdm

from hdvg.captioning import build_captioner, build_preprocessor, caption_stream, resolve_captioner
from hdvg.config import CaptionConfig, ConfigError
from hdvg.contract import SHARDS_DIR, clip_id_of_key
from hdvg.shards import committed_names, write_sample
from hdvg.storage import Store, is_remote

CAPTIONS_DIR = "captions"
RECAPTION_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("shard", pa.string()),
    ("key", pa.string()),
    ("caption", pa.string()),
    ("captioner", pa.string()),  # as a clip json records it: "<name>:<model>@<revision>"
    ("model", pa.string()),
    ("revision", pa.string()),
])


def default_run_name(cfg: CaptionConfig) -> str:
    """`blip2-opt-2.7b` for Salesforce/blip2-opt-2.7b or a folder of that name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(cfg.model.rstrip("/")).name) or cfg.name


def read_shard(tar: Path) -> list[dict]:
    """The samples of one shard as WebDataset reads them (members as bytes), in tar order."""
    return list(wds.WebDataset(str(tar), shardshuffle=False))


def committed_shards(out: Path) -> list[Path]:
    """Tars of OUT whose videos part exists, i.e. those the curation job committed."""
    return [p for p in (out / SHARDS_DIR / f"{n}.tar" for n in committed_names(Store(out))) if p.exists()]


def _settings(cfg: CaptionConfig) -> dict:
    """What decides the captions; pool sizes do not."""
    return cfg.model_dump(exclude={"num_actors", "num_gpus", "num_cpus", "batch_size", "on_missing_weights"})


def recaption(out: str | Path, cfg: CaptionConfig, name: str | None = None, write_shards: bool = False,
              max_shards: int | None = None) -> dict:
    """Caption every committed shard of `out` not yet done under OUT/captions/<name>; returns a summary.
    `max_shards` stops after that many newly committed shards (a partial pass, resumed by a rerun)."""
    if is_remote(str(out)):
        raise ConfigError(f"invalid configuration:\n  out: hdvg caption works on a local OUT, got {out}")
    out = Path(out)
    if cfg.name == "none":
        raise ConfigError("invalid configuration:\n  captioner.name: re-captioning needs a model, not 'none'")
    spec = resolve_captioner(cfg.model_copy(update={"on_missing_weights": "fail"}))  # fails before any work
    name = name or default_run_name(cfg)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or ".." in name:
        raise ConfigError(f"invalid configuration:\n  name: {name!r} must be a plain folder name")
    dest = out / CAPTIONS_DIR / name
    tmp = dest / "_tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # residue of a killed pass
    tmp.mkdir(parents=True)
    run_file = dest / "run.json"
    settings = {"captioner": spec.name, "shards": write_shards, **_settings(cfg)}
    if run_file.exists() and json.loads(run_file.read_text()) != settings:
        raise ConfigError(f"invalid configuration:\n  captioner: {dest} holds captions made with other settings "
                          f"({run_file}); choose another --name")
    run_file.write_text(json.dumps(settings, indent=2) + "\n")
    if write_shards:
        (dest / SHARDS_DIR).mkdir(exist_ok=True)

    todo = [t for t in committed_shards(out) if not (dest / f"{t.stem}.parquet").exists()]
    if max_shards is not None:
        todo = todo[:max_shards]
    captioner = build_captioner(spec) if todo else None
    preprocess = build_preprocessor(spec) if todo else None
    started, clips = time.monotonic(), 0
    # a progress line with ETA on a terminal, none in a log file
    for tar in tqdm(todo, desc="caption", unit="shard", dynamic_ncols=True, disable=not sys.stderr.isatty()):
        samples = read_shard(tar)
        batches = [[s["jpg"] for s in samples[i:i + cfg.batch_size]] for i in range(0, len(samples), cfg.batch_size)]
        captions = [c for got in caption_stream(captioner, preprocess, batches) for c in got]
        rows = [{"clip_id": clip_id_of_key(s["__key__"]), "shard": tar.name, "key": s["__key__"], "caption": c,
                 "captioner": spec.name, "model": cfg.model, "revision": spec.weights.revision}
                for s, c in zip(samples, captions)]
        if write_shards:
            _write_shard(samples, captions, spec.name, tmp / tar.name)
            os.replace(tmp / tar.name, dest / SHARDS_DIR / tar.name)
        pq.write_table(pa.Table.from_pylist(rows, schema=RECAPTION_SCHEMA), tmp / f"{tar.stem}.parquet")
        os.replace(tmp / f"{tar.stem}.parquet", dest / f"{tar.stem}.parquet")  # commit marker
        clips += len(rows)
    wall = time.monotonic() - started
    shutil.rmtree(tmp, ignore_errors=True)
    return {"name": name, "captioner": spec.name, "folder": str(dest), "shards_done": len(todo),
            "shards_total": len(committed_shards(out)), "clips": clips, "wall_s": round(wall, 3),
            "keyframes_per_second": round(clips / wall, 3) if wall > 0 else None}


def _write_shard(samples: list[dict], captions: list[str | None], captioner: str, path: Path) -> None:
    """The same samples with the new caption in json and txt; other members are written back unchanged."""
    with tarfile.open(path, "w") as tar:
        for sample, text in zip(samples, captions):
            meta = json.loads(sample["json"])
            meta["caption"], meta["captioner"] = text, captioner
            members = {k: v for k, v in sample.items() if not k.startswith("__")}  # the reader's own entries
            members["json"] = json.dumps(meta).encode()  # json keeps the fields' order as written
            members["txt"] = (text or "").encode()
            write_sample(tar, sample["__key__"], members)


def read_captions(out: str | Path, name: str) -> list[dict]:
    files = sorted((Path(out) / CAPTIONS_DIR / name).glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]
