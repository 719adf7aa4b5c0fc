"""`hdvg stats OUT`: dataset statistics of a curated OUT, from its parquet tables alone (no tar is opened).

    dataset_stats(OUT)        -> DatasetStats: counters over OUT/index (clips) and OUT/videos (inputs)
    write_figures(stats, DIR) -> the paper's Figure 2 panels as PNGs (video categories, clip durations,
                                 caption word lengths) plus the reasons inputs were filtered or failed;
                                 each plot returns the bar heights it drew, so a test can hold them
                                 against the index

Only committed parts are read (an index file whose OUT/videos file exists), the same rule `recover` applies,
so stats of a running job never count a half-written shard. The index is read file by file, a few
columns at a time, into counters: memory stays flat at HD-VG-130M's 130M rows.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from hdvg.config import ConfigError
from hdvg.contract import INDEX_DIR, INDEX_SCHEMA, MEASURE_FIELDS, STATUS_OK, VIDEOS_DIR
from hdvg.shards import committed_names, read_parts
from hdvg.storage import Store
from hdvg.tally import TALLY_COLUMNS, VideoTally

UNKNOWN_CATEGORY = "unknown"  # clips whose source carries no category (local files, bare URLs)
FIGURE_SIZE, FIGURE_DPI = (8.0, 4.5), 100  # every PNG is 800 x 450 pixels
FIGURES = {"categories": "categories.png", "durations": "clip_durations.png",
           "caption_words": "caption_words.png", "failures": "failure_reasons.png"}
# histogram bin width of each score column, drawn as score_<column>.png: the cutter's measures in the index
# (contract.MEASURE_FIELDS) and the score tables of OUT/scores (hdvg.scoring)
SCORE_BINS = {"motion_score": 0.25, "motion_min_region": 0.25, "luma_mean": 8.0, "luma_std": 4.0,
              "static_fraction": 0.05, "content_aspect": 0.05, "clip_score": 0.01, "aesthetic": 0.25}
INDEX_COLUMNS = ["start_time", "end_time", "caption", "categories", *MEASURE_FIELDS]


@dataclass
class DatasetStats:
    clips: int = 0
    clip_seconds: float = 0.0
    videos: int = 0
    videos_by_status: Counter = field(default_factory=Counter)
    source_seconds: float = 0.0                            # probed duration of every input video
    categories: Counter = field(default_factory=Counter)   # category -> clips (a clip counts once per category)
    duration_seconds: Counter = field(default_factory=Counter)  # whole seconds (floor) -> clips
    caption_words: Counter = field(default_factory=Counter)     # words of the caption -> clips
    uncaptioned: int = 0                                   # clips with a null or empty caption
    failure_classes: Counter = field(default_factory=Counter)   # reason group (hdvg.tally) -> videos
    max_clip_seconds: float = 0.0
    scores: dict[str, Counter] = field(default_factory=dict)    # score column -> bin (floor(v / width)) -> clips
    scored: Counter = field(default_factory=Counter)            # score column -> clips with a value
    duplicates: int | None = None                               # clips marked duplicate_of (None: no dedup pass)

    @property
    def hours(self) -> float:
        return self.clip_seconds / 3600

    @property
    def captioned(self) -> int:
        return self.clips - self.uncaptioned

    def summary(self) -> dict:
        words = _moments(self.caption_words)
        return {
            "clips": self.clips, "hours": round(self.hours, 6),
            "mean_clip_seconds": round(self.clip_seconds / self.clips, 3) if self.clips else None,
            "max_clip_seconds": round(self.max_clip_seconds, 3),
            "videos": self.videos, "videos_by_status": dict(self.videos_by_status),
            "source_hours": round(self.source_seconds / 3600, 6),
            "captioned_clips": self.captioned, "uncaptioned_clips": self.uncaptioned,
            "caption_words": words,
            "categories": dict(self.categories.most_common()),
            "failure_classes": dict(self.failure_classes.most_common()),
            "scores": {column: {"clips": self.scored[column], **_moments(Counter(
                {round(b * SCORE_BINS[column], 6): n for b, n in bins.items()}))}
                for column, bins in self.scores.items()},
            "duplicates": self.duplicates,
        }


def _moments(hist: Counter) -> dict:
    """mean, median, min, max of a value -> count histogram (None when empty)."""
    n = sum(hist.values())
    if not n:
        return {"mean": None, "median": None, "min": None, "max": None}
    ordered = sorted(hist.items())
    mean = sum(v * c for v, c in ordered) / n
    seen, median = 0, ordered[-1][0]
    for value, count in ordered:
        seen += count
        if seen * 2 >= n:
            median = value
            break
    return {"mean": round(mean, 3), "median": median, "min": ordered[0][0], "max": ordered[-1][0]}


def committed_parts(store: Store) -> list[tuple[str | None, str]]:
    """(index file or None, videos file) of every committed shard of OUT, in shard order."""
    names = committed_names(store)
    if not names:
        raise ConfigError(f"invalid configuration:\n  out: {store.uri} has no committed {VIDEOS_DIR}/ parts: "
                          f"not a curated OUT")
    indexes = set(store.list(INDEX_DIR))
    # a shard of only failed videos has no index part
    return [(store.path(INDEX_DIR, f"{n}.parquet") if f"{n}.parquet" in indexes else None,
             store.path(VIDEOS_DIR, f"{n}.parquet")) for n in names]


def _add_index(stats: DatasetStats, table: pa.Table) -> None:
    durations = pc.subtract(table["end_time"], table["start_time"]).to_numpy(zero_copy_only=False)
    stats.clips += table.num_rows
    stats.clip_seconds += float(durations.sum())
    if table.num_rows:
        stats.max_clip_seconds = max(stats.max_clip_seconds, float(durations.max()))
    stats.duration_seconds.update(int(math.floor(d)) for d in durations)

    words = pc.list_value_length(pc.utf8_split_whitespace(table["caption"])).to_pylist()
    stats.caption_words.update(n for n in words if n)     # null caption -> None, "" -> 0: both uncaptioned
    stats.uncaptioned += sum(1 for n in words if not n)

    for cats in table["categories"].to_pylist():
        stats.categories.update(cats if cats else [UNKNOWN_CATEGORY])
    for column in MEASURE_FIELDS:
        _add_score(stats, column, table[column])


def _add_score(stats: DatasetStats, column: str, values: pa.ChunkedArray) -> None:
    """Count the non-null `values` of a score column into its histogram."""
    values = values.drop_null()
    if len(values):
        stats.scores.setdefault(column, Counter()).update(
            math.floor(v / SCORE_BINS[column]) for v in values.to_pylist())
        stats.scored[column] += len(values)


def _add_videos(stats: DatasetStats, tally: VideoTally) -> None:
    stats.videos += tally.videos
    stats.videos_by_status.update(tally.by_status)
    stats.source_seconds += tally.seconds_in
    stats.failure_classes.update(tally.groups())


def dataset_stats(out: str | Path) -> DatasetStats:
    """Statistics of OUT (a folder or an object-storage URI) from its committed index and video tables."""
    store, stats = Store(out), DatasetStats()
    for index, _ in committed_parts(store):
        if index is not None:
            # read with the whole schema: a part written before the measures reads null there
            _add_index(stats, pq.read_table(index, columns=INDEX_COLUMNS, schema=INDEX_SCHEMA, filesystem=store.fs))
    table, _ = read_parts(store, TALLY_COLUMNS)  # a video retried with --retry-failed counts by its last row
    _add_videos(stats, VideoTally.of_parts(table))
    _add_scores(stats, store)
    return stats


def _add_scores(stats: DatasetStats, store: Store) -> None:
    """Histograms of the score tables of `hdvg score` (OUT/scores/<scorer>/NNNNNN.parquet), file by file."""
    from hdvg.scoring import SCORE_COLUMNS, SCORES_DIR

    for scorer, columns in SCORE_COLUMNS.items():
        files = [n for n in store.list(f"{SCORES_DIR}/{scorer}") if n.endswith(".parquet")]
        names = [name for name, _ in columns]
        for name in files:
            table = pq.read_table(store.path(SCORES_DIR, scorer, name), columns=names, filesystem=store.fs)
            for column in names:
                if column == "duplicate_of":
                    stats.duplicates = (stats.duplicates or 0) + len(table[column].drop_null())
                else:
                    _add_score(stats, column, table[column])
        if files and "duplicate_of" in names and stats.duplicates is None:
            stats.duplicates = 0


# ---------------------------------------------------------------- figures

def _figure():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on cluster nodes
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=FIGURE_DPI)
    return plt, fig, ax


def _save(plt, fig, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    for axis in (fig.axes[0].xaxis, fig.axes[0].yaxis):
        axis.set_major_locator(MaxNLocator(integer=True))  # counts, seconds and words are whole numbers
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def plot_categories(stats: DatasetStats, path: Path) -> dict[str, int]:
    """Horizontal bars: clips per source video category, most frequent on top."""
    plt, fig, ax = _figure()
    items = stats.categories.most_common()[::-1]  # barh draws bottom-up
    labels = [k for k, _ in items]
    bars = ax.barh(labels, [v for _, v in items], color="#4C72B0")
    ax.set_xlabel("clips")
    ax.set_title(f"Video categories ({stats.clips} clips)")
    _save(plt, fig, path)
    return {label: int(bar.get_width()) for label, bar in zip(labels, bars)}


def plot_durations(stats: DatasetStats, path: Path) -> dict[int, int]:
    """Histogram of clip durations in 1-second bins [k, k+1)."""
    plt, fig, ax = _figure()
    top = max(stats.duration_seconds, default=0)
    edges = list(range(top + 1))
    bars = ax.bar(edges, [stats.duration_seconds.get(k, 0) for k in edges], width=1.0, align="edge",
                  color="#55A868", edgecolor="white")
    ax.set_xlabel("clip duration (s)")
    ax.set_ylabel("clips")
    mean = stats.clip_seconds / stats.clips if stats.clips else 0.0
    ax.set_title(f"Clip durations (mean {mean:.2f} s, {stats.hours:.3f} h in {stats.clips} clips)")
    _save(plt, fig, path)
    return {k: int(bar.get_height()) for k, bar in zip(edges, bars) if bar.get_height()}


def plot_caption_words(stats: DatasetStats, path: Path) -> dict[int, int]:
    """Histogram of caption lengths in words (uncaptioned clips are stated in the title, not drawn)."""
    plt, fig, ax = _figure()
    lengths = sorted(stats.caption_words)
    bars = ax.bar(lengths, [stats.caption_words[n] for n in lengths], width=1.0, color="#C44E52",
                  edgecolor="white")
    ax.set_xlabel("words per caption")
    ax.set_ylabel("clips")
    title = f"Caption lengths ({stats.captioned} captioned clips"
    ax.set_title(title + (f", {stats.uncaptioned} uncaptioned)" if stats.uncaptioned else ")"))
    if not lengths:
        ax.text(0.5, 0.5, "no captions", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    _save(plt, fig, path)
    return {n: int(bar.get_height()) for n, bar in zip(lengths, bars)}


def plot_failures(stats: DatasetStats, path: Path) -> dict[str, int]:
    """Horizontal bars: input videos per failure or filter class."""
    plt, fig, ax = _figure()
    items = stats.failure_classes.most_common()[::-1]
    labels = [k for k, _ in items]
    bars = ax.barh(labels, [v for _, v in items], color="#8172B2")
    ax.set_xlabel("videos")
    ok = stats.videos_by_status.get(STATUS_OK, 0)
    ax.set_title(f"Filtered and failed inputs ({stats.videos - ok} of {stats.videos} videos)")
    if not labels:
        ax.text(0.5, 0.5, "every input video was kept", ha="center", va="center", transform=ax.transAxes)
    _save(plt, fig, path)
    return {label: int(bar.get_width()) for label, bar in zip(labels, bars)}


def plot_score(stats: DatasetStats, column: str, path: Path) -> dict[float, int]:
    """Histogram of one score column in bins of SCORE_BINS[column], keyed by each bin's lower edge."""
    plt, fig, ax = _figure()
    width, bins = SCORE_BINS[column], stats.scores[column]
    edges = sorted(bins)
    bars = ax.bar([b * width for b in edges], [bins[b] for b in edges], width=width, align="edge",
                  color="#DD8452", edgecolor="white")
    ax.set_xlabel(column)
    ax.set_ylabel("clips")
    ax.set_title(f"{column} ({stats.scored[column]} of {stats.clips} clips scored)")
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return {round(b * width, 6): int(bar.get_height()) for b, bar in zip(edges, bars)}


