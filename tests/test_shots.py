"""Transition-free clips on real footage: single-shot pieces of ../shared/data spliced by ffmpeg with hard cuts,
dissolves and fades through black at known frames (tests/spliced.py), cut by the real cutter.

The set is 8 pieces of 1.5-2 s at 320x180: TransNetV2 reads 48x27 frames whatever the source size, and a
smaller source keeps the decode, the encode and the model (about 350 frames) to some 20 CPU-seconds.
bench/bench_detect.py runs the full set (21 pieces, 1280x720) for every detector.
"""
import pytest

from hdvg.config import ClipConfig, DetectConfig, EncodeConfig
from hdvg.cutting import SceneClips, cut_video
from hdvg.probe import probe
from hdvg.scenes import Span, detect_scenes
from tests.conftest import SHARED, shared_file
from tests.spliced import PIECES, Piece, build_spliced, scores, shots_of, spans_outside_shots

JOINS = [("cut", 0), ("fade", 15), ("cut", 0), ("fadeblack", 12), ("fade", 20), ("cut", 0), ("fade", 10)]


@pytest.fixture(scope="module")
def spliced(tmp_path_factory):
    chosen = [PIECES[i] for i in (0, 3, 5, 9, 12, 16, 18, 20)]
    pieces = [Piece(p.path, p.start_s, 45 if kind == "cut" else 60) for p, (kind, _) in zip(chosen, JOINS + [("", 0)])]
    for p in pieces:
        shared_file(p.path)  # skip (or fail under HDVG_REQUIRE_MEDIA=1) without the media
    out = tmp_path_factory.mktemp("spliced") / "spliced.mp4"
    boundaries, num_frames = build_spliced(SHARED, pieces, JOINS, out, size=(320, 180))
    return out, boundaries, num_frames


@pytest.fixture(scope="module")
def cuts_by_detector(spliced, tmp_path_factory):
    """The real cutter over the spliced video with each detector: (scan, clips)."""
    src, _, _ = spliced
    info = probe(src)
    clip_cfg = ClipConfig(min_clip_seconds=0.5)
    return {d: cut_video(src, info, SceneClips(clip_cfg, info.fps), tmp_path_factory.mktemp(d),
                         EncodeConfig(preset="ultrafast"), DetectConfig(detector=d), threads=2)
            for d in ("transnetv2", "adaptive")}


def test_transnetv2_clips_hold_one_shot_each(spliced, cuts_by_detector):
    """TransNetV2 finds the cuts and the gradual transitions (F1 >= 0.9), no clip holds frames of two shots,
    and no frame of a dissolve is in a clip."""
    src, boundaries, num_frames = spliced
    scan, clips = cuts_by_detector["transnetv2"]
    assert scan.num_frames == num_frames
    got = scores(scan.transitions, boundaries)
    assert got["f1"] >= 0.9, got
    assert got["by_kind"]["fade"] == (3, 3) and got["by_kind"]["fadeblack"] == (1, 1), got
    outside = spans_outside_shots([c.span for c in clips], shots_of(boundaries, num_frames))
    assert outside == [], f"clips spanning a shot boundary: {outside}"
    for b in boundaries:
        if b.kind == "fade":  # a dissolve mixes two shots in every frame
            inner = range(b.span.start + 2, b.span.end - 2)
            assert not any(f in range(c.span.start, c.span.end) for c in clips for f in inner), b


def test_pyscenedetect_misses_dissolves_on_the_same_set(spliced, cuts_by_detector):
    """What TransNetV2 is for: AdaptiveDetector (the paper's tool, hdvg's detector before TransNetV2) keeps
    clips across dissolves of this set."""
    src, boundaries, num_frames = spliced
    scan, clips = cuts_by_detector["adaptive"]
    got = scores(scan.transitions, boundaries)
    assert got["by_kind"]["fade"][0] < 3 and got["f1"] < scores(cuts_by_detector["transnetv2"][0].transitions,
                                                                 boundaries)["f1"], got
    assert spans_outside_shots([c.span for c in clips], shots_of(boundaries, num_frames))


def test_actor_pool_path_gives_the_in_task_transitions(spliced, cuts_by_detector, ray_local):
    """The GPU path's actor (DetectActor, on CPU here: device cpu, no GPU asked): the video task sends its
    windows in batches of gpu_batch_windows and gets the transitions the in-task run found."""
    import ray

    from hdvg.pipeline import DetectActor, remote_predictor

    src, _, _ = spliced
    actors = [ray.remote(DetectActor).options(num_cpus=0).remote(None, "cpu")]
    scan = detect_scenes(src, DetectConfig(detector="transnetv2", gpu_batch_windows=3),
                         predict=remote_predictor(actors, "spliced"))
    assert scan.transitions == cuts_by_detector["transnetv2"][0].transitions


def test_device_cuda_without_gpus_is_a_start_up_error(ray_local, tmp_path):
    from hdvg.config import ConfigError, build_config
    from hdvg.pipeline import detect_device

    cfg = build_config(values={"input": str(tmp_path), "output": str(tmp_path / "out"), "detect.device": "cuda"})
    with pytest.raises(ConfigError, match="detect.device: cuda, but the Ray cluster has no GPU"):
        detect_device(cfg)
    assert detect_device(cfg.model_copy(update={"detect": DetectConfig(device="auto")})) == "cpu"


@pytest.mark.slow
def test_curate_with_the_defaults_gives_clips_of_one_shot_each(tmp_path, ray_local):
    """`hdvg curate`'s job with every default (TransNetV2 on CPU here) on the spliced set at 1280x720: every
    clip it writes lies inside one shot."""
    import pyarrow.parquet as pq

    from hdvg.config import build_config
    from hdvg.pipeline import run_curation

    chosen = [PIECES[i] for i in (0, 3, 5, 9, 12, 16, 18, 20)]
    pieces = [Piece(p.path, p.start_s, 45 if kind == "cut" else 60) for p, (kind, _) in zip(chosen, JOINS + [("", 0)])]
    for p in pieces:
        shared_file(p.path)
    (tmp_path / "in").mkdir()
    boundaries, num_frames = build_spliced(SHARED, pieces, JOINS, tmp_path / "in" / "spliced.mp4")
    stats = run_curation(build_config(values={"input": str(tmp_path / "in"), "output": str(tmp_path / "out"),
                                              "captioner.name": "none"}))
    assert stats["videos_by_status"] == {"ok": 1}
    spans = [Span(r["start_frame"], r["end_frame"]) for r in pq.read_table(tmp_path / "out" / "index").to_pylist()]
    assert len(spans) >= 4 and spans_outside_shots(spans, shots_of(boundaries, num_frames)) == []
