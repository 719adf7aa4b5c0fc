"""`hdvg plan` sizes the cluster from the benchmarks' result files, the one place measured constants live."""
import json
import math

from hdvg.plan import RESULTS, PlanInputs, capacity_plan, plan_inputs


def test_measured_constants_come_from_the_bench_results():
    cpu = json.loads((RESULTS / "cpu.json").read_text())
    writer = json.loads((RESULTS / "writer.json").read_text())
    p = PlanInputs()
    assert p.video_cpu_s_per_video_s == cpu["cut_gpu_detect_cpu_s_per_video_s"]
    assert p.detect_cpu_s_per_video_s == json.loads((RESULTS / "detect.json").read_text())["transnetv2_cpu_s_per_video_s"]
    assert p.probe_cpu_s_per_video_s == cpu["probe_cpu_s_per_video_s"]
    assert p.writer_mb_s == writer["writer_mb_s"]


def test_writers_needed_follow_the_measured_writer_rate():
    slow = capacity_plan(plan_inputs(["writer_mb_s=50"]))
    assert slow.writers == math.ceil(slow.output_mb_s / 50) > 1
    assert capacity_plan(plan_inputs(["writer_mb_s=50", "target_days=3.5"])).writers >= 2 * slow.writers - 1


def test_detection_gpus_follow_the_transnetv2_rate():
    """5 GPUs at 15,000 frames/s keep up with HD-VILA-100M's hours at 30 fps in 7 days; half the rate, twice
    the GPUs."""
    full = capacity_plan(plan_inputs(["detect_frames_per_gpu_s=15000", "gpu_utilization=1"]))
    assert full.group("detect").nodes == 5
    half = capacity_plan(plan_inputs(["detect_frames_per_gpu_s=7500", "gpu_utilization=1"]))
    assert half.group("detect").nodes == 9
