"""`hdvg score OUT --scorers clip,aesthetic,dedup`: model scores of the clips of existing shards, one pass per
scorer, each a table keyed by clip id that `hdvg filter` and the trainers' `--where` join to the index. Nothing
is cut or written into a shard again, so thresholds are chosen at read time.

    OUT/scores/<scorer>/run.json            the settings of the pass (a rerun must match them)
    OUT/scores/<scorer>/NNNNNN.parquet      one row per clip of shard NNNNNN: clip_id, shard, key + SCORE_COLUMNS
    OUT/scores/dedup/features/NNNNNN.parquet  dedup's per-clip embeddings (the resumable part of that pass)

    clip       cosine of the CLIP image embedding of the centre keyframe and the CLIP text embedding of the
               caption (Panda-70M's matching score, on CLIPSIM's 0-1 scale); null for uncaptioned clips
    aesthetic  the LAION aesthetic predictor on the centre keyframe, about 1-10 (hdvg.aesthetic)
    dedup      `duplicate_of`: the clip id kept in place of this near-duplicate, null for kept and unique
               clips (hdvg.dedup); recomputed over the whole OUT on every run, after the new shards' features

Each shard is scored as a whole and committed by a rename (its parquet is the marker), so a killed pass
leaves only temporaries and a rerun skips the shards already scored (the `hdvg caption` protocol). Scoring runs
in this process (on its GPU when there is one), or with `actors: N` on a Ray actor pool (a GPU per actor on a
cluster), whose results this process commits in shard order.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hdvg.aesthetic import AESTHETIC_CLIP_MODEL
from hdvg.config import ConfigError, _format_errors, _parse_scalar, _set_path, read_config_file
from hdvg.storage import is_remote

SCORES_DIR = "scores"
SCORERS = ("clip", "aesthetic", "dedup")  # the order passes run in: dedup's keeper rule reads aesthetic
KEY_FIELDS = [("clip_id", pa.string()), ("shard", pa.string()), ("key", pa.string())]
SCORE_COLUMNS = {"clip": [("clip_score", pa.float64())], "aesthetic": [("aesthetic", pa.float64())],
                 "dedup": [("duplicate_of", pa.string())]}
FEATURES_DIR = "features"
FEATURES_SCHEMA = pa.schema(KEY_FIELDS + [("seconds", pa.float64()), ("embedding", pa.list_(pa.float32()))])


class ScoreConfig(BaseModel):
    """What `hdvg score` runs and with which weights (section `score` of a --config file)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    scorers: list[Literal["clip", "aesthetic", "dedup"]] = Field(
        ["dedup"], min_length=1, description="comma list of clip, aesthetic, dedup")
    clip_model: str | None = Field(None, description="CLIP weights (local folder or hub id, e.g. "
                                   "openai/clip-vit-base-patch32, CLIPSIM's) for the clip scorer and dedup's "
                                   "features; unset: no clip scorer, dedup hashes keyframes instead")
    aesthetic_clip_model: str = Field(AESTHETIC_CLIP_MODEL, description="CLIP backbone of the aesthetic head "
                                      "(LAION's head was trained on ViT-L/14 embeddings)")
    aesthetic_head: str | None = Field(None, description="LAION aesthetic head weights (.pth or .safetensors), "
                                       "e.g. sac+logos+ava1-l14-linearMSE.pth")
    dedup_threshold: float = Field(0.95, gt=0, le=1, description="cosine at or above which two keyframes are "
                                   "near-duplicates")
    dedup_exact_max: int = Field(100_000, ge=0, description="exact block search up to this many clips, FAISS "
                                 "(approximate, bounded memory) above")
    batch_size: int = Field(64, ge=1, description="keyframes per model call")
    actors: int = Field(0, ge=0, description="0: score in this process; N: a Ray actor pool of N scorers, each "
                        "loading the model once (on a cluster, give each a GPU)")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per scorer actor (unset: 1 when the cluster "
                                   "has GPUs, else 0)")
    num_cpus: float = Field(1.0, ge=0, description="CPUs per scorer actor")
    address: str | None = Field(None, description="Ray cluster of the actor pool (unset: RAY_ADDRESS, else a "
                                "private local one)")
    call_timeout_s: float = Field(1800.0, gt=0, description="wall-clock limit of one shard on an actor (counted "
                                  "while the pass waits for it): past it the pass stops, resumable")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available")

    @field_validator("scorers", mode="before")
    @classmethod
    def _comma_list(cls, value):
        return [s.strip() for s in value.split(",") if s.strip()] if isinstance(value, str) else value

    def check_weights(self) -> None:
        """A scorer asked for without its weights is a ConfigError naming the field."""
        missing = []
        if "clip" in self.scorers and not self.clip_model:
            missing.append("score.clip_model: the clip scorer needs CLIP weights (--clip-model FOLDER_OR_HUB_ID)")
        if "aesthetic" in self.scorers and not self.aesthetic_head:
            missing.append("score.aesthetic_head: the aesthetic scorer needs the LAION head's weights "
                           "(--aesthetic-head FILE)")
        if missing:
            raise ConfigError("invalid configuration:\n" + "\n".join(f"  {m}" for m in missing))


