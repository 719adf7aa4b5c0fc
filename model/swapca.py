"""Fusion of the spatial features s and the temporal features t at the end of each U-Net block (Sec. 4.2).

Swap-CA (eq. 2): s~ = Proj_in(GN(s)); t~ = Proj_in(GN(t)); h = 3DW-MCA(LN(s~), LN(t~)) + s~;
h = FFN(LN(h)) + h; z = t + s + Proj_out(h), with Proj_out zero-initialised so a new block starts as z = t + s.
Successive blocks swap the query role (eq. 3) and shift the windows along time by ceil(Fw/2) on every other
block. Everywhere else, and in the no-fusion baseline, s and t merge with a zero-initialised 1x1x1 convolution.
Features arrive with frames folded into the batch, (B*F, C, H, W)."""
from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from model.attention import global_attention, window_attention_3d
from model.config import UNetConfig

QUERIES = ("spatial", "temporal", "joint")


def unfold_frames(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B*F, C, H, W) -> (B, F, H, W, C)."""
    bf, c, h, w = x.shape
    return x.view(bf // num_frames, num_frames, c, h, w).permute(0, 1, 3, 4, 2)


def fold_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W, C) -> (B*F, C, H, W)."""
    b, f, h, w, c = x.shape
    return x.permute(0, 1, 4, 2, 3).reshape(b * f, c, h, w)


class MergeConv(nn.Module):
    """z = s + t + Conv1x1x1([s, t]); the convolution starts at zero, so a new merge is the plain sum."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, kernel_size=1)  # 1x1x1 == per-frame 1x1
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, s: torch.Tensor, t: torch.Tensor, num_frames: int) -> torch.Tensor:
        return s + t + self.conv(torch.cat([s, t], dim=1))


class SwapCrossAttention3D(nn.Module):
    """One Swap-CA block. `query` says whose features ask: "spatial" (eq. 2: s~ queries t~), "temporal" (eq. 3:
    t~ queries s~), or "joint" (the 3D spatial-temporal WSA ablation: window self-attention over s + t).
    `enabled = False` is addition mode (z = t + s); it is a plain attribute, so the state dict does not change."""

    def __init__(self, channels: int, *, query: str, heads: int, window: tuple[int, int, int], shift: int,
                 attention: str = "window", groups: int = 32):
        super().__init__()
        if query not in QUERIES:
            raise ValueError(f"query={query!r}: must be one of {QUERIES}")
        if attention not in ("window", "global"):
            raise ValueError(f"attention={attention!r}: must be 'window' or 'global'")
        self.query, self.heads, self.window, self.shift, self.attention = query, heads, tuple(window), shift, attention
        self.enabled = True
        self.norm_s = nn.GroupNorm(groups, channels, eps=1e-6)
        self.norm_t = None if query == "joint" else nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)  # one Proj_in for s and t (eq. 2)
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = None if query == "joint" else nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(channels, channels, bias=False)
        self.to_v = nn.Linear(channels, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)
        self.norm_ff = nn.LayerNorm(channels)
        self.ff = FeedForward(channels, activation_fn="geglu")  # LDM's transformer FFN: GEGLU, 4x
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def attend(self, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """Window (3DW-MCA) or global multi-head cross-attention, (B, F, H, W, C) -> (B, F, H, W, C)."""
        q, k, v = self.to_q(q), self.to_k(kv), self.to_v(kv)
        if self.attention == "global":
            out = global_attention(q, k, v, heads=self.heads)
        else:
            out = window_attention_3d(q, k, v, window=self.window, shift=self.shift, heads=self.heads)
        return self.to_out(out)

    def forward(self, s: torch.Tensor, t: torch.Tensor, num_frames: int) -> torch.Tensor:
        """s, t: (B*F, C, H, W) -> z (B*F, C, H, W)."""
        if not self.enabled:
            return s + t
        if self.query == "joint":
            x = self.proj_in(unfold_frames(self.norm_s(s + t), num_frames))  # (B, F, H, W, C)
            normed = self.norm_q(x)
            h = self.attend(normed, normed) + x
        else:
            s_ = self.proj_in(unfold_frames(self.norm_s(s), num_frames))
            t_ = self.proj_in(unfold_frames(self.norm_t(t), num_frames))
            q_, kv_ = (s_, t_) if self.query == "spatial" else (t_, s_)
            h = self.attend(self.norm_q(q_), self.norm_kv(kv_)) + q_
        h = self.ff(self.norm_ff(h)) + h
        return s + t + fold_frames(self.proj_out(h))


def build_fusion(cfg: UNetConfig, channels: int, index: int) -> nn.Module:
    """The fusion closing the `index`-th U-Net block (counted in execution order, encoder then decoder).
    Swap-CA alternates spatial / temporal queries block by block; every window variant shifts its frames by
    ceil(Fw/2) on odd blocks (Swin's regular / shifted alternation), so the fixed-direction ablations differ from
    Swap-CA only in who queries."""
    if cfg.fusion == "none":
        return MergeConv(channels)
    query = {"swap": ("spatial", "temporal")[index % 2], "spatial_queries": "spatial",
             "temporal_queries": "temporal", "st_wsa": "joint"}[cfg.fusion]
    shift = math.ceil(cfg.window[0] / 2) if index % 2 and cfg.fusion_attention == "window" else 0
    return SwapCrossAttention3D(channels, query=query, heads=channels // cfg.fusion_head_dim, window=cfg.window,
                                shift=shift, attention=cfg.fusion_attention, groups=cfg.norm_num_groups)
