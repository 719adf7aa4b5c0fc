"""`hdvg plan`: the cluster, days and cost to build HD-VG-130M, from measured per-stage throughputs.

`capacity_plan(PlanInputs())` sizes each worker group of deploy/ so that its stage finishes within
`target_days` (the stages run concurrently, pipelined per video, so the job takes about that long), and
prices the node-hours. Every input is a field below with where its number comes from: "measured" (read from
hdvg/measured.json, which the benchmarks write beside their result files in bench/results/ and which ships in
the package, so an installed hdvg plans without the repository; how each is measured is in docs/scale.md), "paper", or "assumption" (not measured here; change any with `hdvg plan --set name=value`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from hdvg.config import ConfigError

DAY = 86400.0
MEASURED = Path(__file__).with_name("measured.json")  # {key: {"value", "bench", "date"}}


def measured(key: str) -> float:
    """A measured constant of the plan, as the benchmark that measures it last recorded it."""
    try:
        return float(json.loads(MEASURED.read_text())[key]["value"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"invalid configuration:\n  {key}: no measured value in {MEASURED} ({type(exc).__name__}: "
                          f"{exc}); run the benchmark that writes it or give --set {key}=VALUE") from None


def record_measured(values: dict[str, float], bench: str, date: str) -> None:
    """Called by a benchmark: the plan's constants it measured, with its name and the date."""
    table = json.loads(MEASURED.read_text()) if MEASURED.exists() else {}
    table.update({key: {"value": value, "bench": bench, "date": date} for key, value in values.items()})
    MEASURED.write_text(json.dumps(table, indent=1) + "\n")


def _measured(key: str):
    return field(default_factory=lambda: measured(key))


def measured_or(key: str, fallback: float) -> tuple[float, bool]:
    """(a measured constant, True), or (`fallback`, False) while no benchmark has measured it."""
    try:
        return measured(key), True
    except ConfigError:
        return fallback, False


# TransNetV2 frames/s one GPU must score for 5 GPUs to keep up with HD-VILA-100M's 371.5k h at 30 fps in 7
# days: the target until bench/bench_detect.py has measured it on a GPU
DETECT_GPU_TARGET = 15_000.0


@dataclass(frozen=True)
class PlanInputs:
    # ---- the dataset (paper)
    source_videos: int = 3_300_000        # HD-VILA-100M videos, the sources of HD-VG-130M (paper)
    source_hours: float = 371_500.0       # HD-VILA-100M hours: the spans the job decodes (paper)
    clips: int = 130_000_000              # HD-VG-130M clips = keyframes to caption, one per clip (paper)
    # ---- CPU stages (measured by bench/bench_cpu.py; docs/scale.md)
    # one decode: 48x27 frames sent to the TransNetV2 actors + scale to 720p + x264 veryfast crf 22 + keyframes
    video_cpu_s_per_video_s: float = _measured("cut_gpu_detect_cpu_s_per_video_s")
    probe_cpu_s_per_video_s: float = _measured("probe_cpu_s_per_video_s")  # ffprobe, packet count
    cpu_utilization: float = 0.75         # assumption: share of reserved vCPU-time doing work (stragglers, I/O)
    video_node_vcpus: int = 16            # deploy/: `video` group, num-cpus 16
    # ---- shot detection: TransNetV2 on a GPU actor pool (docs/shots.md)
    source_fps: float = 30.0              # assumption: mean frame rate of HD-VILA's YouTube sources
    detect_frames_per_gpu_s: float = field(  # measured by bench/bench_detect.py on a GPU, else the target
        default_factory=lambda: measured_or("transnetv2_gpu_frames_per_s", DETECT_GPU_TARGET)[0])
    # TransNetV2 in the video tasks instead (detect.device cpu): measured by bench/bench_detect.py
    detect_cpu_s_per_video_s: float = _measured("transnetv2_cpu_s_per_video_s")
    # ---- captioning (measured: BLIP-2 OPT-2.7B fp16, whole stage, 30 new tokens, NVIDIA H200; docs/scale.md)
    caption_keyframes_per_gpu_s: float = 60.2   # beam 5 (captioner default), batch 64 (deploy's curate.yaml)
    gpu_utilization: float = 0.75         # assumption: JPEG decode/preprocessing and waiting for video tasks
    # ---- downloads (assumptions: not measured here, no YouTube access)
    source_mbps: float = 2.5              # assumption: mean bitrate of a 720p YouTube download
    download_node_gbps: float = 1.0       # assumption: sustained ingest per `download` node
    videos_per_ip_day: float = 1000.0     # assumption: YouTube downloads one IP sustains before bot checks
    # ---- outputs
    output_mbps: float = 2.0              # assumption: mean bitrate of the 720p clips (x264 crf 22)
    # measured by bench/bench_writer.py: MB/s one shard writer commits
    writer_mb_s: float = _measured("writer_mb_s")
    clip_fraction: float = 0.999          # measured: clip seconds / source seconds on the 1080p test video
    # ---- prices: on-demand list prices, USD, AWS us-east-1, as known on 2025-06 (assumption: check them)
    video_node_usd_h: float = 0.714       # c7i.4xlarge: 16 vCPU, 32 GiB
    download_node_usd_h: float = 0.1785   # c7i.xlarge: 4 vCPU, 8 GiB, up to 12.5 Gbit/s
    head_node_usd_h: float = 0.4032       # m7i.2xlarge: 8 vCPU, 32 GiB
    gpu_usd_h: float = 4.0                # assumption: one H100/H200-class GPU-hour, on-demand, with its host share
    proxy_ip_usd_month: float = 2.0       # assumption: one datacenter proxy IP; residential proxies bill per GB
    storage_usd_gb_month: float = 0.022   # S3 Standard, 50-500 TB tier
    # ---- the goal
    target_days: float = 7.0


