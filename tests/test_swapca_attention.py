"""3D window attention (model.attention) against a direct per-token reference computation."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.attention import global_attention, window_attention_3d, window_mask, window_partition, window_reverse


def reference_window_attention(q, k, v, window, shift, heads):
    """Token by token: a real query attends to the real keys of its (rolled) window that lie on its side of the
    frame wrap-around. No padding, no masks, no partitioning: the contract written out."""
    b, f, h, w, c = q.shape
    fw, hw, ww = (min(a, s) for a, s in zip(window, (f, h, w)))
    shift = shift if fw < f else 0
    fp = -(-f // fw) * fw  # padded frame count: rolling happens on the padded sequence
    d = c // heads
    out = torch.zeros_like(q)

    def place(fi):
        p = (fi - shift) % fp  # position of frame fi after rolling by -shift
        return p // fw, p < fp - shift  # (frame window, side of the wrap)

    tokens = [(fi, hi, wi) for fi in range(f) for hi in range(h) for wi in range(w)]
    for fi, hi, wi in tokens:
        key = (place(fi), hi // hw, wi // ww)
        keys = [(a, b_, c_) for a, b_, c_ in tokens if (place(a), b_ // hw, c_ // ww) == key]
        idx = torch.tensor(keys)
        kk = k[:, idx[:, 0], idx[:, 1], idx[:, 2]].view(b, len(keys), heads, d)  # (B, N, heads, d)
        vv = v[:, idx[:, 0], idx[:, 1], idx[:, 2]].view(b, len(keys), heads, d)
        qq = q[:, fi, hi, wi].view(b, 1, heads, d)
        weights = torch.softmax((qq * kk).sum(-1) / math.sqrt(d), dim=1)  # (B, N, heads)
        out[:, fi, hi, wi] = (weights[..., None] * vv).sum(1).reshape(b, c)
    return out


def _qkv(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(3)]


def test_partition_then_reverse_is_identity_with_padding():
    x = torch.randn(2, 5, 7, 11, 3)
    window = (4, 3, 6)
    padded = F.pad(x, (0, 0, 0, 1, 0, 2, 0, 3))  # to (8, 9, 12)
    parts = window_partition(padded, window)
    assert parts.shape == (2, 2 * 3 * 2, 4 * 3 * 6, 3)
    assert torch.equal(window_reverse(parts, window, (8, 9, 12)), padded)
    # Each window holds a contiguous block: the first window is the corner block.
    assert torch.equal(parts[:, 0].view(2, 4, 3, 6, 3), padded[:, :4, :3, :6])


@pytest.mark.parametrize("shift", [0, 2])
def test_padded_keys_get_no_weight(shift):
    # 5 x 4 x 7 needs padding on every axis with a 4 x 3 x 6 window; zero padded keys score 0, and would
    # take exp(0) weight each if they were not masked.
    q, k, v = _qkv((2, 5, 4, 7, 4))
    out = window_attention_3d(q, k, v, window=(4, 3, 6), shift=shift, heads=2)
    assert torch.allclose(out, reference_window_attention(q, k, v, (4, 3, 6), shift, heads=2), atol=1e-10)


def test_shift_mask_forbids_exactly_the_wrapped_pairs():
    f, fw, shift = 8, 4, 2  # no padding: only the roll constrains
    mask = window_mask((f, 1, 1), (f, 1, 1), (fw, 1, 1), shift, torch.device("cpu"))  # (nW, N, N)
    frames = torch.roll(torch.arange(f), -shift).view(f // fw, fw)  # original frame at each rolled slot
    for win in range(f // fw):
        for i in range(fw):
            for j in range(fw):
                a, b = frames[win, i].item(), frames[win, j].item()
                wrapped = abs(a - b) >= fw  # neighbours in the window only because of the wrap-around
                assert mask[win, i, j].item() == (not wrapped), (win, a, b)
    assert (~mask).sum().item() == 2 * shift * (fw - shift)  # one straddling window, both directions
    q, k, v = _qkv((1, f, 2, 3, 2), seed=1)
    out = window_attention_3d(q, k, v, window=(fw, 2, 3), shift=shift)
    assert torch.allclose(out, reference_window_attention(q, k, v, (fw, 2, 3), shift, heads=1), atol=1e-10)
    # Without the mask the straddling window would mix frames 0 and 7: the result must differ from that.
    unmasked = torch.roll(window_attention_3d(torch.roll(q, -shift, 1), torch.roll(k, -shift, 1),
                                              torch.roll(v, -shift, 1), window=(fw, 2, 3)), shift, 1)
    assert not torch.allclose(out, unmasked)


def test_shifted_padded_windows_match_reference():
    q, k, v = _qkv((1, 7, 5, 8, 6), seed=2)
    out = window_attention_3d(q, k, v, window=(3, 2, 3), shift=2, heads=3)
    assert torch.allclose(out, reference_window_attention(q, k, v, (3, 2, 3), 2, heads=3), atol=1e-10)


def test_window_larger_than_input_is_global_attention():
    q, k, v = _qkv((2, 3, 4, 5, 8), seed=3)
    b, f, h, w, c = q.shape
    heads, d = 2, 4
    qf, kf, vf = (x.reshape(b, f * h * w, heads, d).transpose(1, 2) for x in (q, k, v))
    weights = torch.softmax(qf @ kf.transpose(-1, -2) / math.sqrt(d), dim=-1)
    direct = (weights @ vf).transpose(1, 2).reshape(b, f, h, w, c)
    # shift 3 is dropped: one window covers every frame.
    windowed = window_attention_3d(q, k, v, window=(8, 8, 8), shift=3, heads=heads)
    assert torch.allclose(windowed, direct, atol=1e-10)
    assert torch.allclose(global_attention(q, k, v, heads=heads), direct, atol=1e-10)


def test_gradients_stay_finite_where_padded_queries_see_only_padding():
    # F=5, Fw=4, shift 2: after padding to 8 and rolling, one window's region holds padded frames only.
    q, k, v = (x.float().requires_grad_() for x in _qkv((1, 5, 2, 2, 2), seed=4))
    window_attention_3d(q, k, v, window=(4, 2, 2), shift=2).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (q, k, v))


def test_bad_shapes_are_rejected():
    q, k, v = _qkv((1, 2, 2, 2, 4))
    with pytest.raises(ValueError, match="heads"):
        window_attention_3d(q, k, v, heads=3)
    with pytest.raises(ValueError, match="shape"):
        window_attention_3d(q, k[:, :1], v)
