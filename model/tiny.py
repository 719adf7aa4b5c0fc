"""Tiny random instances of the real pretrained classes the models load (diffusers `AutoencoderKL`,
transformers `CLIPTextModel` + `CLIPTokenizer`, `CLIPModel`), saved with `save_pretrained` so that the product's
`from_pretrained(path)` code is what runs on them. Nothing is downloaded. The tests, `make train` and the
benchmarks use them on machines without real weights; they prove the pipeline, not image quality.

`python -m model.tiny DIR` saves a diffusers-pipeline-layout folder (DIR/vae, DIR/text_encoder, DIR/tokenizer)
of RANDOM weights; `python -m model.tiny --scorers DIR` saves what `hdvg score` loads: DIR/clip (a CLIPModel +
CLIPProcessor) and DIR/aesthetic_head.safetensors (the LAION head's layout on its 16-d embeddings)."""
from __future__ import annotations

import json
import sys
from pathlib import Path


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
    (directory / "RANDOM_WEIGHTS.txt").write_text("tiny random components built by model/tiny.py\n")
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


def save_tiny_scorers(directory: str | Path, seed: int = 0) -> Path:
    """DIR/clip and DIR/aesthetic_head.safetensors: RANDOM weights for `hdvg score --clip-model DIR/clip
    --aesthetic-clip-model DIR/clip --aesthetic-head DIR/aesthetic_head.safetensors`."""
    import torch

    from hdvg.aesthetic import aesthetic_head, save_head

    directory = Path(directory)
    save_tiny_clip(directory / "clip", seed=seed)
    torch.manual_seed(seed)
    save_head(aesthetic_head(16), directory / "aesthetic_head.safetensors")  # 16: save_tiny_clip's projection
    return directory


if __name__ == "__main__":
    if sys.argv[1:2] == ["--scorers"]:
        print(f"saving a tiny RANDOM CLIP and aesthetic head to {save_tiny_scorers(sys.argv[2])}")
    else:
        print(f"saving tiny RANDOM VAE + CLIP text encoder to {save_tiny_components(sys.argv[1])}")
