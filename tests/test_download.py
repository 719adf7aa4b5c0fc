"""Downloads through real yt-dlp (its generic extractor) from a real HTTP server on 127.0.0.1 that this
test starts, and classification of real yt-dlp error messages. Nothing here reaches the internet."""
from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from hdvg.config import SourceConfig, build_config
from hdvg.contract import SOURCE_META_FIELDS, STATUS_FAILED, STATUS_OK
from hdvg.download import DownloadFailed, RateLimiter, classify, download, format_selector, is_transient
from hdvg.failures import TRANSIENT, failure_class
from hdvg.process import process_video
from hdvg.sources import WorkItem, fetch

FIXTURES = Path(__file__).parent / "fixtures"
FAST = dict(retries=2, backoff_s=0.01, rate_limit=0, socket_timeout_s=2)


class VideoServer(http.server.ThreadingHTTPServer):
    """Serves one MP4 under any path; the path's first word picks a behaviour:
    /ok/..., /missing/... (404), /busy/... (429 on the first request), /down/... (503 always),
    /cut/... (closes after half the bytes, every time), /cutonce/... (once), /drip/... (slow trickle),
    /bot/... (YouTube's bot check, as a 403 reason, always), /botonce/... (on the first request only),
    /hold/... (answers only once `release` is set)."""

    def __init__(self, video: bytes):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.video, self.hits, self.lock = video, {}, threading.Lock()
        self.release = threading.Event()
        self.times: dict[str, list[float]] = {}  # wall-clock time of each request, per path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: VideoServer = self.server
        with server.lock:
            server.hits[self.path] = n = server.hits.get(self.path, 0) + 1
            server.times.setdefault(self.path, []).append(time.time())
        kind = self.path.split("/")[1]
        if kind == "hold":
            server.release.wait()
        if kind == "bot" or (kind == "botonce" and n == 1):
            return self.send_error(403, "Sign in to confirm you're not a bot")
        if kind == "missing":
            return self.send_error(404)
        if kind == "busy" and n == 1:
            return self.send_error(429)
        if kind == "down":
            return self.send_error(503)
        data = server.video
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        # the generic extractor reads the headers first (request 1), then the downloader fetches (request 2)
        if kind == "cut" or (kind == "cutonce" and n == 2):
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
        elif kind == "drip":
            for i in range(0, len(data), 512):
                self.wfile.write(data[i:i + 512])
                self.wfile.flush()
                time.sleep(0.05)
        else:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("src") / "video.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25", "-t", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def server(video):
    srv = VideoServer(video.read_bytes())
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _empty(path: Path) -> Path:
    path.mkdir()
    return path


def test_generic_download_lands_under_a_fixed_name_with_its_format(server, video, tmp_path):
    scratch = _empty(tmp_path / "s")
    got = download(f"{server.base}/ok/clip.mp4", scratch, SourceConfig(**FAST))
    assert got.path == scratch / "source.mp4" and got.path.read_bytes() == video.read_bytes()
    assert got.attempts == 1 and got.format == "mp4 - unknown"  # what yt-dlp chose for a direct link
    assert got.meta["title"] == "clip" and set(got.meta) == set(SOURCE_META_FIELDS)


def test_404_is_permanent_recorded_once_and_not_retried(server, tmp_path):
    scratch = _empty(tmp_path / "s")
    with pytest.raises(DownloadFailed) as err:
        download(f"{server.base}/missing/a.mp4", scratch, SourceConfig(**FAST))
    assert err.value.classification == "not_found" and err.value.attempts == 1
    assert "HTTP Error 404" in err.value.message and err.value.message.startswith("ERROR: [generic]")
    assert server.hits["/missing/a.mp4"] == 1 and not any(scratch.iterdir())


def test_429_then_success_is_retried(server, tmp_path):
    got = download(f"{server.base}/busy/b.mp4", _empty(tmp_path / "s"), SourceConfig(**FAST))
    assert got.attempts == 2 and got.path.is_file()


@pytest.mark.parametrize("kind, classification", [("down", "server_error"), ("cut", "connection")])
def test_transient_failures_are_retried_then_recorded(server, tmp_path, kind, classification):
    scratch = _empty(tmp_path / "s")
    with pytest.raises(DownloadFailed) as err:
        download(f"{server.base}/{kind}/c.mp4", scratch, SourceConfig(**FAST))
    assert err.value.classification == classification and err.value.attempts == 3  # 1 + 2 retries
    assert "\r" not in err.value.message and err.value.message.startswith("ERROR:")
    assert not any(scratch.iterdir())  # partial files removed


def test_a_connection_cut_once_mid_file_is_retried(server, tmp_path):
    got = download(f"{server.base}/cutonce/d.mp4", _empty(tmp_path / "s"), SourceConfig(**FAST))
    assert got.attempts == 2 and got.path.stat().st_size == len(server.video)


