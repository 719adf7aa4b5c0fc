"""model/data.py on real shards: frame numbering as the contract's, skips counted by reason, mixing by
weight, images with the aspect filter, exact fast-forward, the evaluation pass and SR patches."""
from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from model.data import (ClipTooShort, ShardSet, ShardStream, SRPatches, VideoBytes, VideoClips, decode_frames,
                        expand_shards, frame_indices, iter_clips, iter_tar_samples, random_indices)
from tests.conftest import best_match, gray_frames, psnr, shared_file
from tests.model_builders import write_shard
from tests.model_builders import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.test_storage import s3_env  # noqa: F401 (fixture: a real S3 server on 127.0.0.1)

LAION_TAR = "webdataset_samples/video2dataset/return_all_test.tar"
# its three image samples, stored as `.mp4` members although they are JPEGs: (key, width, height)
LAION_IMAGES = (("000000014", 256, 259), ("000000025", 504, 256), ("000000356", 149, 225))


def curated_samples(curated_out: Path) -> dict[str, dict]:
    """The curated clips by clip id (member bytes by extension)."""
    samples = iter_tar_samples(expand_shards(str(curated_out / "shards" / "*.tar")))
    return {s["__key__"].replace("%2E", "."): {k: v for k, v in s.items() if k != "__url__"} for s in samples}


def laion_members() -> dict[str, dict]:
    return {s["__key__"]: s for s in iter_tar_samples([str(shared_file(LAION_TAR))])}


def test_decoded_frames_are_the_contracts_numbers(curated_out, tmp_path):
    """Frame I of decode_frames is what `ffmpeg -vf select=eq(n,I)` gives (decoded-frame numbering)."""
    clip = curated_samples(curated_out)["testvideo.1"]
    path = tmp_path / "clip.mp4"
    path.write_bytes(clip["mp4"])
    wanted = [3, 70, 149]
    frames = decode_frames(clip["mp4"], wanted, size=(160, 90))
    assert frames.shape == (3, 90, 160, 3) and frames.dtype == np.uint8
    reference = gray_frames(path, 0, 149)
    for index, frame in zip(wanted, frames):
        gray = (frame.astype(np.float64) @ [0.299, 0.587, 0.114]).ravel()
        best = reference[best_match(gray, reference)]
        assert psnr(gray, reference[index]) > 30 and psnr(gray, reference[index]) >= psnr(gray, best) - 0.5


def test_skipping_unreferenced_frames_before_the_window_changes_no_pixel(curated_out):
    """B-frames before the window are not decoded (x264's GOP 250 clips have keyframes only at 0): fewer
    frames decoded, the same pixels as a decode of every frame."""
    clip = curated_samples(curated_out)["testvideo.1"]["mp4"]
    every = decode_frames(clip, list(range(150)), size=(160, 90))
    window = list(range(100, 132, 2))
    video = VideoBytes(clip)
    np.testing.assert_array_equal(video.decode(window, size=(160, 90)), every[window])
    assert video.frames_decoded < 131


def test_decoding_starts_at_the_last_keyframe(curated_out):
    """On a short-GOP re-encode, frames past the first keyframes decode from the nearest keyframe and equal a
    decode from the start."""
    source = VideoBytes(curated_samples(curated_out)["testvideo.1"]["mp4"])
    frames = source.decode(list(range(48)), size=(64, 36))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 36, "yuv420p"
        stream.options = {"g": "8", "crf": "18"}
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        out.mux(stream.encode(None))
    short_gop = VideoBytes(buffer.getvalue())
    late = short_gop.decode([41, 45])
    assert short_gop.frames_decoded <= 16  # from the keyframe at 40, not from frame 0
    full = decode_frames(buffer.getvalue(), list(range(48)))
    np.testing.assert_array_equal(late, full[[41, 45]])


def test_frame_indices_stride_and_bounds():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = frame_indices(40, 16, 2, rng)
        assert np.all(np.diff(idx) == 2) and idx[0] >= 0 and idx[-1] < 40
        starts.add(idx[0])
    assert starts == set(range(10))  # every start of 40 - 31 + 1 is drawn
    with pytest.raises(ClipTooShort):
        frame_indices(30, 16, 2, rng)