class _ScoreFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    score: ScoreConfig = ScoreConfig()


def build_score_config(file: str | Path | None = None, values: dict | None = None,
                       sets: list[str] | None = None) -> ScoreConfig:
    """Defaults < the file's `score` section < `values` (field: value) < `sets` ("field=value")."""
    tree: dict = {"score": read_config_file(file).get("score", {})} if file else {}
    for name, value in (values or {}).items():
        if value is not None:
            _set_path(tree, f"score.{name}", value)
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"invalid configuration:\n  --set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip() if key.strip().startswith("score.") else f"score.{key.strip()}",
                  _parse_scalar(raw))
    try:
        cfg = _ScoreFile.model_validate(tree).score
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None
    cfg.check_weights()
    return cfg


# ------------------------------------------------------------------------------------------ shard passes

def _device(cfg: ScoreConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _images(samples: list[dict]) -> list:
    from PIL import Image

    return [Image.open(io.BytesIO(s["jpg"])).convert("RGB") for s in samples]


def _keys(tar: Path, sample: dict) -> dict:
    return {"clip_id": json.loads(sample["json"])["clip_id"], "shard": tar.name, "key": sample["__key__"]}


def shard_pass(out: Path, dest: Path, settings: dict, schema: pa.Schema, scorer: "ShardScorer", cfg: ScoreConfig,
               max_shards: int | None = None) -> dict:
    """Write dest/NNNNNN.parquet = scorer(tar) for every committed shard without one, in this process or on
    a Ray actor pool (`cfg.actors`); the settings must match those of an earlier pass into `dest`."""
    from hdvg.recaption import committed_shards

    tmp = dest / "_tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # residue of a killed pass
    tmp.mkdir(parents=True)
    run_file = dest / "run.json"
    if run_file.exists() and json.loads(run_file.read_text()) != settings:
        raise ConfigError(f"invalid configuration:\n  score: {dest} holds scores made with other settings "
                          f"({run_file}: {run_file.read_text().strip()}); remove that folder to score again")
    run_file.write_text(json.dumps(settings, indent=2) + "\n")
    shards = committed_shards(out)
    todo = [t for t in shards if not (dest / f"{t.stem}.parquet").exists()][:max_shards]
    clips = 0
    for tar, rows in zip(todo, _scored(scorer, todo, cfg)):  # in shard order, whatever finishes first
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp / f"{tar.stem}.parquet")
        os.replace(tmp / f"{tar.stem}.parquet", dest / f"{tar.stem}.parquet")  # commit marker
        clips += len(rows)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"shards_done": len(todo), "shards_total": len(shards), "clips": clips}


def _scored(scorer: "ShardScorer", tars: list[Path], cfg: ScoreConfig):
    """The rows of each tar, in order: here, or by a pool of `cfg.actors` Ray actors (each loads the model
    once and reads the shards it is given from the shared OUT)."""
    if not cfg.actors or not tars:
        yield from (scorer(str(t)) for t in tars)
        return
    import ray
    from ray.util import ActorPool

    if not ray.is_initialized():  # `address`, RAY_ADDRESS, else a private local cluster
        ray.init(address=cfg.address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False)
    gpus = cfg.num_gpus if cfg.num_gpus is not None else float(ray.cluster_resources().get("GPU", 0) >= 1)
    actor = ray.remote(ShardScorer).options(num_gpus=gpus, num_cpus=cfg.num_cpus, max_restarts=-1,
                                            max_task_retries=2)
    actors = [actor.remote(scorer.scorer, cfg) for _ in range(cfg.actors)]
    pool = ActorPool(actors)
    for tar in tars:
        pool.submit(lambda a, t: a.__call__.remote(str(t)), tar)
    for tar in tars:
        try:
            yield pool.get_next(timeout=cfg.call_timeout_s)
        except TimeoutError:  # a hung actor: stop here; what is committed stays and a rerun goes on
            for a in actors:
                ray.kill(a)
            raise TimeoutError(f"score {scorer.scorer}: no result for {tar.name} within {cfg.call_timeout_s:g} s "
                               f"(score.call_timeout_s); the shards before it are committed, rerun to go on") from None


