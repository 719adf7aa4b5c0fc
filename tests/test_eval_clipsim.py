"""CLIPSIM on a tiny random `transformers` CLIP saved locally: per frame, averaged, on the 0-1 cosine scale,
equal to a direct per-frame computation; matching and shuffled pairs score differently; crop policy."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.eval.clipsim import ClipScorer
from model.tiny import save_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def direct_similarity(model, processor, frame: np.ndarray, text: str) -> float:
    """One frame, one text, straight through the processor and the two CLIP towers."""
    pixels = processor(images=[frame], return_tensors="pt")["pixel_values"]
    tokens = processor(text=[text], return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels).pooler_output[0]
        words = model.get_text_features(**tokens).pooler_output[0]
    return float(torch.nn.functional.cosine_similarity(image, words, dim=0))


def test_clipsim_is_the_per_frame_cosine_averaged_over_frames_and_samples(tiny_clip):
    scorer = ClipScorer(str(tiny_clip))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (4, 36, 64, 3), dtype=np.uint8) for _ in range(3)]
    texts = ["a dog runs on the beach", "the man and the car", "fireworks over a city"]
    sims = scorer.frame_similarities(clips, texts)
    assert [s.shape for s in sims] == [(4,)] * 3
    for clip, text, got in zip(clips, texts, sims):
        expected = [direct_similarity(scorer.model, scorer.processor, frame, text) for frame in clip]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(np.unique(np.round(sims[0], 6))) == 4  # one value per frame, not one per clip
    assert np.all(np.abs(np.concatenate(sims)) <= 1.0)  # cosine scale, not torchmetrics' x100

    matching = np.concatenate(sims).mean()
    shuffled = np.concatenate(scorer.frame_similarities(clips, texts[1:] + texts[:1])).mean()
    assert matching != pytest.approx(shuffled, abs=1e-6)
    with pytest.raises(ValueError, match="3 clips but 2 texts"):
        scorer.frame_similarities(clips, texts[:2])


def test_clipsim_crop_policy_decides_whether_the_sides_of_a_16_9_frame_count(tiny_clip):
    frame = np.zeros((1, 36, 64, 3), np.uint8)
    frame[:, :, :10] = 255  # content only in the left 16 %, which a centre crop drops
    blank = np.zeros_like(frame)
    crop, full = ClipScorer(str(tiny_clip)), ClipScorer(str(tiny_clip), crop="full")
    text = ["a white band"]
    assert crop.frame_similarities([frame], text)[0] == pytest.approx(crop.frame_similarities([blank], text)[0])
    assert full.frame_similarities([frame], text)[0] != pytest.approx(full.frame_similarities([blank], text)[0])
    with pytest.raises(ValueError, match="crop policy"):
        ClipScorer(str(tiny_clip), crop="pad")
