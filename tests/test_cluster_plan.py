"""`hdvg plan` sizes the cluster from the constants the benchmarks measured (hdvg/measured.json, shipped in the
package), which are the figures of the committed bench result files."""
import json
import math

import pytest

from hdvg import plan
from hdvg.config import ConfigError
from hdvg.plan import PlanInputs, capacity_plan, plan_inputs
from tests.conftest import ROOT


def test_measured_constants_are_the_bench_results():
    cpu = json.loads((ROOT / "bench" / "results" / "cpu.json").read_text())
    writer = json.loads((ROOT / "bench" / "results" / "writer.json").read_text())
    p = PlanInputs()
    assert p.video_cpu_s_per_video_s == cpu["cut_gpu_detect_cpu_s_per_video_s"]
    detect = json.loads((ROOT / "bench" / "results" / "detect.json").read_text())
    assert p.detect_cpu_s_per_video_s == detect["transnetv2_cpu_s_per_video_s"]
    assert p.probe_cpu_s_per_video_s == cpu["probe_cpu_s_per_video_s"]
    assert p.writer_mb_s == writer["writer_mb_s"]


def test_writers_needed_follow_the_measured_writer_rate():
    slow = capacity_plan(plan_inputs(["writer_mb_s=50"]))
    assert slow.writers == math.ceil(slow.output_mb_s / 50) > 1
    assert capacity_plan(plan_inputs(["writer_mb_s=50", "target_days=3.5"])).writers >= 2 * slow.writers - 1


def test_record_measured_updates_one_constant_and_a_missing_one_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "MEASURED", tmp_path / "measured.json")
    plan.MEASURED.write_text((ROOT / "hdvg" / "measured.json").read_text())
    plan.record_measured({"writer_mb_s": 123.4}, "bench/bench_writer.py", "2026-12-03")
    assert PlanInputs().writer_mb_s == 123.4 and PlanInputs().video_cpu_s_per_video_s == plan.measured(
        "cut_gpu_detect_cpu_s_per_video_s")
    assert json.loads(plan.MEASURED.read_text())["writer_mb_s"]["date"] == "2026-12-03"
    plan.MEASURED.unlink()
    with pytest.raises(ConfigError, match="cut_gpu_detect_cpu_s_per_video_s: no measured value in .*measured.json"):
        PlanInputs()


def test_detection_gpus_follow_the_transnetv2_rate():
    """5 GPUs at 15,000 frames/s keep up with HD-VILA-100M's hours at 30 fps in 7 days; half the rate, twice
    the GPUs."""
    full = capacity_plan(plan_inputs(["detect_frames_per_gpu_s=15000", "gpu_utilization=1"]))
    assert full.group("detect").nodes == 5
    half = capacity_plan(plan_inputs(["detect_frames_per_gpu_s=7500", "gpu_utilization=1"]))
    assert half.group("detect").nodes == 9
