"""Secrets (the proxy, the cookies file) never reach a command line, a row or a log line."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from hdvg.config import PROXY_ENV, ConfigError, build_config
from hdvg.process import process_video, video_row
from hdvg.sources import WorkItem

PROXY = "http://user:SECRETPASS@127.0.0.1:9"  # nothing listens on port 9
BASE = {"input": "-", "output": "-", "source.retries": 0, "source.rate_limit": 0}


def test_the_proxy_is_refused_on_the_command_line_without_echoing_it():
    for how in (dict(values={**BASE, "source.proxy": PROXY}), dict(values=BASE, sets=[f"source.proxy={PROXY}"])):
        with pytest.raises(ConfigError) as err:
            build_config(**how)
        assert "source.proxy" in str(err.value) and PROXY_ENV in str(err.value) and "SECRET" not in str(err.value)
    usage = subprocess.run([sys.executable, "-m", "hdvg.cli", "curate", "-h"], capture_output=True, text=True).stdout
    assert "--proxy-file" in usage and "--proxy " not in usage and "--cookies" in usage


def test_the_proxy_comes_from_the_environment_or_a_file(tmp_path, monkeypatch):
    monkeypatch.delenv(PROXY_ENV, raising=False)
    assert build_config(values=BASE).source.proxy is None
    monkeypatch.setenv(PROXY_ENV, PROXY)
    assert build_config(values=BASE).source.proxy == PROXY
    secret = tmp_path / "proxy"
    secret.write_text("socks5://u:FILEPASS@10.0.0.1:1080\n")
    cfg = build_config(values={**BASE, "source.proxy_file": str(secret)})
    assert cfg.source.proxy == "socks5://u:FILEPASS@10.0.0.1:1080"  # the file wins over the environment
    assert "FILEPASS" not in repr(cfg) and "SECRETPASS" not in repr(cfg)
    with pytest.raises(ConfigError, match="source.proxy_file: Value error, no such file"):
        build_config(values={**BASE, "source.proxy_file": str(tmp_path / "absent")})
    secret.write_text("")
    with pytest.raises(ConfigError, match="proxy_file: the file is empty"):
        build_config(values={**BASE, "source.proxy_file": str(secret)})


def test_a_proxy_failure_row_carries_no_credential(tmp_path, monkeypatch):
    monkeypatch.setenv(PROXY_ENV, PROXY)
    row = process_video(WorkItem("x", "http://127.0.0.1:9/a.mp4"), build_config(values=BASE), tmp_path).row
    assert row["status"] == "failed" and row["reason"].startswith("download: ")
    assert "SECRETPASS" not in json.dumps(row)


def test_the_internal_error_path_redacts_its_reason_and_its_logged_traceback(tmp_path, caplog):
    """An unforeseen error (the cookies file vanished after start-up) names the file in its message: the
    recorded reason and the logged traceback both go through redaction."""
    cookies = tmp_path / "SECRETCOOKIES.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    cfg = build_config(values={**BASE, "source.cookies": str(cookies)})
    cookies.unlink()
    with caplog.at_level(logging.ERROR, logger="hdvg.process"):
        row = process_video(WorkItem("x", "http://127.0.0.1:9/a.mp4"), cfg, tmp_path).row
    assert row["reason"].startswith("internal error: FileNotFoundError: ") and "<redacted>" in row["reason"]
    assert "SECRETCOOKIES" not in json.dumps(row)
    assert caplog.records and "Traceback" in caplog.text and "SECRETCOOKIES" not in caplog.text


def test_every_row_loses_credentials_written_into_urls():
    """The one row builder (the pipeline's failed rows too) strips user:password@ from any URL."""
    row = video_row(WorkItem("x", "s"), "failed", "worker: lost fetching https://k:TOPSECRET@mirror.example/x.mp4")
    assert row["reason"] == "worker: lost fetching https://<redacted>@mirror.example/x.mp4"