def test_the_download_deadline_stops_a_trickling_server(server, tmp_path):
    scratch = _empty(tmp_path / "s")
    with pytest.raises(DownloadFailed) as err:
        download(f"{server.base}/drip/e.mp4", scratch, SourceConfig(**{**FAST, "download_timeout_s": 0.5}))
    assert err.value.classification == "timeout" and "deadline" in err.value.message
    assert not any(scratch.iterdir())


def test_proxy_and_cookies_stay_out_of_rows_and_the_cookie_file_is_untouched(server, tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tSECRETCOOKIE\n")
    before = cookies.read_bytes()
    proxy = tmp_path / "proxy"  # a mounted Secret, say; nothing listens on port 9: the proxy fails
    proxy.write_text("http://user:SECRETPASS@127.0.0.1:9\n")
    cfg = build_config(values={"input": "-", "output": "-", "source.proxy_file": str(proxy),
                               "source.cookies": str(cookies),
                               **{f"source.{k}": v for k, v in FAST.items()}})
    result = process_video(WorkItem("x", f"{server.base}/ok/f.mp4"), cfg, tmp_path)
    row = json.dumps(result.row)
    assert result.row["status"] == STATUS_FAILED and result.row["reason"].startswith("download: ")
    assert "SECRETPASS" not in row and "SECRETCOOKIE" not in row and "SECRET" not in repr(cfg)
    assert cookies.read_bytes() == before


def test_credentials_in_a_source_url_reach_neither_the_row_nor_the_clips(server, tmp_path):
    cfg = build_config(values={"input": "-", "output": "-", "filter.min_height": 100, "encode.preset": "ultrafast",
                               **{f"source.{k}": v for k, v in FAST.items()}})
    got = process_video(WorkItem("v", f"http://user:SECRETPASS@{server.base[7:]}/ok/i.mp4"), cfg, tmp_path)
    assert got.row["status"] == STATUS_OK and got.clips
    assert got.row["source"] == f"http://<redacted>@{server.base[7:]}/ok/i.mp4"
    assert all(c.meta["source"] == got.row["source"] for c in got.clips)


def test_process_video_records_format_attempts_and_the_real_message(server, tmp_path):
    cfg = build_config(values={"input": "-", "output": "-", "filter.min_height": 100, "encode.preset": "ultrafast",
                               **{f"source.{k}": v for k, v in FAST.items()}})
    ok = process_video(WorkItem("busy", f"{server.base}/busy/g.mp4"), cfg, tmp_path)
    assert ok.row["status"] == STATUS_OK, ok.row["reason"]
    assert (ok.row["format"], ok.row["attempts"]) == ("mp4 - unknown", 2)
    assert ok.clips and all(c.meta["title"] == "g" for c in ok.clips)
    bad = process_video(WorkItem("gone", f"{server.base}/missing/h.mp4"), cfg, tmp_path)
    assert bad.row["reason"].startswith("download: not_found: ERROR: [generic] h: Unable to download webpage: "
                                        "HTTP Error 404")
    assert bad.row["attempts"] == 1
    assert not any(tmp_path.iterdir())  # the scratch folders are removed (rate_limit 0: no slot file)


def test_file_urls_and_local_paths_are_used_in_place(video, tmp_path):
    for source in (video.as_uri(), str(video)):
        got = fetch(WorkItem("v", source), _empty(tmp_path / f"s{len(source)}"))
        assert got.path == video and got.attempts is None
    with pytest.raises(Exception, match="no such file"):
        fetch(WorkItem("v", (tmp_path / "nope.mp4").as_uri()), tmp_path)


def test_real_ytdlp_messages_are_classified():
    errors = json.loads((FIXTURES / "ytdlp_errors.json").read_text())["errors"]
    assert {e["classification"] for e in errors} >= {"private", "removed", "unavailable", "age_restricted",
                                                     "members_only", "geo_blocked", "copyright", "live"}
    for e in errors:
        assert classify(" ".join(e["message"].split())) == e["classification"], e["message"]
    permanent = {e["classification"] for e in errors} - {"rate_limited", "timeout"}
    assert not any(is_transient(c) for c in permanent)
    assert is_transient("rate_limited") and is_transient("timeout") and classify("something new") == "error"


def test_rate_limiter_spaces_downloads_across_limiters_sharing_a_node(tmp_path):
    state = tmp_path / "slots"
    a, b = RateLimiter(30, state), RateLimiter(30, state)  # two video tasks of one node
    slots = [a.reserve(1000.0), b.reserve(1000.0), a.reserve(1000.0), b.reserve(1009.0)]
    assert slots == [1000.0, 1002.0, 1004.0, 1009.0]  # 60/30 s apart; an idle node starts at once
    jittered = RateLimiter(60, tmp_path / "j", jitter=0.5, seed=1)
    starts = [jittered.reserve(0.0) for _ in range(20)]
    gaps = [y - x for x, y in zip(starts, starts[1:])]
    assert all(0.5 <= g <= 1.5 for g in gaps) and len(set(gaps)) > 1
    assert RateLimiter(0, state).reserve(5.0) == 5.0  # 0: unlimited


def test_format_selection_prefers_720p_widescreen_h264_video_only():
    video_only = format_selector(audio=False)
    assert video_only.startswith("bv[height=720][aspect_ratio>1.7][vcodec^=avc1][ext=mp4]/")
    assert "+ba" not in video_only and video_only.endswith("/b")
    assert "+ba[ext=m4a]" in format_selector(audio=True)


BOT = dict(FAST, block_pause_s=0.6, block_pause_max_s=5.0)


def test_a_bot_check_pauses_the_nodes_downloads_then_the_video_tries_again(server, tmp_path):
    """Circuit breaker: a block pauses every download of the node (two tasks sharing one state file); the
    other task's first request waits for the pause's end; the blocked video succeeds after it."""
    state = tmp_path / "node"
    blocked, other = RateLimiter(0, state), RateLimiter(0, state)
    cfg = SourceConfig(**BOT)
    started = time.time()
    got = download(f"{server.base}/botonce/a.mp4", _empty(tmp_path / "a"), cfg, blocked)
    assert got.attempts == 2 and got.path.is_file()
    first, *later = server.times["/botonce/a.mp4"]
    assert later[0] - first >= 0.6  # it asked again only after the node's pause
    # a pause set by a block holds every task of the node back, not only the one that was blocked
    until = other.pause(time.time(), cfg.block_pause_s, cfg.block_pause_max_s)
    download(f"{server.base}/ok/b.mp4", _empty(tmp_path / "b"), cfg, blocked)
    assert server.times["/ok/b.mp4"][0] >= until and until - started >= 0.6


def test_a_persistent_block_doubles_the_pause_and_ends_transient_not_permanent(server, tmp_path):
    state = tmp_path / "node"
    limiter = RateLimiter(0, state)
    with pytest.raises(DownloadFailed) as err:
        download(f"{server.base}/bot/c.mp4", _empty(tmp_path / "c"), SourceConfig(**BOT), limiter)
    assert err.value.classification == "blocked" and err.value.attempts == 3
    assert "not a bot" in err.value.message
    times = server.times["/bot/c.mp4"]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps[0] >= 0.6 and gaps[1] >= 1.2  # 0.6 s, then doubled
    assert failure_class(f"download: {err.value}") == TRANSIENT
    # a task whose deadline ends inside the pause fails at once, without asking the blocked source again
    started = time.monotonic()
    with pytest.raises(DownloadFailed) as err:
        download(f"{server.base}/ok/d.mp4", _empty(tmp_path / "d"),
                 SourceConfig(**{**BOT, "download_timeout_s": 0.5}), limiter)
    assert err.value.classification == "blocked" and "paused" in err.value.message
    assert time.monotonic() - started < 0.5 and "/ok/d.mp4" not in server.hits
    limiter.resume()  # a success resets the doubling
    assert json.loads(state.read_text())["blocks"] == 0


def test_a_blocked_video_row_is_transient(server, tmp_path):
    cfg = build_config(values={"input": "-", "output": "-",
                               **{f"source.{k}": v for k, v in {**BOT, "retries": 0}.items()}})
    row = process_video(WorkItem("x", f"{server.base}/bot/e.mp4"), cfg, tmp_path).row
    assert row["status"] == STATUS_FAILED and row["reason"].startswith("download: blocked: ")
    assert row["failure"] == TRANSIENT


# ---------------------------------------------------------------- YouTube's JS challenges

def test_a_worker_without_a_js_runtime_stops_instead_of_failing_the_video(tmp_path):
    """The node's set-up, not the video's: process_video raises (no row that would mark the video failed)."""
    from hdvg.download import YouTubeNotReady
    from hdvg.sources import youtube_url

    cfg = build_config(values={"input": str(tmp_path), "output": str(tmp_path / "out"), "captioner.name": "none",
                               "source.js_runtime": str(tmp_path / "nowhere" / "deno")})
    with pytest.raises(YouTubeNotReady, match="no usable JS runtime"):
        process_video(WorkItem("dQw4w9WgXcQ", youtube_url("dQw4w9WgXcQ")), cfg)


def test_a_youtube_job_without_a_js_runtime_stops_with_one_error_before_any_download(tmp_path):
    import sys

    from tests.conftest import ROOT

    (tmp_path / "ids.txt").write_text("https://www.youtube.com/watch?v=dQw4w9WgXcQ\n"
                                      "https://www.youtube.com/watch?v=9bZkp7q19f0\n")
    job = subprocess.run([sys.executable, "-m", "pipelines.curate", "--input", str(tmp_path / "ids.txt"), "--output",
                          str(tmp_path / "out"), "--captioner", "none", "--js-runtime", str(tmp_path / "no-deno")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert job.returncode == 1
    stopped = [line for line in job.stderr.splitlines() if line.startswith("hdvg curate: stopped:")]
    assert len(stopped) == 1 and "no usable JS runtime" in stopped[0] and "source.js_runtime" in stopped[0]
    assert not list((tmp_path / "out").glob("videos/*.parquet"))  # no video was failed for it