@dataclass(frozen=True)
class GroupPlan:
    group: str          # worker group of deploy/k8s and deploy/ray
    work: str           # what the group does, in its unit
    nodes: int
    node_hours: float
    usd: float


@dataclass(frozen=True)
class Plan:
    inputs: PlanInputs
    groups: list[GroupPlan]
    proxy_ips: int
    download_tb: float
    output_tb: float
    storage_usd_month: float
    output_mb_s: float     # clip bytes per second the writers commit, on average over the run
    writers: int           # shard writers that rate needs (shards.writers: per_node gives one per video node)

    @property
    def compute_usd(self) -> float:
        return sum(g.usd for g in self.groups)

    @property
    def total_usd(self) -> float:
        """Compute, proxies for the run, and one month of the output's storage."""
        days = self.inputs.target_days
        return self.compute_usd + self.proxy_ips * self.inputs.proxy_ip_usd_month * days / 30 + self.storage_usd_month

    def group(self, name: str) -> GroupPlan:
        return next(g for g in self.groups if g.group == name)


def _group(name: str, work: str, total: float, per_node_per_s: float, usd_h: float, days: float,
           held_for_run: bool = False) -> GroupPlan:
    """Nodes that do `total` units at `per_node_per_s` each within `days`. Task groups are billed for the hours
    the work takes (the autoscaler removes idle nodes); groups of long-lived actors (`held_for_run`: the
    captioner pool holds its GPUs from start to end) for all their nodes over the whole run."""
    seconds_one_node = total / per_node_per_s
    nodes = max(1, math.ceil(seconds_one_node / (days * DAY)))
    node_hours = nodes * days * 24 if held_for_run else seconds_one_node / 3600
    return GroupPlan(name, work, nodes, round(node_hours, 1), round(node_hours * usd_h, 2))


