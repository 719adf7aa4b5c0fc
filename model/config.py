"""The video U-Net's hyper-parameters: one typed dataclass, validated at construction, with the paper's
sizes (`UNetConfig.paper()`) and a CPU-sized one (`UNetConfig.tiny()`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

FUSIONS = ("swap", "none", "spatial_queries", "temporal_queries", "st_wsa")
FUSION_ATTENTIONS = ("window", "global")


@dataclass(frozen=True)
class UNetConfig:
    """Spatial-temporal separable U-Net with Swap-CA fusion (Sec. 4, Fig. 3). Defaults are the paper's model:
    ModelScope's text-to-video U-Net (the paper's pretrained start, Sec. 4.3) plus Swap-CA."""

    # Latent channels of the frozen f=8 image autoencoder (Sec. 4.1, latent diffusion).
    in_channels: int = 4
    out_channels: int = 4
    # ModelScope's U-Net widths per resolution level (Sec. 4.3: partially loaded from ModelScope).
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    # Which levels carry spatial/temporal attention; ModelScope's lowest level is ResBlock + temporal conv only.
    attention_levels: tuple[bool, ...] = (True, True, True, False)
    # Layers per encoder level (the decoder has one more), as in LDM / ModelScope.
    layers_per_block: int = 2
    # Text-state width of the frozen CLIP text encoder (OpenCLIP ViT-H/14, ModelScope's).
    cross_attention_dim: int = 1024
    # Head width of the spatial and temporal transformers: ModelScope's 64 (heads = C / 64). A Stable
    # Diffusion 1.x U-Net has 8 heads per layer instead; its loader names the width it needs.
    attention_head_dim: int = 64
    # ModelScope's temporal transformer after conv_in: 8 heads of width 64.
    transformer_in_heads: int = 8
    transformer_in_head_dim: int = 64
    # LDM / ModelScope normalisation: GroupNorm with 32 groups, eps 1e-5.
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    # ModelScope's transformers project in and out with Linear layers (SD 1.x uses 1x1 convs: False).
    use_linear_projection: bool = True
    # ModelScope's temporal convolutions train with dropout 0.1.
    temporal_conv_dropout: float = 0.1
    # Fusion at the end of each encoder/decoder block (Sec. 4.2): "swap" is Swap-CA (eq. 2-3); the Table 2/3
    # ablations are "none" (1x1x1 conv merge), "spatial_queries"/"temporal_queries" (fixed direction) and
    # "st_wsa" (s + t, then 3D window self-attention).
    fusion: str = "swap"
    # Window attention (the paper's 3DW-MCA) or global attention over all F*H*W tokens (Table 2 ablation).
    fusion_attention: str = "window"
    # 3D window (frames, height, width) in latent pixels (appendix E.2: 8 x 3 x 6).
    window: tuple[int, int, int] = (8, 3, 6)
    # Swap-CA attention head width (heads = C / fusion_head_dim); the paper does not state it, 64 as in LDM.
    fusion_head_dim: int = 64
    # Addition mode (False: Swap-CA skipped, z = t + s) trains stages 1-2; stage 3 turns Swap-CA on (D.1).
    fusion_enabled: bool = True
    # Skip connections between temporal modules separated by a spatial down/up-sampler (Sec. 4: "connect
    # temporal modules separated by spatial down/upsampling modules"; appendix C.3 turns them off for images).
    temporal_skips: bool = True

    def __post_init__(self) -> None:
        # JSON round trips give lists; the dataclass holds tuples.
        for name in ("block_out_channels", "attention_levels", "window"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"UNetConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("in_channels", "out_channels", "layers_per_block", "cross_attention_dim", "attention_head_dim",
                     "transformer_in_heads", "transformer_in_head_dim", "norm_num_groups", "fusion_head_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "must be a positive integer")
        if not self.block_out_channels or any(not isinstance(c, int) or c < 1 for c in self.block_out_channels):
            raise bad("block_out_channels", "must be positive integers, one per level")
        if len(self.attention_levels) != len(self.block_out_channels):
            raise bad("attention_levels", f"needs one flag per level ({len(self.block_out_channels)})")
        for c in self.block_out_channels:
            if c % self.norm_num_groups:
                raise bad("norm_num_groups", f"must divide every block width ({c})")
            if c % self.attention_head_dim:
                raise bad("attention_head_dim", f"must divide every block width ({c})")
            if self.fusion != "none" and c % self.fusion_head_dim:
                raise bad("fusion_head_dim", f"must divide every block width ({c})")
        if self.fusion not in FUSIONS:
            raise bad("fusion", f"must be one of {FUSIONS}")
        if self.fusion_attention not in FUSION_ATTENTIONS:
            raise bad("fusion_attention", f"must be one of {FUSION_ATTENTIONS}")
        if len(self.window) != 3 or any(not isinstance(w, int) or w < 1 for w in self.window):
            raise bad("window", "must be three positive integers (frames, height, width)")
        for name in ("use_linear_projection", "fusion_enabled", "temporal_skips"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "must be true or false")
        if not 0.0 <= self.temporal_conv_dropout < 1.0:
            raise bad("temporal_conv_dropout", "must be in [0, 1)")
        if self.norm_eps <= 0:
            raise bad("norm_eps", "must be positive")

    @classmethod
    def paper(cls, **overrides: Any) -> "UNetConfig":
        """The paper's model (ModelScope's U-Net sizes + Swap-CA with 8x3x6 windows)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "UNetConfig":
        """Four levels (so 43 -> 22 -> 11 -> 6 is exercised) at widths that train on a CPU in seconds; the
        transformer_in split (8 heads) is the one a tiny `UNet3DConditionModel(attention_head_dim=8)` has."""
        sizes: dict[str, Any] = dict(
            block_out_channels=(16, 16, 32, 32), cross_attention_dim=32, attention_head_dim=8,
            transformer_in_heads=8, transformer_in_head_dim=8, norm_num_groups=8, fusion_head_dim=8,
            window=(2, 3, 6), layers_per_block=1,
        )
        return cls(**{**sizes, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples become lists), for checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UNetConfig":
        """Inverse of `to_dict`; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"UNetConfig: unknown field(s) {unknown}")
        return cls(**data)
