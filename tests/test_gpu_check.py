"""bench/gpu_check.py in its CPU dry run (tiny widths, the GPU check's code paths): every part runs in its own
process and lands in gpu.json with its figures; a part that fails or runs out of time records why and the
others go on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
PARTS = ["device", "table2", "train_step", "train_step_2gpu", "sampling", "sr", "captioning", "eval_features",
         "captioning_static"]


def run_check(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--output", str(out), *args],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_dry_run_writes_every_part_with_its_figures(tmp_path):
    report = run_check(tmp_path)
    assert report["dry_run"] and list(report["parts"]) == PARTS
    failed = {k: v for k, v in report["parts"].items() if v["status"] != "ok"}
    assert not failed, failed
    parts = {k: v["result"] for k, v in report["parts"].items()}
    for sdpa in ("sdpa_auto", "sdpa_math"):
        results = parts["table2"][sdpa]["results"]
        assert all(r["step_ms"] > 0 and r["paper_width_params"] > 1.4e9 for r in results.values())
        assert set(parts["table2"][sdpa]["ratios"]) >= {"window_vs_global_memory", "window_vs_global_time"}
    assert set(parts["table2"]["sdpa_auto"]["results"]) == {"no_fusion", "global", "window"}
    assert parts["train_step"]["step_s"] > 0 and parts["train_step"]["gradient_checkpointing"]
    # two gloo ranks took the same DDP step: same weights after it
    assert parts["train_step_2gpu"]["ranks"] == 2 and parts["train_step_2gpu"]["weights_equal_across_ranks"]
    assert parts["sampling"]["s_per_video"] > 0 and parts["sampling"]["video"].endswith("344x192")
    assert parts["sr"]["s_per_clip"] > 0
    for name, cache in (("captioning", "dynamic"), ("captioning_static", "static")):
        runs = parts[name]["runs"]
        assert parts[name]["kv_cache"] == cache
        assert runs and all(r["keyframes_per_s"] > 0 and r["new_tokens"] == 20 for r in runs)
    assert parts["eval_features"]["i3d"]["clips_per_s"] > 0 and parts["eval_features"]["clip"]["clips_per_s"] > 0
    assert "transnetv2" in parts["eval_features"]


def test_a_failing_part_and_a_part_out_of_time_are_recorded_and_the_rest_goes_on(tmp_path):
    # 345 is no multiple of the VAE's 8: sampling raises; 10 ms cannot build and run an RCAN: sr is killed
    report = run_check(tmp_path, "--parts", "sampling,sr,device", "--sample-size", "345x192",
                       "--timeout", "sr=0.01")
    sampling, sr, device = (report["parts"][k] for k in ("sampling", "sr", "device"))
    assert sampling["status"] == "error" and "multiples of 8" in sampling["error"] and sampling["traceback"]
    assert sr["status"] == "timeout" and "killed" in sr["error"] and sr["timeout_s"] == 0
    assert device["status"] == "ok" and device["result"]["device"] == "cpu (dry run)"


def test_without_a_gpu_the_check_asks_for_a_dry_run(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path / "gpu.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "--dry-run" in proc.stderr and not (tmp_path / "gpu.json").exists()
