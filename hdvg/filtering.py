"""`filter_video`: the paper's source criteria (HD, widescreen, long enough) as a plain predicate."""
from __future__ import annotations

from hdvg.config import FilterConfig
from hdvg.probe import VideoInfo


def filter_video(info: VideoInfo, cfg: FilterConfig) -> str | None:
    """None when the video is kept, else the reason it is filtered (recorded in OUT/videos)."""
    short = min(info.width, info.height)
    if short < cfg.min_height:
        return f"below {cfg.min_height}p: displayed {info.width}x{info.height}"
    if abs(info.aspect / cfg.aspect_ratio - 1) > cfg.aspect_tolerance:
        return (f"not widescreen: aspect {info.aspect:.3f} ({info.width}x{info.height}) vs "
                f"{cfg.aspect_ratio:.3f} +/- {cfg.aspect_tolerance:.0%}")
    if info.duration < cfg.min_duration_s:
        return f"too short: {info.duration:.2f} s < {cfg.min_duration_s:g} s"
    return None
