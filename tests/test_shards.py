import json
import os

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from hdvg.contract import CLIP_FIELDS, SOURCE_META_FIELDS, clip_id_of_key, clip_key
from hdvg.shards import read_videos, recover, write_shards


@pytest.mark.parametrize("clip_id", ["gpAkjSy_8iY.0_0", "a.b.c", "100%.5", "x/y.1", "-rf.3", "%2E", "plain"])
def test_key_round_trips_and_has_no_dot(clip_id):
    key = clip_key(clip_id)
    assert "." not in key and "/" not in key
    assert clip_id_of_key(key) == clip_id


def test_keys_of_distinct_ids_differ():
    ids = ["a.1", "a%2E1", "a_1", "a/1", "a%2F1"]
    assert len({clip_key(i) for i in ids}) == len(ids)


def fake_clip(video_id: str, k: int) -> tuple[dict, bytes, bytes]:
    """Metadata and payloads of one clip; the bytes are opaque to the writer, so small markers do."""
    meta = {f: None for f in CLIP_FIELDS}
    meta.update(clip_id=f"{video_id}.{k}", video_id=video_id, source=f"/v/{video_id}.mp4", start_frame=10 * k,
                end_frame=10 * k + 10, start_time=0.4 * k, end_time=0.4 * k + 0.4, fps=25.0, width=1280,
                height=720, num_frames=10, caption=f"caption {k}" if k % 2 else None, captioner="test")
    return meta, f"jpg {video_id} {k}".encode(), f"mp4 {video_id} {k}".encode()


def row(video_id: str, n: int, status="ok") -> dict:
    return {"video_id": video_id, "source": f"/v/{video_id}.mp4", "status": status,
            "reason": None if status == "ok" else "why", "num_clips": n, "duration": 10.0,
            "clip_seconds": 0.4 * n, "width": 1280, "height": 720, "fps": 25.0, "wall_s": 1.0}


def test_shards_hold_whole_videos_and_read_back_with_webdataset(tmp_path):
    videos = [(row(f"v{i}.x", 3), [fake_clip(f"v{i}.x", k) for k in range(3)]) for i in range(5)]
    videos.insert(2, (row("bad", 0, "failed"), []))
    names = write_shards(tmp_path, videos, samples_per_shard=4)
    assert names == ["000000", "000001", "000002"]  # 6, 6 and 3 clips: a shard closes after whole videos
    got = {}
    for tar in sorted((tmp_path / "shards").glob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            meta = json.loads(sample["json"])
            assert clip_id_of_key(sample["__key__"]) == meta["clip_id"]
            assert sample["txt"].decode() == (meta["caption"] or "")
            got[meta["clip_id"]] = (tar.name, sample["mp4"], sample["jpg"])
    assert len(got) == 15 and got["v1.x.2"][1:] == (b"mp4 v1.x 2", b"jpg v1.x 2")
    index = pq.read_table(tmp_path / "index").to_pylist()
    assert sorted(r["clip_id"] for r in index) == sorted(got)
    assert all(got[r["clip_id"]][0] == r["shard"] for r in index)
    assert set(SOURCE_META_FIELDS) <= set(index[0])
    assert sorted(r["video_id"] for r in read_videos(tmp_path)) == sorted(["bad"] + [f"v{i}.x" for i in range(5)])
    assert os.listdir(tmp_path / "_tmp") == []


def test_pending_rows_without_clips_are_committed(tmp_path):
    write_shards(tmp_path, [(row("f1", 0, "filtered"), []), (row("f2", 0, "failed"), [])], samples_per_shard=8)
    assert not list((tmp_path / "shards").glob("*.tar"))
    assert sorted(r["status"] for r in read_videos(tmp_path)) == ["failed", "filtered"]
    assert recover(tmp_path) == ({"f1", "f2"}, 1)


def test_retry_failed_redoes_only_failed_videos_and_stats_keep_the_latest_row(tmp_path):
    from hdvg.shards import write_stats

    write_shards(tmp_path, [(row("a", 0, "failed"), []), (row("b", 1), [fake_clip("b", 0)]),
                            (row("c", 0, "filtered"), [])], samples_per_shard=1)
    assert recover(tmp_path)[0] == {"a", "b", "c"}
    assert recover(tmp_path, retry_failed="all")[0] == {"b", "c"}
    write_shards(tmp_path, [(row("a", 1), [fake_clip("a", 0)])], samples_per_shard=1)  # the retry succeeds
    stats = write_stats(tmp_path, {})
    assert stats["videos"] == 3 and stats["videos_by_status"] == {"ok": 2, "filtered": 1}
    assert recover(tmp_path, retry_failed="all")[0] == {"a", "b", "c"}
