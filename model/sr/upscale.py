"""x4 inference: frames in batches, tiled with overlap when large, and `hdvg upscale IN.mp4 OUT.mp4` (PyAV in and
out, every frame kept with its timestamp, H.264).

Tiling: the LR frame is cut into `tile x tile` pieces, each run with `tile_pad` pixels of context on every side
and only its own 4x region kept. Convolutions see the same pixels as untiled inference inside the context; the
channel attention's global average pool sees the padded tile instead of the frame, so tiled output is close to,
not bit-equal with, untiled output (measured in docs/super_resolution.md).
"""
from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from model.distributed import local_device
from model.sr.config import SRConfig, from_dict
from model.sr.rcan import RCAN

log = logging.getLogger(__name__)

WEIGHTS_FILE, CONFIG_FILE = "upscaler.pt", "config.json"
EXPORTED_WEIGHTS = "model.safetensors"  # `hdvg export` of a train-sr run: config.json + these


class Upscaler:
    """A trained RCAN on a device. `upscale(uint8 (F, H, W, 3)) -> uint8 (F, 4H, 4W, 3)`."""

    def __init__(self, model: RCAN, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                 tile: int = 0, tile_pad: int = 16, batch_size: int = 16):
        self.device = local_device(device)
        # half precision on GPU (bf16: RCAN's 0-255 internal scale is safe from fp16 overflow only with care)
        self.dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.model = model.to(self.device).eval()
        self.scale, self.tile, self.tile_pad, self.batch_size = 4, tile, tile_pad, batch_size

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model(x).float()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) -> (B, 3, 4h, 4w), tile by tile (same positions for every frame of the batch)."""
        b, c, h, w = x.shape
        s, t, p = self.scale, self.tile, self.tile_pad
        out = x.new_zeros(b, c, h * s, w * s)
        for top in range(0, h, t):
            for left in range(0, w, t):
                bottom, right = min(top + t, h), min(left + t, w)
                # the tile plus its context, clipped to the frame
                t0, l0, b0, r0 = max(top - p, 0), max(left - p, 0), min(bottom + p, h), min(right + p, w)
                y = self._run(x[:, :, t0:b0, l0:r0])  # (B, 3, 4(b0-t0), 4(r0-l0))
                out[:, :, top * s:bottom * s, left * s:right * s] = \
                    y[:, :, (top - t0) * s:(bottom - t0) * s, (left - l0) * s:(right - l0) * s]
        return out

    @torch.no_grad()
    def upscale_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) float in [0, 1] -> (B, 3, 4h, 4w) float in [0, 1]."""
        x = x.to(self.device)
        h, w = x.shape[-2:]
        y = self._tiled(x) if self.tile and (h > self.tile or w > self.tile) else self._run(x)
        return y.clamp(0, 1)

    def upscale(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (F, H, W, 3) -> uint8 (F, 4H, 4W, 3), in batches of `batch_size` frames."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"upscale: expected uint8 (F, H, W, 3) frames, got {frames.dtype} {frames.shape}")
        outs = []
        for i in range(0, len(frames), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_size])).permute(0, 3, 1, 2)
            y = self.upscale_tensor(x.float() / 255)                             # (B, 3, 4H, 4W)
            outs.append((y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0, *(d * 4 for d in frames.shape[1:3]), 3), np.uint8)


def save_upscaler(run_dir: Path, cfg: SRConfig, ema_state: dict[str, torch.Tensor], step: int) -> None:
    """The inference weights of a run (the EMA generator, as Real-ESRGAN ships `params_ema`), beside its config.
    Written to a temporary name and renamed: a reader never sees half a file."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=1))
    tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    torch.save({"rcan": ema_state, "step": step}, tmp)
    tmp.replace(run_dir / WEIGHTS_FILE)


def _saved_weights(run_dir: Path) -> tuple[dict[str, torch.Tensor], int]:
    """The EMA generator's weights and step: from an exported folder's safetensors, else the run's
    upscaler.pt (read with weights_only=True)."""
    if (run_dir / EXPORTED_WEIGHTS).is_file():
        from safetensors import safe_open

        with safe_open(str(run_dir / EXPORTED_WEIGHTS), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, int(f.metadata()["step"])
    if not (run_dir / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a train-sr run nor an exported one: no {WEIGHTS_FILE} or "
                                f"{EXPORTED_WEIGHTS}")
    saved = torch.load(run_dir / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    return saved["rcan"], saved["step"]


def load_upscaler(run_dir: str | Path, device: torch.device | str | None = None, tile: int = 0,
                  tile_pad: int = 16, batch_size: int = 16, dtype: torch.dtype | None = None) -> Upscaler:
    """The upscaler of a `hdvg train-sr` run folder or of its `hdvg export` (`config.json` and EMA weights)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a train-sr run: no {CONFIG_FILE}")
    cfg = from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    model = RCAN(cfg.rcan)
    weights, step = _saved_weights(run_dir)
    model.load_state_dict(weights)
    log.info("upscaler: %s, EMA weights of step %d", run_dir, step)
    return Upscaler(model, device, dtype=dtype, tile=tile, tile_pad=tile_pad, batch_size=batch_size)


def export_upscaler(run_dir: str | Path, out_dir: str | Path) -> Path:
    """`hdvg export` of a train-sr run: DIR/config.json + DIR/model.safetensors (the EMA generator, its step
    in the metadata); `hdvg upscale --checkpoint DIR` and `load_upscaler` read it."""
    from safetensors.torch import save_file

    run_dir, out = Path(run_dir), Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists: export into a new folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{run_dir} is not a train-sr run: no {CONFIG_FILE}")
    weights, step = _saved_weights(run_dir)
    tmp = out.with_name(out.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / CONFIG_FILE).write_text((run_dir / CONFIG_FILE).read_text())
    save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / EXPORTED_WEIGHTS),
              metadata={"step": str(step)})
    tmp.rename(out)
    return out


def upscale_video(src: str | Path, dst: str | Path, upscaler: Upscaler, crf: int = 18,
                  preset: str = "medium") -> int:
    """Every frame of `src`'s first video stream, 4x, into an H.264 MP4 with the source's frame rate, time base
    and timestamps. Returns the number of frames written."""
    import av

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise ValueError(f"{src}: no video stream")
        stream = inp.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        tick = 1 / (rate * stream.time_base)  # timestamp step of a frame without one
        with av.open(str(dst), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            ostream = out.add_stream("libx264", rate=rate)
            ostream.width = stream.codec_context.width * 4
            ostream.height = stream.codec_context.height * 4
            ostream.pix_fmt = "yuv420p"
            ostream.time_base = ostream.codec_context.time_base = stream.time_base
            ostream.options = {"crf": str(crf), "preset": preset}
            last = None

            def flush(frames: list[np.ndarray], pts: list[int]) -> None:
                nonlocal written, last
                for image, p in zip(upscaler.upscale(np.stack(frames)), pts):
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    # strictly increasing, as the muxer requires
                    frame.pts = p if last is None else max(p, last + 1)
                    frame.time_base, last = stream.time_base, frame.pts
                    for packet in ostream.encode(frame):
                        out.mux(packet)
                    written += 1

            frames, pts = [], []
            for index, frame in enumerate(inp.decode(stream)):
                frames.append(frame.to_ndarray(format="rgb24"))
                pts.append(frame.pts if frame.pts is not None else round(index * tick))
                if len(frames) == upscaler.batch_size:
                    flush(frames, pts)
                    frames, pts = [], []
            if frames:
                flush(frames, pts)
            for packet in ostream.encode(None):
                out.mux(packet)
    return written
