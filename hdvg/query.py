"""`hdvg filter OUT --where SQL`: the clips a predicate over the index and the score tables keeps, chosen at
read time (no shard is rewritten). DuckDB evaluates the predicate over one view, `clips`:

    clips = OUT/index (committed parts)  LEFT JOIN  OUT/scores/<scorer>/*.parquet  USING (clip_id)

so every index column (the cutter's measures `motion_score`, `luma_mean`, ... included: null in parts written
before them) and every score column (`clip_score`, `aesthetic`, `duplicate_of`, ...) can be used;
a clip a scorer has not scored reads null there (and `aesthetic >= 4.75` is false for it, SQL's rule). The
predicate is any DuckDB boolean expression; its top-level ANDs are reported one by one (DuckDB's own parser
splits them: json_serialize_sql), each with the clips and hours it keeps alone and together with the ones
before it. OUT is a local folder or object storage (`s3://`, `gs://`: hdvg.storage), read through pyarrow
datasets.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from hdvg.config import ConfigError
from hdvg.contract import INDEX_DIR, INDEX_SCHEMA
from hdvg.scoring import KEY_FIELDS, SCORE_COLUMNS, SCORES_DIR
from hdvg.shards import committed_names
from hdvg.storage import Store

HOURS = "coalesce(sum(end_time - start_time), 0) / 3600"
_PREFIX = "SELECT * FROM clips WHERE "


def connect(out: str | Path):
    """A DuckDB connection with the view `clips` over `out` (a local folder or object storage: the tables are
    scanned through pyarrow datasets on OUT's filesystem, only the columns and rows a query needs)."""
    import duckdb

    store = Store(out)
    indexes = set(store.list(INDEX_DIR))
    # a commit of only failed videos has no index part
    parts = [f"{n}.parquet" for n in committed_names(store) if f"{n}.parquet" in indexes]
    if not parts:
        raise ConfigError(f"invalid configuration:\n  out: {out} has no committed index parts")
    db = duckdb.connect()
    # read with the whole schema: a part written before the cutter's measures reads null there
    db.register("idx", store.dataset(INDEX_DIR, parts, INDEX_SCHEMA))
    joins = ""
    for scorer, columns in SCORE_COLUMNS.items():
        folder = f"{SCORES_DIR}/{scorer}"
        files = [n for n in store.list(folder) if n.endswith(".parquet")]
        if files:  # the score columns alone, keyed by clip_id (shard and key are the index's)
            db.register(f"score_{scorer}", store.dataset(folder, files, pa.schema([KEY_FIELDS[0], *columns])))
            joins += f" LEFT JOIN score_{scorer} USING (clip_id)"
    db.execute(f"CREATE VIEW clips AS SELECT * FROM idx{joins}")
    return db


def conditions(db, where: str) -> list[str]:
    """The top-level AND terms of `where` as DuckDB prints them back; a syntax error is a ConfigError."""
    tree = json.loads(db.execute("SELECT json_serialize_sql(?)", [_PREFIX + f"({where})"]).fetchone()[0])
    if tree.get("error") or len(tree["statements"]) != 1:
        raise ConfigError(f"invalid configuration:\n  where: {tree.get('error_message', 'one expression')} "
                          f"(in {where!r})")
    node = tree["statements"][0]["node"]
    clause = node["where_clause"]
    terms = clause["children"] if clause["type"] == "CONJUNCTION_AND" else [clause]
    out = []
    for term in terms:
        one = {**tree, "statements": [{"node": {**node, "where_clause": term}}]}
        sql = db.execute("SELECT json_deserialize_sql(?::JSON)", [json.dumps(one)]).fetchone()[0]
        out.append(sql.removeprefix(_PREFIX))
    return out


@contextmanager
def predicate_errors(db, where: str):
    """DuckDB's errors in evaluating `where` (a column that is neither in the index nor in a score table, a
    type mismatch) as a ConfigError naming the columns there are."""
    import duckdb

    try:
        yield
    except duckdb.Error as exc:
        columns = [r[0] for r in db.execute("DESCRIBE clips").fetchall()]
        raise ConfigError(f"invalid configuration:\n  where: {str(exc).splitlines()[0]} (in {where!r}); the "
                          f"columns are {', '.join(columns)} (score columns come from `hdvg score OUT --scorers ...`)"
                          ) from None


def select(out: str | Path, where: str, output: str | Path | None = None) -> dict:
    """Counts of the clips and hours each condition keeps, alone and cumulatively, and of the whole predicate;
    with `output`, the kept clips' index rows with their scores as one parquet file."""
    db = connect(out)
    terms = conditions(db, where)
    with predicate_errors(db, where):
        total = db.execute(f"SELECT count(*), {HOURS} FROM clips").fetchone()
        rows, so_far = [], []
        for term in terms:
            so_far.append(f"({term})")
            alone = db.execute(f"SELECT count(*), {HOURS} FROM clips WHERE {term}").fetchone()
            cumulative = db.execute(f"SELECT count(*), {HOURS} FROM clips WHERE {' AND '.join(so_far)}").fetchone()
            rows.append({"condition": term, "clips": alone[0], "hours": alone[1],
                         "clips_cumulative": cumulative[0], "hours_cumulative": cumulative[1]})
        kept = db.execute(f"SELECT count(*), {HOURS} FROM clips WHERE {where}").fetchone()
        if output:
            Path(output).parent.mkdir(parents=True, exist_ok=True)
            db.execute(f"COPY (SELECT * FROM clips WHERE {where} ORDER BY shard, key) TO "
                       f"'{str(output).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)")
    return {"total_clips": total[0], "total_hours": total[1], "conditions": rows, "clips": kept[0],
            "hours": kept[1], "output": str(output) if output else None}


def selected_keys(out: str | Path, where: str) -> dict[str, set[str]]:
    """{shard tar name: keys of its clips the predicate keeps}: what a loader streams from OUT/shards."""
    db = connect(out)
    conditions(db, where)  # a syntax error named as such
    with predicate_errors(db, where):
        rows = db.execute(f"SELECT shard, key FROM clips WHERE {where}").fetchall()
    keys: dict[str, set[str]] = {}
    for shard, key in rows:
        keys.setdefault(shard, set()).add(key)
    return keys


def format_selection(got: dict) -> str:
    lines = [f"hdvg filter: {got['total_clips']} clips, {got['total_hours']:.4f} h in the index"]
    for r in got["conditions"]:
        lines.append(f"  {r['condition']}: keeps {r['clips']} clips ({r['hours']:.4f} h) alone, "
                     f"{r['clips_cumulative']} ({r['hours_cumulative']:.4f} h) with those above")
    lines.append(f"hdvg filter: kept {got['clips']} clips, {got['hours']:.4f} h"
                 + (f" -> {got['output']}" if got["output"] else ""))
    return "\n".join(lines)