def _batched(samples: list[dict], size: int):
    for i in range(0, len(samples), size):
        yield samples[i:i + size]


def score_schema(scorer: str) -> pa.Schema:
    return pa.schema(KEY_FIELDS + SCORE_COLUMNS[scorer])


def _clip_rows(state: dict, cfg: ScoreConfig, tar: Path, samples: list[dict]) -> list[dict]:
    from hdvg.clip import ClipModel

    if "clip_model" not in state:
        state["clip_model"] = ClipModel(cfg.clip_model, _device(cfg))
    model = state["clip_model"]
    rows = []
    for batch in _batched(samples, cfg.batch_size):
        captions = [json.loads(s["json"])["caption"] for s in batch]
        image = model.image_embeddings(_images(batch))  # (B, D)
        said = [i for i, c in enumerate(captions) if c]
        sims = [None] * len(batch)
        if said:
            text = model.text_embeddings([captions[i] for i in said])  # (B', D)
            for i, sim in zip(said, (image[said] * text).sum(-1).double().tolist()):
                sims[i] = sim
        rows += [{**_keys(tar, s), "clip_score": sim} for s, sim in zip(batch, sims)]
    return rows


def _aesthetic_rows(state: dict, cfg: ScoreConfig, tar: Path, samples: list[dict]) -> list[dict]:
    from hdvg.aesthetic import AestheticPredictor
    from hdvg.clip import ClipModel

    if "aesthetic" not in state:
        state["aesthetic"] = AestheticPredictor(ClipModel(cfg.aesthetic_clip_model, _device(cfg)), cfg.aesthetic_head)
    return [{**_keys(tar, s), "aesthetic": v} for batch in _batched(samples, cfg.batch_size)
            for s, v in zip(batch, state["aesthetic"](_images(batch)))]


def _dedup_rows(state: dict, cfg: ScoreConfig, tar: Path, samples: list[dict]) -> list[dict]:
    """Each clip's embedding (CLIP image features, else the keyframe's phash) and seconds, for the groups."""
    from hdvg import dedup

    if cfg.clip_model:
        from hdvg.clip import ClipModel

        if "clip_model" not in state:
            state["clip_model"] = ClipModel(cfg.clip_model, _device(cfg))
        vectors = [v for b in _batched(samples, cfg.batch_size)
                   for v in state["clip_model"].image_embeddings(_images(b)).cpu().numpy()]
    else:
        vectors = [dedup.phash(s["jpg"]) for s in samples]
    metas = [json.loads(s["json"]) for s in samples]
    return [{**_keys(tar, s), "seconds": m["end_time"] - m["start_time"], "embedding": v.tolist()}
            for s, m, v in zip(samples, metas, vectors)]


ROWS = {"clip": _clip_rows, "aesthetic": _aesthetic_rows, "dedup": _dedup_rows}


class ShardScorer:
    """One scorer over whole shards: the rows of a tar. Picklable (it holds the config; models load on the
    first call and stay), so the same object scores in this process or as a Ray actor."""

    def __init__(self, scorer: str, cfg: ScoreConfig):
        self.scorer, self.cfg, self.state = scorer, cfg, {}

    def __call__(self, tar: str) -> list[dict]:
        from hdvg.recaption import read_shard

        return ROWS[self.scorer](self.state, self.cfg, Path(tar), read_shard(Path(tar)))


def _clip_pass(out: Path, cfg: ScoreConfig, max_shards: int | None) -> dict:
    settings = {"scorer": "clip", "clip_model": cfg.clip_model}
    return {**settings, **shard_pass(out, out / SCORES_DIR / "clip", settings, score_schema("clip"),
                                     ShardScorer("clip", cfg), cfg, max_shards)}


def _aesthetic_pass(out: Path, cfg: ScoreConfig, max_shards: int | None) -> dict:
    settings = {"scorer": "aesthetic", "clip_model": cfg.aesthetic_clip_model,
                "head": str(Path(cfg.aesthetic_head).resolve())}
    return {**settings, **shard_pass(out, out / SCORES_DIR / "aesthetic", settings, score_schema("aesthetic"),
                                     ShardScorer("aesthetic", cfg), cfg, max_shards)}


