import json
import subprocess
import sys

import pytest

from hdvg.config import ConfigError, CurateConfig, build_config

BASE = {"input": "in", "output": "out"}


def test_defaults_are_the_paper_settings():
    cfg = build_config(values=BASE)
    assert cfg.filter.min_height == 720                      # 720p
    assert cfg.filter.aspect_ratio == pytest.approx(16 / 9)  # widescreen
    assert cfg.clip.max_clip_seconds == 20                   # clips mostly under 20 s
    assert cfg.encode.max_short_side == 720
    assert cfg.captioner.name == "blip2"                     # keyframe captions by BLIP-2


@pytest.mark.parametrize("sets, field", [
    (["clip.max_clip_seconds=-1"], "clip.max_clip_seconds"),
    (["encode.crf=99"], "encode.crf"),
    (["detect.detector=magic"], "detect.detector"),
    (["filter.min_hieght=720"], "filter.min_hieght"),      # a typo is an error, not ignored
    (["clip.min_clip_seconds=30"], "clip"),                # cross-field: min above max
])
def test_bad_field_is_named(sets, field):
    with pytest.raises(ConfigError) as err:
        build_config(values=BASE, sets=sets)
    assert field in str(err.value)


def test_precedence_file_then_flags_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("clip:\n  max_clip_seconds: 10\n  min_clip_seconds: 2\nencode:\n  crf: 30\n")
    cfg = build_config(f, {**BASE, "encode.crf": 18}, ["clip.max_clip_seconds=12.5"])
    assert (cfg.clip.max_clip_seconds, cfg.clip.min_clip_seconds, cfg.encode.crf) == (12.5, 2, 18)
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"run": {"limit": 3}}))
    assert build_config(j, BASE).run.limit == 3


def test_every_field_has_a_flag_and_description():
    from hdvg.cli import curate_parser
    import argparse

    parser = curate_parser(argparse.ArgumentParser())
    args = parser.parse_args(["-i", "a", "-o", "b", "--max-clip-seconds", "7", "--crf", "25", "--detector",
                              "content", "--run-num-cpus", "2", "--captioner", "none"])
    assert vars(args)["clip.max_clip_seconds"] == 7.0 and vars(args)["encode.crf"] == 25
    assert vars(args)["detect.detector"] == "content" and vars(args)["run.num_cpus"] == 2
    for section in CurateConfig.model_fields.values():
        for name, info in getattr(section.annotation, "model_fields", {}).items():
            assert info.description, name


def test_cli_reports_bad_config_before_any_work(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipelines.curate", "-i", str(tmp_path), "-o", str(out),
                           "--set", "encode.preset=warp"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "encode.preset" in proc.stderr
    assert not out.exists()  # validated before Ray or any output


def test_boolean_flags_work_bare_and_retry_failed_bare_means_transient():
    from hdvg.cli import _config_from, curate_parser
    import argparse

    parser = curate_parser(argparse.ArgumentParser())
    cfg = _config_from(parser.parse_args(["-i", "a", "-o", "b", "--audio", "--retry-failed", "--force-unlock"]))
    assert cfg.source.audio is True and cfg.run.retry_failed == "transient" and cfg.run.force_unlock is True
    cfg = _config_from(parser.parse_args(["-i", "a", "-o", "b", "--audio", "false", "--retry-failed", "all",
                                          "--video-resources", '{"video": 1}']))
    assert cfg.source.audio is False and cfg.run.retry_failed == "all" and cfg.run.video_resources == {"video": 1}
    assert _config_from(parser.parse_args(["-i", "a", "-o", "b"])).run.retry_failed == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["-i", "a", "-o", "b", "--retry-failed", "some"])


def test_only_configuration_errors_are_usage_errors(tmp_path, monkeypatch, capsys):
    from hdvg import plan
    from hdvg.cli import main

    assert main(["plan", "--set", "no_such_input=1"]) == 2  # a bad value the user gave: exit 2, named
    assert "no_such_input" in capsys.readouterr().err
    assert main(["stats", str(tmp_path)]) == 2  # not a curated OUT

    def broken(_inputs):
        raise ValueError("a bug inside the planner")

    monkeypatch.setattr(plan, "capacity_plan", broken)
    with pytest.raises(ValueError, match="a bug inside"):  # an internal error is not dressed as a usage error
        main(["plan"])
