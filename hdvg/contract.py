"""The output contract, defined once: folder layout, WebDataset keys, sample json fields, parquet schemas.

The shard writer, `hdvg validate`, the trainers' loaders and the tests all import these names.

    OUT/shards/NNNNNN.tar     WebDataset shards; per clip: KEY.mp4, KEY.jpg, KEY.json, KEY.txt
    OUT/index/NNNNNN.parquet  one row per clip of shard NNNNNN (INDEX_SCHEMA: CLIP_SCHEMA, MEASURE_SCHEMA,
                              shard, key)
    OUT/videos/NNNNNN.parquet one row per input video finished with shard NNNNNN (VIDEO_SCHEMA);
                              written last, it is the commit marker of the shard
    OUT/stats.json            totals over all committed parts
    OUT/_lock/                the claim of the one job writing OUT (job id, host, pid, heartbeat)
    OUT/_quarantine/          damaged commits moved aside on resume (their videos are redone)
    OUT/_tmp/                 staging of uncommitted parts
"""
from __future__ import annotations

import pyarrow as pa

SHARDS_DIR, INDEX_DIR, VIDEOS_DIR, TMP_DIR, STATS_FILE = "shards", "index", "videos", "_tmp", "stats.json"
LOCK_DIR, QUARANTINE_DIR = "_lock", "_quarantine"
SAMPLE_MEMBERS = ("mp4", "jpg", "json", "txt")

STATUS_OK, STATUS_FILTERED, STATUS_FAILED = "ok", "filtered", "failed"

# Fields of each clip's json member, in order. `end_frame` is exclusive; frames are 0-based indices of
# decoded frames in presentation order (what `ffmpeg -vf select=eq(n\,I)` numbers I), times are
# seconds from the source's first frame.
CLIP_SCHEMA = pa.schema([
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("source", pa.string()),
    ("start_frame", pa.int64()),
    ("end_frame", pa.int64()),
    ("start_time", pa.float64()),
    ("end_time", pa.float64()),
    ("fps", pa.float64()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("num_frames", pa.int64()),
    ("caption", pa.string()),
    ("captioner", pa.string()),
    # source metadata when the source provides it (YouTube via yt-dlp), else null
    ("title", pa.string()),
    ("channel", pa.string()),
    ("categories", pa.list_(pa.string())),
    ("upload_date", pa.string()),
    ("license", pa.string()),
])
CLIP_FIELDS = tuple(CLIP_SCHEMA.names)
SOURCE_META_FIELDS = ("title", "channel", "categories", "upload_date", "license")

# The cheap per-clip scores the cutter measures on its own decode (hdvg.measures; definitions and units in
# docs/scores.md). Optional: an OUT written before them has no such columns and its readers read null, and a
# clip too short or too dark to measure has nulls; the sample json carries them after CLIP_FIELDS.
MEASURE_SCHEMA = pa.schema([
    ("motion_score", pa.float64()),       # mean optical-flow magnitude, pixels per frame at 256 px width
    ("motion_min_region", pa.float64()),  # the same over the stillest cell of a 4x4 grid
    ("luma_mean", pa.float64()),          # BT.601 luma, 0-255
    ("luma_std", pa.float64()),
    ("static_fraction", pa.float64()),    # share of sampled frames almost equal to the next one, 0-1
    ("content_aspect", pa.float64()),     # displayed width / height of the picture inside black bars
])
MEASURE_FIELDS = tuple(MEASURE_SCHEMA.names)

INDEX_SCHEMA = pa.schema([*CLIP_SCHEMA, *MEASURE_SCHEMA, pa.field("shard", pa.string()), pa.field("key", pa.string())])

VIDEO_SCHEMA = pa.schema([
    ("video_id", pa.string()),
    ("source", pa.string()),
    ("status", pa.string()),
    ("reason", pa.string()),
    ("failure", pa.string()),        # failed rows: transient | permanent (hdvg.failures); else null
    ("num_clips", pa.int64()),
    ("duration", pa.float64()),      # seconds of source video (null when it could not be probed)
    ("clip_seconds", pa.float64()),  # seconds of video kept in clips
    ("width", pa.int64()),           # displayed size of the source
    ("height", pa.int64()),
    ("fps", pa.float64()),
    ("wall_s", pa.float64()),        # seconds the worker spent on this video
    # how the source was obtained (null where not downloaded): the format yt-dlp chose, and the number
    # of download attempts (1 + retries of transient failures)
    ("format", pa.string()),
    ("attempts", pa.int64()),
    ("note", pa.string()),           # non-fatal remarks, e.g. released scenes clamped to the source end
])


def clip_key(clip_id: str) -> str:
    """WebDataset key of a clip. WebDataset splits a member name at the first '.' of its basename, and
    HD-VG clip ids contain dots (`gpAkjSy_8iY.0_0`), so '%', '.' and '/' are percent-escaped: the key
    has no dot, is unique per clip id, and `clip_id_of_key` reverses it exactly."""
    return clip_id.replace("%", "%25").replace(".", "%2E").replace("/", "%2F")


def clip_id_of_key(key: str) -> str:
    return key.replace("%2F", "/").replace("%2E", ".").replace("%25", "%")


def shard_name(number: int) -> str:
    return f"{number:06d}"