def write_figures(stats: DatasetStats, dest: str | Path) -> dict[str, dict]:
    """Write the four PNGs (names in FIGURES) and one score_<column>.png per score column into `dest`; return
    each figure's drawn bar heights."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    plots = {"categories": plot_categories, "durations": plot_durations,
             "caption_words": plot_caption_words, "failures": plot_failures}
    drawn = {name: plot(stats, dest / FIGURES[name]) for name, plot in plots.items()}
    for column in stats.scores:
        drawn[f"score_{column}"] = plot_score(stats, column, dest / f"score_{column}.png")
    return drawn


def format_summary(stats: DatasetStats) -> str:
    s = stats.summary()
    by = s["videos_by_status"]
    words = s["caption_words"]
    lines = [
        f"clips      {s['clips']} ({s['hours']:.3f} h, mean {s['mean_clip_seconds'] or 0:.2f} s, "
        f"max {s['max_clip_seconds']:.2f} s)",
        f"videos     {s['videos']} (ok {by.get('ok', 0)}, filtered {by.get('filtered', 0)}, "
        f"failed {by.get('failed', 0)}), {s['source_hours']:.3f} h of source video",
        f"captions   {s['captioned_clips']} captioned, {s['uncaptioned_clips']} uncaptioned"
        + (f"; words mean {words['mean']:.1f}, median {words['median']}, range {words['min']}-{words['max']}"
           if words["mean"] is not None else ""),
        "categories " + (", ".join(f"{k} {v}" for k, v in list(s["categories"].items())[:10]) or "-"),
    ]
    lines += [f"  {n} x {k}" for k, n in s["failure_classes"].items()]
    lines += [f"score      {column}: {v['clips']} clips, mean {v['mean']}, median {v['median']}, "
              f"range {v['min']}-{v['max']}" for column, v in s["scores"].items()]
    if s["duplicates"] is not None:
        lines.append(f"duplicates {s['duplicates']} clips marked duplicate_of another")
    return "\n".join(lines)


def write_summary(stats: DatasetStats, dest: str | Path) -> Path:
    path = Path(dest) / "summary.json"
    path.write_text(json.dumps(stats.summary(), indent=2) + "\n")
    return path

