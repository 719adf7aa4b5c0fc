"""Training metrics where the ecosystem reads them: TensorBoard event files in RUN/tb/ (scalars, preview videos
as animated GIFs and frame grids as images), or Weights & Biases (`--report-to wandb`, imported only then), or
nothing (`none`). One writer per run, on rank 0."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

REPORT_TO = ("tensorboard", "wandb", "none")
TB_DIR = "tb"


def frame_grid(videos: np.ndarray) -> np.ndarray:
    """uint8 (B, F, H, W, 3) -> one image (B*H, F*W, 3): a row of frames per video."""
    b, f, h, w, c = videos.shape
    return videos.transpose(0, 2, 1, 3, 4).reshape(b * h, f * w, c)


def gif_bytes(frames: np.ndarray, fps: int) -> bytes:
    """uint8 (F, H, W, 3) as an animated GIF (what TensorBoard's image dashboard plays)."""
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buffer.getvalue()


class MetricsWriter:
    def __init__(self, run_dir: str | Path, report_to: str = "tensorboard", config: dict | None = None):
        if report_to not in REPORT_TO:
            raise ValueError(f"report_to={report_to!r}: must be one of {', '.join(REPORT_TO)}")
        self.report_to, self.tb, self.wandb = report_to, None, None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / TB_DIR))
        elif report_to == "wandb":
            import wandb

            self.wandb = wandb.init(dir=str(run_dir), config=config or {}, resume="allow")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.tb is not None:
            for name, value in values.items():
                self.tb.add_scalar(name, value, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def videos(self, step: int, videos: np.ndarray, prompts: list[str], fps: int) -> None:
        """uint8 (B, F, H, W, 3) previews: each as a video, all as one frame grid."""
        if self.tb is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            for i, (video, prompt) in enumerate(zip(videos, prompts)):
                h, w = video.shape[1:3]
                image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(video, fps))
                self.tb.file_writer.add_summary(Summary(value=[Summary.Value(tag=f"samples/{i}", image=image)]),
                                                step)
            self.tb.add_image("samples/grid", frame_grid(videos), step, dataformats="HWC")
            self.tb.add_text("samples/prompts", "\n".join(f"{i}: {p}" for i, p in enumerate(prompts)), step)
            self.tb.flush()
        if self.wandb is not None:
            import wandb

            self.wandb.log({f"samples/{i}": wandb.Video(v.transpose(0, 3, 1, 2), fps=fps, caption=p)
                            for i, (v, p) in enumerate(zip(videos, prompts))}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
