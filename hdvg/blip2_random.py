"""Random-weight BLIP-2 checkpoints for the tests, the caption bench and the GPU check: built from a config (nothing is
downloaded) and saved as a user's local checkpoint, so they load through the captioner's own
`from_pretrained` path."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENIZER_WORDS = ("a man woman child dog cat car boat bird street beach city road ocean waves mountain forest "
                   "kitchen table food cooking driving walking running flying at night sunset sky snow river "
                   "people crowd building view of the in on with and").split()


def train_tokenizer(vocab_size: int, seed: int = 0):
    """An OPT-style (byte-level BPE, `</s>` as BOS/EOS) tokenizer trained here on a small word list.
    `vocab_size` beyond what the corpus supports is filled with plain word-level entries so that every
    id a model of that vocabulary emits decodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    corpus = [" ".join(rng.choice(TOKENIZER_WORDS, 10)) for _ in range(200)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single="</s> $A",
                                                       special_tokens=[("</s>", tok.token_to_id("</s>"))])
    tok.add_tokens([f"w{i}" for i in range(max(0, vocab_size - 1 - tok.get_vocab_size()))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def blip2_config(size: str, vocab_size: int, image_token_index: int, special_ids: dict):
    """'tiny': a few thousand parameters for CPU tests; 'opt-2.7b': Salesforce/blip2-opt-2.7b's
    architecture (ViT-g/14 at 224, 12-layer Q-Former with 32 queries, OPT-2.7b)."""
    from transformers import Blip2Config, OPTConfig

    if size == "tiny":
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      image_size=32, patch_size=8)
        qformer = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       encoder_hidden_size=32)
        text = dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                    max_position_embeddings=128)
        queries = 4
        # weights far from the usual 0.02 std, so that a tiny model's captions depend on the image
        vision["initializer_range"] = qformer["initializer_range"] = text["init_std"] = 0.5
    elif size == "opt-2.7b":
        vision = dict(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                      image_size=224, patch_size=14, layer_norm_eps=1e-6)
        qformer = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       encoder_hidden_size=1408, cross_attention_frequency=2)
        text = dict(hidden_size=2560, ffn_dim=10240, num_hidden_layers=32, num_attention_heads=32,
                    word_embed_proj_dim=2560, max_position_embeddings=2048)
        queries = 32
    else:
        raise ValueError(f"size: unknown BLIP-2 size {size!r}")
    text_config = OPTConfig(vocab_size=vocab_size, **text, **special_ids).to_dict()
    return Blip2Config(vision_config=vision, qformer_config=qformer, text_config=text_config,
                       num_query_tokens=queries, image_token_index=image_token_index)


def random_blip2(size: str = "tiny", seed: int = 0, device: str = "cpu", dtype=None):
    """(model, processor) with random weights, built on `device` (a 3.8B model is initialised on the GPU
    in seconds, on a CPU in minutes)."""
    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    tokenizer = train_tokenizer(300 if size == "tiny" else 50272, seed)
    side = 32 if size == "tiny" else 224
    image_processor = BlipImageProcessor(size={"height": side, "width": side})
    queries = 4 if size == "tiny" else 32
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=queries)
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    config = blip2_config(size, len(tokenizer), tokenizer.convert_tokens_to_ids("<image>"), special)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Blip2ForConditionalGeneration(config)
    model = model.to(dtype) if dtype is not None else model
    return model.eval(), processor


def save_random_blip2(folder: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """A local checkpoint folder, as a user's save_pretrained would leave it."""
    model, processor = random_blip2(size, seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return Path(folder)