def capacity_plan(p: PlanInputs) -> Plan:
    video_seconds = p.source_hours * 3600
    cpu_per_video_s = p.video_cpu_s_per_video_s + p.probe_cpu_s_per_video_s
    download_bytes = video_seconds * p.source_mbps * 1e6 / 8
    output_bytes = video_seconds * p.clip_fraction * p.output_mbps * 1e6 / 8
    days = p.target_days
    groups = [
        _group("video", f"{video_seconds * cpu_per_video_s / 3600:,.0f} vCPU-hours of probe+split+cut",
               video_seconds * cpu_per_video_s, p.video_node_vcpus * p.cpu_utilization, p.video_node_usd_h, days),
        _group("detect", f"{video_seconds * p.source_fps / 1e9:,.1f} G frames through TransNetV2",
               video_seconds * p.source_fps, p.detect_frames_per_gpu_s * p.gpu_utilization, p.gpu_usd_h, days,
               held_for_run=True),
        _group("caption", f"{p.clips:,} keyframes", p.clips, p.caption_keyframes_per_gpu_s * p.gpu_utilization,
               p.gpu_usd_h, days, held_for_run=True),
        _group("download", f"{download_bytes / 1e12:,.0f} TB from YouTube", download_bytes,
               p.download_node_gbps * 1e9 / 8, p.download_node_usd_h, days),
    ]
    head_hours = days * 24  # the head (driver, GCS) lives for the whole run
    groups.append(GroupPlan("head", "driver, GCS", 1, head_hours, round(head_hours * p.head_node_usd_h, 2)))
    output_mb_s = output_bytes / (days * DAY) / 1e6
    return Plan(inputs=p, groups=groups,
                proxy_ips=math.ceil(p.source_videos / (p.videos_per_ip_day * days)),
                download_tb=round(download_bytes / 1e12, 1), output_tb=round(output_bytes / 1e12, 1),
                storage_usd_month=round(output_bytes / 1e9 * p.storage_usd_gb_month, 2),
                output_mb_s=round(output_mb_s, 1), writers=math.ceil(output_mb_s / p.writer_mb_s))


def plan_inputs(sets: list[str]) -> PlanInputs:
    """PlanInputs with `name=value` overrides (numbers only)."""
    known = {f.name: f.type for f in fields(PlanInputs)}
    values = {}
    for item in sets:
        name, _, raw = item.partition("=")
        if name not in known:
            raise ConfigError(f"invalid configuration:\n  unknown input {name!r} (one of: {', '.join(known)})")
        # field types are the strings "int" / "float" (from __future__ import annotations)
        values[name] = int(float(raw)) if known[name] == "int" else float(raw)
    return PlanInputs(**values)


def format_plan(plan: Plan) -> str:
    p = plan.inputs
    measured_rate, gpu_measured = measured_or("transnetv2_gpu_frames_per_s", 0.0)
    rate = p.detect_frames_per_gpu_s
    detect_rate = ("measured" if gpu_measured and rate == measured_rate else
                   "the target, not yet measured on a GPU" if rate == DETECT_GPU_TARGET else "given")
    lines = [f"HD-VG-130M in {p.target_days:g} days: {p.source_videos:,} videos, {p.source_hours:,.0f} h, "
             f"{p.clips:,} clips", "",
             "| group | work | nodes | node-hours | USD |", "| --- | --- | ---: | ---: | ---: |"]
    lines += [f"| {g.group} | {g.work} | {g.nodes} | {g.node_hours:,.0f} | {g.usd:,.0f} |" for g in plan.groups]
    lines += ["",
              f"YouTube: {plan.proxy_ips} egress IPs at {p.videos_per_ip_day:g} videos/IP/day "
              f"(USD {plan.proxy_ips * p.proxy_ip_usd_month * p.target_days / 30:,.0f} for the run)",
              f"data: {plan.download_tb:,} TB downloaded, {plan.output_tb:,} TB of clips "
              f"(USD {plan.storage_usd_month:,.0f} per month stored)",
              f"writers: {plan.output_mb_s:,} MB/s of clips need {plan.writers} shard writer(s) at "
              f"{p.writer_mb_s:g} MB/s each (shards.writers=per_node: one on each of the "
              f"{plan.group('video').nodes} video nodes)",
              f"detect: TransNetV2 at {p.detect_frames_per_gpu_s:,.0f} frames/s per GPU ({detect_rate}); on the "
              f"video nodes' CPUs instead (detect.device cpu) it would add "
              f"{p.source_hours * p.detect_cpu_s_per_video_s:,.0f} vCPU-hours",
              f"total: USD {plan.total_usd:,.0f} (compute USD {plan.compute_usd:,.0f})"]
    return "\n".join(lines)