def test_stream_skips_and_counts_corrupt_short_and_uncaptioned(curated_out, tmp_path):
    """A shard with a good clip, an uncaptioned clip, a too-short clip and a JPEG stored as `.mp4`: only the
    good clip is trained; every other sample is counted under its reason; nothing raises."""
    clips, jpeg = curated_samples(curated_out), laion_members()["000000025"]
    write_shard(tmp_path / "mixed.tar", [
        clips["testvideo.1"],                                                    # 150 frames, captioned
        clips["testvideo.3"],                                                    # uncaptioned
        clips["testvideo.0"],                                                    # 30 frames < 16 at stride 2
        {"__key__": "jpeg_as_mp4", "mp4": jpeg["mp4"], "txt": jpeg["txt"]},      # undecodable
    ])
    spec = VideoClips(num_frames=16, frame_stride=2, width=64, height=36)
    batches = iter(ShardStream([ShardSet(str(tmp_path / "*.tar"))], spec, batch_size=1, seed=1, shuffle_buffer=2))
    seen = Counter()
    for _ in range(3):
        batch = next(batches)
        seen.update(batch["clip_id"])
        assert batch["frames"].shape == (1, 16, 36, 64, 3)
        assert batch["caption"] == ["a slideshow of photographs of a city"]
    assert set(seen) == {"testvideo.1"}
    counts = batch["counts"]
    assert counts["samples"] == 3
    assert counts["undecodable"] >= 1 and counts["too_short"] >= 1 and counts["uncaptioned"] >= 1
    assert batch["position"] == 3 + counts["undecodable"] + counts["too_short"] + counts["uncaptioned"]

    # trained with empty text when asked: the uncaptioned clip comes through, caption ""
    empty = VideoClips(num_frames=4, frame_stride=1, width=64, height=36, uncaptioned="empty")
    stream = iter(ShardStream([ShardSet(str(tmp_path / "*.tar"))], empty, batch_size=1, seed=1, shuffle_buffer=2))
    captions = {}
    while "testvideo.3" not in captions:
        batch = next(stream)
        captions[batch["clip_id"][0]] = batch["caption"][0]
    assert captions["testvideo.3"] == ""


def image_shard(path: Path) -> Path:
    """An img2dataset-layout shard (jpg + txt) of the real LAION images of the shared tar."""
    members = laion_members()
    return write_shard(path, [{"__key__": k, "jpg": members[k]["mp4"], "txt": members[k]["txt"]}
                            for k, _, _ in LAION_IMAGES])


def test_images_are_single_frames_and_narrow_ones_dropped(tmp_path):
    image_shard(tmp_path / "images.tar")
    spec = VideoClips(width=64, height=36)
    batch = next(iter(ShardStream([ShardSet(str(tmp_path / "images.tar"))], spec, batch_size=2, seed=0)))
    assert batch["kind"] == "image" and batch["frames"].shape == (2, 1, 36, 64, 3)
    assert set(batch["clip_id"]) == {"000000025"}  # the only image at least 4:3 wide
    assert batch["counts"]["image_aspect"] >= 2


