"""The spatial-temporal separable video U-Net (Sec. 4.1, Fig. 3): ModelScope's LDM hourglass with Swap-CA.

Each layer runs ModelScope's sequence ResBlock -> temporal conv -> spatial transformer (self-attention + text
cross-attention, per frame) -> temporal transformer (self-attention per pixel). Its spatial features s are the
output of the spatial part and its temporal features t what the last temporal module adds to them, so
z = s + t is exactly ModelScope's layer; the layer closes with a fusion of s and t: Swap-CA on the last layer of
every encoder and decoder block, a zero-initialised 1x1x1 merge elsewhere. Temporal skip connections carry t of
a block's last layer across its down/up-sampler to the next block's first layer (model/temporal_skip.py).
Frames fold into the batch (B*F, C, H, W) for the 2D layers; the temporal layers unfold them. Module names
follow diffusers' U-Nets (`down_blocks.1.attentions.0...`) so pretrained weights map by name
(model/pretrained.py)."""
from __future__ import annotations

import inspect

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, TemporalConvLayer, Upsample2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.models.transformers.transformer_temporal import TransformerTemporalModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from model.config import UNetConfig
from model.swapca import MergeConv, SwapCrossAttention3D, build_fusion
from model.temporal_skip import TemporalSkip


def _temporal_transformer(cfg: UNetConfig, channels: int, heads: int, head_dim: int) -> TransformerTemporalModel:
    """Temporal self-attention per pixel (text never enters it), starting as the identity."""
    module = TransformerTemporalModel(heads, head_dim, in_channels=channels, num_layers=1,
                                      cross_attention_dim=cfg.cross_attention_dim, norm_num_groups=cfg.norm_num_groups)
    nn.init.zeros_(module.proj_out.weight)
    nn.init.zeros_(module.proj_out.bias)
    return module


