"""Start the video U-Net from a pretrained diffusers U-Net (Sec. 4.3: the paper partially loads ModelScope).

Two sources: a `UNet3DConditionModel` folder (ModelScope's text-to-video U-Net, diffusers format) gives every
tensor but the fusions and the temporal skips; a `UNet2DConditionModel` folder (a Stable Diffusion image U-Net)
gives the spatial modules. Names map explicitly (`source_name`), shapes are checked, attention head splits are
checked (they shape no tensor but change the result), and every new layer's output projection is zeroed, so the
loaded model computes what the source computes: ModelScope exactly, or the image U-Net frame by frame."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from diffusers import UNet2DConditionModel, UNet3DConditionModel
from diffusers.models.attention_processor import Attention

from model.unet import VideoUNet

# Our module paths that exist under the same name in both diffusers U-Nets (LDM's spatial modules).
_SPATIAL = re.compile(r"(conv_in|time_embedding|conv_norm_out|conv_out"
                      r"|(down_blocks|up_blocks)\.\d+\.(resnets|attentions|downsamplers|upsamplers)"
                      r"|mid_block\.(resnets|attentions))\.")
# ModelScope's temporal modules, under the same name in a UNet3DConditionModel only.
_TEMPORAL = re.compile(r"(transformer_in|(down_blocks|up_blocks|mid_block)(\.\d+)?\.(temp_convs|temp_attentions))\.")
# The output layer of each module that starts as the identity (a zero output is "no change"): temporal conv's
# last conv, the temporal transformers' proj_out, the 1x1x1 merges, Swap-CA's Proj_out, the temporal skips'
# projections (no diffusers U-Net has temporal skips).
_ZERO_WHEN_NEW = re.compile(r"(temp_convs\.\d+\.conv4\.3|temp_attentions\.\d+\.proj_out|transformer_in\.proj_out"
                            r"|fusions\.\d+\.conv|fusions\.\d+\.proj_out|temporal_skip\.proj)\.(weight|bias)$")
FORMATS = {"UNet3DConditionModel": UNet3DConditionModel, "UNet2DConditionModel": UNet2DConditionModel}


def source_name(name: str, source_format: str) -> str | None:
    """The source tensor that feeds our tensor `name`, or None for a layer the source does not have."""
    if _SPATIAL.match(name):
        return name
    if source_format == "UNet3DConditionModel" and _TEMPORAL.match(name):
        return name
    return None


@dataclass
class LoadReport:
    """What loading did, by tensor name (ours for loaded and new, the source's for unused)."""

    source: str
    source_format: str
    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)  # 1x1 conv <-> Linear projections (same map)
    new: list[str] = field(default_factory=list)
    zeroed: list[str] = field(default_factory=list)  # new output layers set to zero
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines: counts, then the new and unused tensors grouped by module."""
        def groups(names: list[str]) -> str:
            by_module: dict[str, int] = defaultdict(int)
            for n in names:
                parts = re.sub(r"\.\d+(?=\.|$)", ".*", n).split(".")
                depth = {"down_blocks": 3, "up_blocks": 3, "mid_block": 2}.get(parts[0], 1)
                by_module[".".join(parts[:depth])] += 1
            return ", ".join(f"{k} ({v})" for k, v in sorted(by_module.items())) or "none"

        return (f"pretrained {self.source_format} from {self.source}: loaded {len(self.loaded)} tensors "
                f"({len(self.reshaped)} reshaped 1x1 conv <-> linear), new {len(self.new)} "
                f"({len(self.zeroed)} output tensors zeroed), unused {len(self.unused)}\n"
                f"  new: {groups(self.new)}\n  unused: {groups(self.unused)}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("source", "source_format", "loaded", "reshaped", "new", "zeroed",
                                              "unused")}


def _source_format(name_or_path: str, subfolder: str | None) -> str:
    """The diffusers class that saved the folder (its config.json's _class_name)."""
    config = UNet2DConditionModel.load_config(name_or_path, subfolder=subfolder)
    class_name = config.get("_class_name")
    if class_name not in FORMATS:
        raise ValueError(f"{name_or_path}: a {class_name or 'unknown'} checkpoint; expected one of {sorted(FORMATS)}")
    return class_name


def _check_heads(unet: VideoUNet, source: torch.nn.Module, source_format: str) -> None:
    """Every attention with a counterpart must split its heads the same way, or the loaded model computes
    something else with the right tensors."""
    theirs = {n: m.heads for n, m in source.named_modules() if isinstance(m, Attention)}
    for name, module in unet.named_modules():
        if isinstance(module, Attention) and source_name(name + ".to_q.weight", source_format):
            if theirs.get(name) not in (None, module.heads):
                raise ValueError(f"{name}: the source splits {theirs[name]} heads, this config {module.heads} "
                                 f"(set UNetConfig.attention_head_dim / transformer_in_heads to the source's)")


def load_pretrained(unet: VideoUNet, name_or_path: str | Path, subfolder: str | None = None,
                    log: Callable[[str], None] | None = print) -> LoadReport:
    """Copy every tensor of a diffusers U-Net that has a counterpart in `unet`, zero the new layers' outputs, and
    print (via `log`) and return the report. A pipeline folder works too: its `unet/` subfolder is used."""
    name_or_path = str(name_or_path)
    if subfolder is None and (Path(name_or_path) / "unet" / "config.json").is_file():
        subfolder = "unet"
    source_format = _source_format(name_or_path, subfolder)
    source = FORMATS[source_format].from_pretrained(name_or_path, subfolder=subfolder, low_cpu_mem_usage=False)
    _check_heads(unet, source, source_format)
    theirs = source.state_dict()
    report = LoadReport(source=name_or_path + (f"/{subfolder}" if subfolder else ""), source_format=source_format)
    mismatched = []
    used = set()
    with torch.no_grad():
        for name, tensor in unet.state_dict().items():
            src = source_name(name, source_format)
            if src is None or src not in theirs:
                report.new.append(name)
                if _ZERO_WHEN_NEW.search(name):
                    tensor.zero_()
                    report.zeroed.append(name)
                continue
            value = theirs[src]
            if value.shape != tensor.shape:
                # A 1x1 convolution and a Linear layer are the same map (SD 1.x vs 2.x projections).
                if value.numel() == tensor.numel() and value.squeeze().shape == tensor.squeeze().shape:
                    value = value.reshape(tensor.shape)
                    report.reshaped.append(name)
                else:
                    mismatched.append(f"{name}: ours {tuple(tensor.shape)}, source {tuple(value.shape)}")
                    continue
            tensor.copy_(value)
            report.loaded.append(name)
            used.add(src)
    if mismatched:
        raise ValueError(f"{len(mismatched)} tensor(s) of {name_or_path} do not fit this UNetConfig: "
                         + "; ".join(mismatched[:5]))
    report.unused = sorted(set(theirs) - used)
    if log is not None:
        log(report.summary())
    return report

