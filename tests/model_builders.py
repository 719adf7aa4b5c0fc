"""Test-only builders: the one-thread fixture, WebDataset tars, downscaled real clips and an I3D stand-in.
The tiny random pretrained components live in model/tiny.py (`make train` and the benchmarks use them too)."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Import into a test module to run it with one intra-op thread: tiny tensors gain nothing from more,
    and on a shared machine idle OpenMP threads spinning made these tests 20x slower (measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_shard(path: str | Path, samples: list[dict]) -> Path:
    """A WebDataset tar of `samples` ({"__key__": key, extension: bytes, ...}), members in the given order."""
    path = Path(path)
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for ext, data in sample.items():
                if ext.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def downscaled_clip(sample: dict, width: int, height: int, max_frames: int | None = None) -> dict:
    """A real shard sample with its MP4 re-encoded at width x height (fast to decode in CPU tests); the
    other members (json, txt, ...) unchanged."""
    import tempfile

    from model.data import VideoBytes
    from model.sample import write_video

    video = VideoBytes(sample["mp4"])
    frames = video.decode(list(range(min(video.num_frames, max_frames or video.num_frames))), size=(width, height))
    with tempfile.TemporaryDirectory() as tmp:
        data = write_video(frames, Path(tmp) / "clip.mp4", fps=30).read_bytes()
    return {**{k: v for k, v in sample.items() if k != "__url__"}, "mp4": data}


def save_i3d_torchscript_standin(path: str | Path, seed: int = 0) -> Path:
    """A TorchScript file with the call signature of StyleGAN-V's `i3d_torchscript.pt`,
    `forward(x, rescale, resize, return_features)` -> (B, 400); NOT an I3D (the real file is not
    downloadable here). Its first three outputs report what it was given (the largest value after
    `rescale`, the channel count, the frame count) so tests see the caller's dtype, layout and flags; it
    raises on anything but uint8."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ScriptedI3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 4, kernel_size=(4, 16, 16), stride=(4, 16, 16))
            self.head = nn.Linear(4 * 2 * 2 * 2, 397)

        def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                    return_features: bool = False) -> torch.Tensor:
            if x.dtype != torch.uint8:
                raise ValueError("the TorchScript I3D takes uint8 0-255")
            b, c, t = x.shape[0], x.shape[1], x.shape[2]
            v = x.float()
            if rescale:
                v = v / 127.5 - 1.0
            if resize:
                v = F.interpolate(v, size=(t, 224, 224), mode="trilinear", align_corners=False)
            h = F.adaptive_avg_pool3d(torch.relu(self.conv(v)), (2, 2, 2)).flatten(1)
            probe = torch.stack([v.amax(dim=(1, 2, 3, 4)), torch.full([b], float(c)), torch.full([b], float(t))], 1)
            out = torch.cat([probe, self.head(h)], 1)
            return out if return_features else out.softmax(-1)

    torch.manual_seed(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(ScriptedI3D().eval()).save(str(path))
    return path