def _dedup_pass(out: Path, cfg: ScoreConfig, max_shards: int | None) -> dict:
    from hdvg import dedup
    from hdvg.recaption import committed_shards

    features = f"clip:{cfg.clip_model}" if cfg.clip_model else "phash"
    dest = out / SCORES_DIR / "dedup"
    settings = {"scorer": "dedup", "features": features}
    got = shard_pass(out, dest / FEATURES_DIR, settings, FEATURES_SCHEMA, ShardScorer("dedup", cfg), cfg, max_shards)
    parts = [dest / FEATURES_DIR / f"{t.stem}.parquet" for t in committed_shards(out)]
    if not all(p.exists() for p in parts):
        return {**settings, **got, "grouped": False}  # a partial pass: groups wait for every shard's features
    keys = pq.read_table(parts, columns=["clip_id", "shard", "key", "seconds"]).to_pylist()

    def blocks():
        for part in parts:
            for batch in pq.ParquetFile(part).iter_batches(batch_size=dedup.BLOCK, columns=["embedding"]):
                yield dedup.unit(np.stack(batch.column(0).to_numpy(zero_copy_only=False)))

    if len(keys) <= cfg.dedup_exact_max:
        search = "exact"
        vectors = np.concatenate(list(blocks())) if keys else np.zeros((0, 1), np.float32)
        pairs = dedup.exact_pairs(vectors, cfg.dedup_threshold)
    else:
        search = "faiss-ivf-sq8"
        dim = len(pq.read_table(parts[0], columns=["embedding"]).column(0)[0])
        pairs = dedup.faiss_pairs(blocks, dim, len(keys), cfg.dedup_threshold)
    component = dedup.groups(len(keys), pairs)
    aesthetic = _aesthetic_scores(out)
    rank = [dedup.keeper_order(k["clip_id"], k["seconds"], aesthetic.get(k["clip_id"])) for k in keys]
    kept = dedup.duplicates_of(component, rank)
    rows = [{"clip_id": k["clip_id"], "shard": k["shard"], "key": k["key"],
             "duplicate_of": None if j is None else keys[j]["clip_id"]} for k, j in zip(keys, kept)]
    tmp = dest / "_tmp"
    tmp.mkdir(exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=score_schema("dedup"))
    for shard in sorted({k["shard"] for k in keys}):
        name = f"{Path(shard).stem}.parquet"
        pq.write_table(table.filter(pc.equal(table["shard"], shard)), tmp / name)
        os.replace(tmp / name, dest / name)
    shutil.rmtree(tmp, ignore_errors=True)
    (dest / "run.json").write_text(json.dumps({**settings, "threshold": cfg.dedup_threshold, "search": search,
                                               "keeper": "highest aesthetic, else longest, else smallest clip id",
                                               "aesthetic_used": bool(aesthetic)}, indent=2) + "\n")
    return {**settings, **got, "grouped": True, "search": search, "threshold": cfg.dedup_threshold,
            "duplicates": sum(j is not None for j in kept), "groups": len({component[i] for i, j in
                                                                           enumerate(kept) if j is not None})}


def _aesthetic_scores(out: Path) -> dict[str, float]:
    files = sorted((out / SCORES_DIR / "aesthetic").glob("*.parquet"))
    if not files:
        return {}
    table = pq.read_table(files, columns=["clip_id", "aesthetic"])
    return {c: a for c, a in zip(table["clip_id"].to_pylist(), table["aesthetic"].to_pylist()) if a is not None}


PASSES = {"clip": _clip_pass, "aesthetic": _aesthetic_pass, "dedup": _dedup_pass}


def score(out: str | Path, cfg: ScoreConfig, max_shards: int | None = None) -> list[dict]:
    """Run each configured scorer over every committed shard of `out` not yet scored by it; one summary
    per scorer. `max_shards` stops each pass after that many newly scored shards (resumed by a rerun)."""
    if is_remote(str(out)):
        raise ConfigError(f"invalid configuration:\n  out: hdvg score works on a local OUT, got {out}")
    cfg.check_weights()
    out = Path(out)
    summaries = []
    for scorer in [s for s in SCORERS if s in cfg.scorers]:
        started = time.monotonic()
        summaries.append({**PASSES[scorer](out, cfg, max_shards), "folder": str(out / SCORES_DIR / scorer),
                          "wall_s": round(time.monotonic() - started, 3)})
    return summaries