def test_shard_sets_mix_by_weight(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    image_shard(tmp_path / "a" / "000000.tar"), image_shard(tmp_path / "b" / "000000.tar")
    stream = ShardStream([ShardSet(str(tmp_path / "a" / "*.tar"), 0.7), ShardSet(str(tmp_path / "b" / "*.tar"), 0.3)],
                         VideoClips(), batch_size=1)
    raw = stream._raw(worker=0, stats=Counter())
    drawn = Counter(Path(next(raw)["__url__"]).parent.name for _ in range(3000))
    assert abs(drawn["a"] / 3000 - 0.7) < 0.03


def test_fast_forward_resumes_the_same_batches(tmp_path):
    """positions=[p] from a consumed batch resumes with exactly the batches that followed it."""
    image_shard(tmp_path / "000000.tar"), image_shard(tmp_path / "000001.tar")

    def stream(positions=None):
        spec = VideoClips(width=32, height=18, min_image_aspect=0)
        return iter(ShardStream([ShardSet(str(tmp_path / "*.tar"))], spec, batch_size=2, seed=5, shuffle_buffer=4,
                                positions=positions))

    run = stream()
    batches = [next(run) for _ in range(6)]
    resumed = stream(positions=[batches[2]["position"]])
    for expected in batches[3:]:
        got = next(resumed)
        assert got["clip_id"] == expected["clip_id"]
        np.testing.assert_array_equal(got["frames"], expected["frames"])
    with pytest.raises(ValueError, match="num_workers"):
        next(stream(positions=[1, 2]))


def test_fast_forward_keeps_the_partly_filled_batch_of_the_other_kind(curated_out, tmp_path):
    """Images and videos mixed: a batch's `resume_at` names the samples held in a partial batch of the other
    kind, and the resumed stream makes them again, so no sample is lost and the batches that follow are the
    same (a plain position would throw the held ones away)."""
    image_shard(tmp_path / "images.tar")

    def stream(positions=None):
        spec = VideoClips(num_frames=2, width=32, height=18, min_image_aspect=0)
        return iter(ShardStream([ShardSet(str(curated_out / "shards" / "*.tar")), ShardSet(str(tmp_path / "*.tar"))],
                                spec, batch_size=2, seed=1, shuffle_buffer=2, positions=positions))

    run = stream()
    batches = [next(run) for _ in range(8)]
    cut = next(i for i, b in enumerate(batches[:-2]) if b["resume_at"][1])  # something held after batch i
    assert {b["kind"] for b in batches} == {"image", "video"}
    resumed = stream(positions=[batches[cut]["resume_at"]])
    for expected in batches[cut + 1:]:
        got = next(resumed)
        assert got["clip_id"] == expected["clip_id"] and got["resume_at"] == expected["resume_at"]
        np.testing.assert_array_equal(got["frames"], expected["frames"])
    dropping = stream(positions=[batches[cut]["position"]])
    assert [next(dropping)["clip_id"] for _ in batches[cut + 1:]] != [b["clip_id"] for b in batches[cut + 1:]]


def test_evaluation_pass_in_order_central_frames(curated_out, tmp_path):
    clips = list(iter_clips(str(curated_out / "shards" / "*.tar"), num_frames=16, size=(86, 48)))
    assert [c.clip_id for c in clips] == ["gpAkjSy_8iY.0_0.0", "testvideo.0", "testvideo.1", "testvideo.2",
                                           "testvideo.3"]
    assert all(c.frames.shape == (16, 48, 86, 3) and c.frames.dtype == np.uint8 for c in clips)
    assert clips[-1].caption is None and clips[0].caption.startswith("a man in a suit")
    # full frame: testvideo.0 has 30 frames, its central 16 are 7..22
    write_shard(tmp_path / "short.tar", [curated_samples(curated_out)["testvideo.0"]])
    (clip,) = iter_clips(str(tmp_path / "short.tar"), num_frames=16)
    np.testing.assert_array_equal(clip.frames, decode_frames(curated_samples(curated_out)["testvideo.0"]["mp4"],
                                                             list(range(7, 23))))
    assert clip.frames.shape == (16, 720, 1280, 3)
    with pytest.raises(ClipTooShort, match="testvideo.0"):
        list(iter_clips(str(tmp_path / "short.tar"), num_frames=31))


def test_sr_patches_are_native_resolution_crops(curated_out, tmp_path):
    sample = curated_samples(curated_out)["testvideo.1"]
    write_shard(tmp_path / "one.tar", [sample])
    batch = next(iter(ShardStream([ShardSet(str(tmp_path / "one.tar"))], SRPatches(num_frames=3, crop=64),
                                  batch_size=2, seed=0, shuffle_buffer=1)))
    assert batch["frames"].shape == (2, 3, 64, 64, 3) and batch["kind"] == "video"
    # called alone: the frames are the first draws of its generator; each patch is an unscaled crop of one
    patches = SRPatches(num_frames=3, crop=64)(sample, np.random.default_rng(7), Counter())["frames"]
    frames = decode_frames(sample["mp4"], random_indices(150, 3, np.random.default_rng(7)))
    for patch, frame in zip(patches, frames):
        ys, xs = np.nonzero((frame[:-63, :-63] == patch[0, 0]).all(axis=-1))
        assert any((frame[y:y + 64, x:x + 64] == patch).all() for y, x in zip(ys, xs))


def test_shards_read_from_object_storage(curated_out, s3_env, tmp_path):
    """`s3://` shard patterns (a real S3 server on 127.0.0.1) are globbed and streamed through pyarrow.fs."""
    import uuid

    from hdvg.storage import Store

    clips = curated_samples(curated_out)
    uri = f"s3://hdvg/{uuid.uuid4().hex[:8]}"
    for name, keys in (("000000.tar", ["testvideo.1"]), ("000001.tar", ["testvideo.2", "testvideo.3"])):
        Store(uri).publish(write_shard(tmp_path / name, [clips[k] for k in keys]), "shards", name)
    assert expand_shards(f"{uri}/shards/*.tar") == [f"{uri}/shards/000000.tar", f"{uri}/shards/000001.tar"]
    assert [c.clip_id for c in iter_clips(f"{uri}/shards/*.tar", num_frames=2, size=(32, 18))] == \
        ["testvideo.1", "testvideo.2", "testvideo.3"]
    batch = next(iter(ShardStream([ShardSet(f"{uri}/shards/*.tar")], VideoClips(4, 1, 32, 18), batch_size=2,
                                  shuffle_buffer=2)))
    assert batch["frames"].shape == (2, 4, 18, 32, 3)
