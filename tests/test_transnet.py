"""TransNetV2 streamed through the cutter's decode: the package's network and packaged weights (no download),
our windowing against the package's own `predict_frames`, and the transitions read from its two heads."""
import numpy as np
import pytest
import torch

from hdvg.config import DetectConfig
from hdvg.frames import SmallFrames
from hdvg.scenes import DecodedVideo, Span, detect_scenes
from hdvg.transnet import (CONTEXT, LONGEST_RUN, STEP, Transitions, TransNetFinder, Windows, load_network,
                           packaged_weights, predict_windows, strip_of, windows_of)
from tests.conftest import SHARED, shared_file
from tests.spliced import Piece, build_spliced

# 119 frames at 640x360: three windows, the last one padded past the video's end
SNAKE = "repo_videos/panda70m_samples/A3y8N3nnVJ8.68.mp4"


@pytest.fixture(scope="module")
def net():
    torch.set_num_threads(2)
    return load_network()


@pytest.fixture(scope="module")
def snake_frames() -> np.ndarray:
    small = SmallFrames()
    with DecodedVideo(shared_file(SNAKE)) as video:
        return np.stack([small(frame) for _, frame, _ in video])  # (119, 27, 48, 3)


def test_weights_are_packaged_in_the_wheel():
    assert packaged_weights().is_file() and packaged_weights().stat().st_size > 20e6


def test_small_frames_are_the_models_48x27_rgb(snake_frames):
    assert snake_frames.shape == (119, 27, 48, 3) and snake_frames.dtype == np.uint8
    assert 20 < snake_frames.mean() < 235 and snake_frames.std() > 5  # a picture, not a blank


def test_streamed_windows_score_as_the_packages_predict_frames(net, snake_frames):
    """Our windows (pushed one frame at a time, batched) give the package's own scores for every frame."""
    want_single, want_many = net.predict_frames(torch.from_numpy(snake_frames), quiet=True)
    windows = Windows()
    batch = [w for w in (windows.push(f) for f in snake_frames) if w is not None] + windows.finish()
    assert len(batch) == 3 and windows.emitted * STEP >= len(snake_frames)
    np.testing.assert_array_equal(windows_of(strip_of(np.stack(batch))), np.stack(batch))
    assert len(strip_of(np.stack(batch))) == 3 * STEP + CONTEXT * 2  # what a GPU actor gets: each frame once
    single, many = predict_windows(net, np.stack(batch))
    n = len(snake_frames)
    np.testing.assert_allclose(single.reshape(-1)[:n], want_single.numpy(), atol=1e-5)
    np.testing.assert_allclose(many.reshape(-1)[:n], want_many.numpy(), atol=1e-5)


@pytest.mark.parametrize("batch_windows", [1, 2])
def test_finder_batches_give_the_same_transitions(net, batch_windows):
    """A real cut (two single-shot clips joined by ffmpeg's concat at frame 119) is found at its frame,
    whatever the batch; frames are decided only up to what the model has scored."""
    finder = TransNetFinder(DetectConfig(detector="transnetv2"), lambda w: predict_windows(net, w), batch_windows)
    found = []
    for path in (SNAKE, "repo_videos/panda70m_samples/1r2eNjJ__mE.20.mp4"):
        with DecodedVideo(shared_file(path)) as video:
            for _, frame, _ in video:
                found += finder.push(finder.windows.pushed, frame)
                assert finder.decided <= finder.windows.pushed
    assert finder.decided < finder.windows.pushed  # the last frames wait for the end
    found += finder.finish()
    assert finder.decided == 119 + 71
    assert found == [Span(119, 119)]  # a hard cut: no frame dropped


def test_transitions_from_the_two_heads():
    t = Transitions(single_threshold=0.5, many_threshold=0.3)
    single, many = np.zeros(12, np.float32), np.zeros(12, np.float32)
    single[2] = many[2] = 0.9                       # one frame marked: a hard cut after it
    many[6:9], single[7] = 0.8, 0.7                 # a dissolve: frames 6, 7, 8
    assert t.add(single, many) == [Span(3, 3)]
    assert t.decided == 6                           # the dissolve's run may go on
    single, many = np.zeros(12, np.float32), np.zeros(12, np.float32)
    many[0:2] = 0.6                                 # the all-frames head alone: no transition
    many[6:8], many[9:11], single[9] = 0.6, 0.6, 0.9  # two runs 1 frame apart (a fade's black middle): one
    assert t.add(single, many) == [Span(6, 9)] and t.decided == 18  # the dissolve ends 3 frames later
    assert t.finish() == [Span(18, 23)]


def test_a_long_marked_run_is_decided_where_it_stands():
    """Frames wait in the cutter until the run holding them ends: a run reaching LONGEST_RUN frames is
    decided there, so the wait is bounded whatever the scores."""
    t = Transitions(single_threshold=0.5, many_threshold=0.3)
    many = np.full(LONGEST_RUN + 10, 0.9, np.float32)
    single = np.zeros_like(many)
    single[3] = 0.9
    assert t.add(single, many) == [Span(0, LONGEST_RUN)]
    assert t.decided == LONGEST_RUN


def test_weights_path_overrides_the_packaged_ones(tmp_path, net):
    """`detect.transnetv2_weights` is what runs: a copy whose single-frame head never fires finds nothing
    where the packaged weights find the cut; a file that is not TransNetV2's is a clear error."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    state["cls_layer1.bias"].fill_(-1e4)
    muted = tmp_path / "muted.pth"
    torch.save(state, muted)
    joined = tmp_path / "joined.mp4"
    pieces = [Piece(SNAKE, 0.1, 45), Piece("repo_videos/panda70m_samples/1r2eNjJ__mE.20.mp4", 0.1, 45)]
    for p in pieces:
        shared_file(p.path)  # skip (or fail under HDVG_REQUIRE_MEDIA=1) without the media
    boundaries, _ = build_spliced(SHARED, pieces, [("cut", 0)], joined, size=(320, 180))
    found = detect_scenes(joined, DetectConfig(detector="transnetv2"), threads=2).transitions
    assert found == [b.span for b in boundaries]
    assert detect_scenes(joined, DetectConfig(detector="transnetv2", transnetv2_weights=str(muted))).transitions == []
    bad = tmp_path / "bad.pth"
    torch.save({"fc1.weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="detect.transnetv2_weights: cannot load TransNetV2 weights"):
        load_network(bad)
    with pytest.raises(ValueError, match="detect.transnetv2_weights"):
        load_network(tmp_path / "missing.pth")
