"""Attention over video tokens laid out (B, F, H, W, C): Video-Swin-style shifted 3D windows (the paper's
3DW-MCA, Sec. 4.2) and global attention (its Table 2 ablation). Inputs are already projected; both functions
are cross-attention when q differs from k, v."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# Appendix E.2: the 3D window is 8 frames x 3 x 6 latent pixels.
DEFAULT_WINDOW = (8, 3, 6)
Size3 = tuple[int, int, int]  # (frames, height, width)


def effective_window(size: Size3, window: Size3, shift: int) -> tuple[Size3, int]:
    """The window clipped to the input (F, H, W) and the frame shift that goes with it: a window axis larger than
    the input shrinks to it, and a frame window that covers every frame has nothing to shift (shift 0)."""
    clipped = tuple(min(w, s) for w, s in zip(window, size))
    if shift < 0:
        raise ValueError(f"shift={shift}: must be >= 0")
    return clipped, (shift % clipped[0] if clipped[0] < size[0] else 0)


def window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """(B, F, H, W, C) with F, H, W multiples of the window -> (B, nW, Fw*Hw*Ww, C), windows in raster order."""
    b, f, h, w, c = x.shape
    fw, hw, ww = window
    x = x.view(b, f // fw, fw, h // hw, hw, w // ww, ww, c)
    x = x.permute(0, 1, 3, 5, 2, 4, 6, 7)  # (B, nF, nH, nW, Fw, Hw, Ww, C)
    return x.reshape(b, -1, fw * hw * ww, c)


def window_reverse(windows: torch.Tensor, window: Size3, size: Size3) -> torch.Tensor:
    """Inverse of `window_partition`: (B, nW, N, C) -> (B, F, H, W, C) for the padded size (F, H, W)."""
    b, _, _, c = windows.shape
    fw, hw, ww = window
    f, h, w = size
    x = windows.view(b, f // fw, h // hw, w // ww, fw, hw, ww, c)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7)  # (B, nF, Fw, nH, Hw, nW, Ww, C)
    return x.reshape(b, f, h, w, c)


def window_mask(size: Size3, padded: Size3, window: Size3, shift: int, device: torch.device) -> torch.Tensor | None:
    """Which keys each query of a window may attend to, (nW, N, N) bool (True = attend), or None when every
    pair is allowed. A key is forbidden if it is padding, or (shift > 0) if it lies in another of Swin's
    roll regions than the query, i.e. across the wrap-around of the rolled frames. Each token may always
    attend to its own position, so a padded query never has an empty row (its output is cropped anyway, but
    an all-masked softmax would be NaN and poison the backward pass)."""
    (f, h, w), (fp, hp, wp), fw = size, padded, window[0]
    if (f, h, w) == (fp, hp, wp) and shift == 0:
        return None
    real = torch.zeros(fp, hp, wp, dtype=torch.bool, device=device)
    real[:f, :h, :w] = True
    region = torch.zeros(fp, hp, wp, dtype=torch.long, device=device)
    if shift > 0:
        # Swin's three frame regions of the padded, rolled sequence; a window straddling the last boundary
        # holds frames from both ends of the clip.
        region[fp - fw:fp - shift] = 1
        region[fp - shift:] = 2
        real = torch.roll(real, shifts=-shift, dims=0)
    real_w = window_partition(real[None, ..., None], window)[0, ..., 0]  # (nW, N)
    region_w = window_partition(region[None, ..., None], window)[0, ..., 0]  # (nW, N)
    allowed = (region_w[:, :, None] == region_w[:, None, :]) & real_w[:, None, :]  # (nW, N query, N key)
    return allowed | torch.eye(allowed.shape[-1], dtype=torch.bool, device=device)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., N, C) -> (..., heads, N, C / heads)."""
    *lead, n, c = x.shape
    return x.view(*lead, n, heads, c // heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., heads, N, d) -> (..., N, heads * d)."""
    *lead, heads, n, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, n, heads * d)


def window_attention_3d(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: Size3 = DEFAULT_WINDOW,
                        shift: int = 0, heads: int = 1) -> torch.Tensor:
    """Multi-head attention inside non-overlapping 3D windows, optionally shifted along time.

    q, k, v: (B, F, H, W, C), already projected; returns (B, F, H, W, C). The input is zero-padded to window
    multiples (padded keys get no weight), then, for shift > 0, rolled by -shift frames, partitioned, attended
    with Swin's region mask, reversed, rolled back and cropped (Video Swin's order: padding after the roll would
    break the mask). Only frames shift; a window larger than the input shrinks to it (and its shift becomes 0)."""
    if q.shape != k.shape or k.shape != v.shape or q.dim() != 5:
        raise ValueError(f"q, k, v must share one (B, F, H, W, C) shape, "
                         f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, f, h, w, c = q.shape
    if c % heads:
        raise ValueError(f"heads={heads} must divide the channels ({c})")
    win, shift = effective_window((f, h, w), tuple(window), shift)
    padded = tuple(-(-s // ws) * ws for s, ws in zip((f, h, w), win))
    pad = (0, 0, 0, padded[2] - w, 0, padded[1] - h, 0, padded[0] - f)  # F.pad order: C, W, H, F

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, pad)
        if shift:
            x = torch.roll(x, shifts=-shift, dims=1)
        return _heads(window_partition(x, win), heads)  # (B, nW, heads, N, d)

    qw, kw, vw = windows(q), windows(k), windows(v)
    nw, n = qw.shape[1], qw.shape[3]
    mask = window_mask((f, h, w), padded, win, shift, q.device)
    flat = (b * nw, heads, n, c // heads)  # 4D for the fused SDPA kernels
    if mask is not None:
        mask = mask[None, :, None].expand(b, nw, 1, n, n).reshape(b * nw, 1, n, n)
    out = F.scaled_dot_product_attention(qw.reshape(flat), kw.reshape(flat), vw.reshape(flat), attn_mask=mask)
    out = window_reverse(_merge_heads(out.view(b, nw, heads, n, -1)), win, padded)
    if shift:
        out = torch.roll(out, shifts=shift, dims=1)
    return out[:, :f, :h, :w]


def global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int = 1) -> torch.Tensor:
    """Multi-head attention over all F*H*W tokens: (B, F, H, W, C) -> (B, F, H, W, C)."""
    b, f, h, w, c = q.shape
    if c % heads:
        raise ValueError(f"heads={heads} must divide the channels ({c})")
    qf, kf, vf = (_heads(x.reshape(b, f * h * w, c), heads) for x in (q, k, v))  # (B, heads, FHW, d)
    return _merge_heads(F.scaled_dot_product_attention(qf, kf, vf)).view(b, f, h, w, c)
