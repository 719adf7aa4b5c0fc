"""The LAION aesthetic predictor (christophschuhmann/improved-aesthetic-predictor): an MLP head on the unit-norm
CLIP ViT-L/14 image embedding that predicts the mean AVA-style rating, about 1-10. Open-Sora and Panda-70M-era
pipelines keep clips above 4.5-5.

The head's weights come from a path: the released `sac+logos+ava1-l14-linearMSE.pth` (a torch state dict) or a
`.safetensors` file with the same keys (`layers.0.weight` ... `layers.7.bias`). The backbone is any CLIP that
`hdvg.clip.ClipModel` loads, and its projection size must be the head's input size (768 for ViT-L/14).
"""
from __future__ import annotations

from pathlib import Path

AESTHETIC_CLIP_MODEL = "openai/clip-vit-large-patch14"  # the backbone the LAION head was trained on


def aesthetic_head(input_size: int):
    """The predictor's MLP, its layer numbering as released (dropouts in between; no activations)."""
    from torch import nn

    return nn.Sequential(nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                         nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))


def load_head(path: str | Path):
    """The head with the weights of `path` (.pth/.pt state dict, or .safetensors), in eval mode."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic head weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("layers."): v for k, v in state.items()}  # the release wraps the MLP as `layers`
    head = aesthetic_head(int(state["0.weight"].shape[1]))
    head.load_state_dict(state)
    return head.eval()


def save_head(head, path: str | Path) -> Path:
    """Save in the release's key layout (`layers.N.*`), as safetensors or a torch state dict by suffix."""
    import torch

    state = {f"layers.{k}": v.contiguous() for k, v in head.state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return path


class AestheticPredictor:
    """CLIP image embedding (unit norm, as the head was trained) -> the head's rating."""

    def __init__(self, clip, head_path: str | Path):
        self.clip, self.head = clip, load_head(head_path).to(clip.device)
        inputs = self.head[0].in_features
        if inputs != clip.dim:
            raise ValueError(f"aesthetic head {head_path} takes {inputs}-d embeddings but CLIP "
                             f"{clip.name_or_path} gives {clip.dim}-d (the LAION head needs ViT-L/14: 768)")

    def __call__(self, images: list) -> list[float]:
        import torch

        with torch.no_grad():
            return self.head(self.clip.image_embeddings(images)).squeeze(-1).double().cpu().tolist()
