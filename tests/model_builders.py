"""Tiny random instances of the real pretrained classes the models load (diffusers `AutoencoderKL`,
transformers `CLIPTextModel` + `CLIPTokenizer`), saved with `save_pretrained` so the product's
`from_pretrained(path)` code is what the tests run. Nothing is downloaded.

`python -m tests.model_builders DIR` saves a diffusers-pipeline-layout folder (DIR/vae, DIR/text_encoder,
DIR/tokenizer) of RANDOM weights, what `make train` uses on a machine without real weights."""
from __future__ import annotations

import io
import json
import sys
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


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's byte -> printable-character table (bytes the BPE sees as characters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(printable, map(chr, chars)))


def save_tiny_clip_tokenizer(directory: str | Path, merges: tuple[str, ...] = ("t h", "th e</w>", "a n", "an d</w>"),
                             model_max_length: int = 77) -> Path:
    """A byte-level BPE CLIPTokenizer: every byte as a character (alone and word-final), a few merges."""
    from transformers import CLIPTokenizer

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"),
                              model_max_length=model_max_length)
    tokenizer.save_pretrained(directory)
    return directory


def save_tiny_clip_text(directory: str | Path, hidden_size: int = 32, layers: int = 2, heads: int = 4,
                        vocab_size: int = 518, seed: int = 0) -> Path:
    """A random CLIPTextModel (hidden_size = the U-Net's cross_attention_dim) with 77 positions."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=77,
                            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    CLIPTextModel(config).save_pretrained(directory)
    return Path(directory)


def save_tiny_vae(directory: str | Path, width: int = 8, seed: int = 0) -> Path:
    """A random f=8, 4-channel AutoencoderKL (four levels, three 2x down-samplings, like Stable Diffusion's)."""
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(width,) * 4, norm_num_groups=min(8, width), sample_size=64)
    vae.save_pretrained(directory)
    return Path(directory)


def save_tiny_components(directory: str | Path, hidden_size: int = 32) -> Path:
    """vae/, text_encoder/ and tokenizer/ of a diffusers pipeline folder, all tiny and random."""
    directory = Path(directory)
    save_tiny_vae(directory / "vae")
    save_tiny_clip_text(directory / "text_encoder", hidden_size=hidden_size)
    save_tiny_clip_tokenizer(directory / "tokenizer")
    (directory / "RANDOM_WEIGHTS.txt").write_text("tiny random components built by tests/model_builders.py\n")
    return directory


def save_tiny_clip(directory: str | Path, image_size: int = 32, hidden_size: int = 32, seed: int = 0) -> Path:
    """A random two-tower CLIPModel + CLIPProcessor (the tiny tokenizer above, an image processor that
    resizes the short side to `image_size` and centre-crops it, as CLIP ViT-B/32's does at 224)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    directory = Path(directory)
    tokenizer = CLIPTokenizer.from_pretrained(save_tiny_clip_tokenizer(directory / "_tokenizer"))
    images = CLIPImageProcessor(size={"shortest_edge": image_size},
                                crop_size={"height": image_size, "width": image_size})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(directory)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=hidden_size,
                           intermediate_size=2 * hidden_size, num_hidden_layers=2, num_attention_heads=2),
        projection_dim=16)
    CLIPModel(config).save_pretrained(directory)
    return directory


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


if __name__ == "__main__":
    print(f"saving tiny RANDOM VAE + CLIP text encoder to {save_tiny_components(sys.argv[1])}")