class VideoBlock(nn.Module):
    """A run of layers at one resolution, then an optional 2x down- or up-sampler. Layer i has in_channels[i]
    inputs (after concatenating its skip, in the decoder) and `attention[i]` says whether it has the spatial and
    temporal transformers. `fusions[i]` closes layer i. `temporal_skip_from` is the width of the previous block's
    temporal features when a temporal skip connection arrives at this block's first layer."""

    def __init__(self, cfg: UNetConfig, in_channels: list[int], out_channels: int, temb_channels: int,
                 attention: list[bool], fusions: list[nn.Module], resample: str | None = None,
                 temporal_skip_from: int | None = None):
        super().__init__()
        heads = out_channels // cfg.attention_head_dim
        self.layer_attention = attention
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=c, out_channels=out_channels, temb_channels=temb_channels, eps=cfg.norm_eps,
                          groups=cfg.norm_num_groups, non_linearity="silu") for c in in_channels)
        self.temp_convs = nn.ModuleList(
            TemporalConvLayer(out_channels, out_channels, dropout=cfg.temporal_conv_dropout,
                              norm_num_groups=cfg.norm_num_groups) for _ in in_channels)
        self.attentions = nn.ModuleList(
            Transformer2DModel(heads, cfg.attention_head_dim, in_channels=out_channels, num_layers=1,
                               cross_attention_dim=cfg.cross_attention_dim, norm_num_groups=cfg.norm_num_groups,
                               use_linear_projection=cfg.use_linear_projection) for a in attention if a)
        self.temp_attentions = nn.ModuleList(
            _temporal_transformer(cfg, out_channels, heads, cfg.attention_head_dim) for a in attention if a)
        self.fusions = nn.ModuleList(fusions)
        self.temporal_skip = None if temporal_skip_from is None else TemporalSkip(temporal_skip_from, out_channels)
        self.downsamplers = self.upsamplers = None
        if resample == "down":
            self.downsamplers = nn.ModuleList([Downsample2D(out_channels, use_conv=True, out_channels=out_channels,
                                                            padding=1, name="op")])
        elif resample == "up":
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True, out_channels=out_channels)])
        self.gradient_checkpointing = False

    def layer(self, i: int, x: torch.Tensor, temb: torch.Tensor, text: torch.Tensor, num_frames: int,
              images: bool, skipped_t: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer i on (B*F, C_in, H, W) -> z (B*F, C, H, W) and its temporal features t (None in images mode,
        which runs the spatial modules only). `skipped_t`, the previous block's t, joins t before the fusion."""
        h = self.resnets[i](x, temb)
        if self.layer_attention[i]:
            j = sum(self.layer_attention[:i])
            if not images:
                h = self.temp_convs[i](h, num_frames=num_frames)
            s = self.attentions[j](h, encoder_hidden_states=text, return_dict=False)[0]
            if images:
                return s, None
            t = self.temp_attentions[j](s, num_frames=num_frames, return_dict=False)[0] - s
        else:
            s = h
            if images:
                return s, None
            t = self.temp_convs[i](s, num_frames=num_frames) - s
        if skipped_t is not None:
            t = t + self.temporal_skip(skipped_t, s.shape[-2:])
        return self.fusions[i](s, t, num_frames), t

    def forward(self, x: torch.Tensor, temb: torch.Tensor, text: torch.Tensor, num_frames: int, images: bool,
                skips: list[torch.Tensor] | None = None, upsample_size: tuple[int, int] | None = None,
                skipped_t: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
        """Encoder (skips None): returns h, the skip outputs (every layer, then the down-sampled h) and the last
        layer's t. Decoder: pops one skip per layer from the end of `skips`, up-samples to `upsample_size` (odd
        sizes). `skipped_t` is the previous block's last t; it is used when this block has a temporal skip."""
        outputs = []
        t = skipped_t if self.temporal_skip is not None else None
        for i in range(len(self.resnets)):
            if skips is not None:
                x = torch.cat([x, skips.pop()], dim=1)
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x, t = checkpoint(self.layer, i, x, temb, text, num_frames, images, t if i == 0 else None,
                                  use_reentrant=False)
            else:
                x, t = self.layer(i, x, temb, text, num_frames, images, t if i == 0 else None)
            outputs.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            outputs.append(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, upsample_size)
        return x, outputs, t


class VideoUNet(ModelMixin, ConfigMixin):
    """sample (B, C, F, H, W) latents, timestep (B,) or scalar, text states (B, L, D) -> (B, C, F, H, W).
    `images=True` takes F == 1 images and skips every temporal module and fusion (joint image-video
    training, appendix C.3): the model is then exactly its 2D image U-Net.

    A diffusers model: `VideoUNet(cfg)` or `VideoUNet(**UNetConfig fields)`; its config is UNetConfig's fields,
    so `save_pretrained` writes config.json + diffusion_pytorch_model.safetensors and `from_pretrained` reads
    them back."""

    def __init__(self, cfg: UNetConfig | None = None, **fields):
        super().__init__()
        cfg = cfg if cfg is not None else UNetConfig.from_dict(fields)
        self.register_to_config(**cfg.to_dict())  # self.config: the fields, as a frozen dict
        channels = cfg.block_out_channels
        levels = len(channels)
        temb_channels = 4 * channels[0]
        self.conv_in = nn.Conv2d(cfg.in_channels, channels[0], kernel_size=3, padding=1)
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels, act_fn="silu")
        self.transformer_in = _temporal_transformer(cfg, channels[0], cfg.transformer_in_heads,
                                                    cfg.transformer_in_head_dim)
        fusion_index = 0

        def fusions(width: int, layers: int) -> list[nn.Module]:
            """1x1x1 merges, then the block's Swap-CA (or ablation) closing its last layer."""
            nonlocal fusion_index
            closing = build_fusion(cfg, width, fusion_index)
            fusion_index += 1
            return [MergeConv(width) for _ in range(layers - 1)] + [closing]

        self.down_blocks = nn.ModuleList()
        for i, width in enumerate(channels):
            ins = [channels[max(i - 1, 0)]] + [width] * (cfg.layers_per_block - 1)
            self.down_blocks.append(VideoBlock(
                cfg, ins, width, temb_channels, [cfg.attention_levels[i]] * cfg.layers_per_block,
                fusions(width, cfg.layers_per_block), resample="down" if i < levels - 1 else None,
                temporal_skip_from=channels[i - 1] if cfg.temporal_skips and i > 0 else None))
        mid = channels[-1]
        # ModelScope's mid block: a layer with both transformers, then ResBlock + temporal conv.
        self.mid_block = VideoBlock(cfg, [mid, mid], mid, temb_channels, [True, False],
                                    [MergeConv(mid), MergeConv(mid)])
        self.up_blocks = nn.ModuleList()
        reversed_channels = list(reversed(channels))
        reversed_attention = list(reversed(cfg.attention_levels))
        # Widths of the encoder's skips in the order they are made (conv_in, each layer, each down-sampler);
        # the decoder consumes them last first.
        skip_widths = [channels[0]] + [w for i, w in enumerate(channels)
                                       for _ in range(cfg.layers_per_block + (i < levels - 1))]
        prev = reversed_channels[0]
        layers = cfg.layers_per_block + 1
        for i, width in enumerate(reversed_channels):
            ins = [(prev if j == 0 else width) + skip_widths.pop() for j in range(layers)]
            self.up_blocks.append(VideoBlock(
                cfg, ins, width, temb_channels, [reversed_attention[i]] * layers, fusions(width, layers),
                resample="up" if i < levels - 1 else None,
                temporal_skip_from=prev if cfg.temporal_skips and i > 0 else None))
            prev = width
        self.conv_norm_out = nn.GroupNorm(cfg.norm_num_groups, channels[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels[0], cfg.out_channels, kernel_size=3, padding=1)
        self.set_fusion_enabled(cfg.fusion_enabled)

    def set_fusion_enabled(self, enabled: bool) -> None:
        """Swap-CA on (True) or addition mode (False: z = t + s). The parameters stay the same either way; in
        addition mode they are frozen (requires_grad False), so DDP sees no unused trainable parameters."""
        self.fusion_enabled = bool(enabled)
        for module in self.modules():
            if isinstance(module, SwapCrossAttention3D):
                module.enabled = self.fusion_enabled
                module.requires_grad_(self.fusion_enabled)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each layer in the backward pass instead of storing its activations."""
        for block in self.blocks():
            block.gradient_checkpointing = True

    def blocks(self) -> list[VideoBlock]:
        """Encoder, mid and decoder blocks in execution order."""
        return [*self.down_blocks, self.mid_block, *self.up_blocks]

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | int | float, encoder_hidden_states: torch.Tensor,
                images: bool = False) -> torch.Tensor:
        if sample.dim() != 5:
            raise ValueError(f"sample must be (B, C, F, H, W), got {tuple(sample.shape)}")
        b, _, num_frames, height, width = sample.shape
        if images and num_frames != 1:
            raise ValueError(f"images=True takes F == 1, got F={num_frames}")
        if encoder_hidden_states.shape[0] != b or encoder_hidden_states.shape[-1] != self.config.cross_attention_dim:
            raise ValueError(f"encoder_hidden_states must be (B={b}, L, {self.config.cross_attention_dim}), "
                             f"got {tuple(encoder_hidden_states.shape)}")
        timestep = torch.as_tensor(timestep, device=sample.device)
        timestep = timestep.reshape(-1).expand(b) if timestep.numel() == 1 else timestep
        temb = self.time_embedding(self.time_proj(timestep).to(sample.dtype))  # (B, 4*C0)
        temb = temb.repeat_interleave(num_frames, dim=0)  # (B*F, 4*C0)
        text = encoder_hidden_states.repeat_interleave(num_frames, dim=0)  # (B*F, L, D)

        h = sample.permute(0, 2, 1, 3, 4).reshape(b * num_frames, -1, height, width)  # (B*F, C, H, W)
        h = self.conv_in(h)
        if not images:
            h = self.transformer_in(h, num_frames=num_frames, return_dict=False)[0]
        skips = [h]
        # Each block but the last of the encoder and of the decoder ends in a resampler; its last t skips across
        # it to the next block of the same path (never into or out of the mid block, which no resampler borders).
        t = None
        for block in self.down_blocks:
            h, outputs, t = block(h, temb, text, num_frames, images, skipped_t=t)
            skips += outputs
        h, _, _ = self.mid_block(h, temb, text, num_frames, images)
        t = None
        for block in self.up_blocks:
            # The encoder's size at the next level up, so odd sides (43 -> 22 -> 11 -> 6) come back exactly.
            upsample_size = skips[-len(block.resnets) - 1].shape[-2:] if block.upsamplers is not None else None
            h, _, t = block(h, temb, text, num_frames, images, skips=skips, upsample_size=upsample_size,
                            skipped_t=t)
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        return h.view(b, num_frames, -1, height, width).permute(0, 2, 1, 3, 4)  # (B, C, F, H, W)


# diffusers builds a model from config.json by the names of __init__'s parameters: they are UNetConfig's fields
VideoUNet.__init__.__signature__ = inspect.Signature(
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
     inspect.Parameter("cfg", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=value)
       for name, value in UNetConfig.paper().to_dict().items()])


def parameter_count(cfg: UNetConfig) -> int:
    """Parameters of the model `cfg` describes, counted without allocating them (meta device)."""
    with torch.device("meta"):
        return sum(p.numel() for p in VideoUNet(cfg).parameters())


if __name__ == "__main__":
    # python -m model.unet: the paper preset's size (Table 2: 1.48 G without Swap-CA, 1.60 G with).
    for fusion in ("none", "swap"):
        for temporal_skips in (False, True):
            count = parameter_count(UNetConfig.paper(fusion=fusion, temporal_skips=temporal_skips))
            print(f"UNetConfig.paper(fusion={fusion!r}, temporal_skips={temporal_skips}): {count:,} "
                  f"({count / 1e9:.3f} G)")
