"""`download`: one video through yt-dlp's Python API, rate-limited per node, retried when the failure is
transient, and classified when it is not.

A failure ends as `DownloadFailed(classification, message, attempts)`, where `message` is yt-dlp's own
text (with the proxy redacted). Permanent classes (private, removed, ...) are recorded at the first
attempt; transient ones (HTTP 429/5xx, timeouts, cut connections) are retried with exponential backoff.
A bot check or IP block (`blocked`) pauses the whole node's downloads (`RateLimiter.pause`, a circuit
breaker) and the video tries again after the pause; `hdvg.failures` counts its failure as transient.
Everything yt-dlp writes goes to the caller's scratch folder under fixed names (`source.<ext>`), never a
name derived from the video id or title.

YouTube serves playable formats only to clients that solve its JavaScript challenges: yt-dlp does that with
its EJS solver (`yt-dlp-ejs`) in a JS runtime (Deno, whose binary the `deno` package ships). Without them
every video would fail with a format error, so `youtube_ready` checks both, once per process, and a job stops
with one `YouTubeNotReady` error instead.
"""
from __future__ import annotations

import fcntl
import functools
import json
import random
import re
import shutil
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from hdvg.config import SourceConfig

# Format preference (HD-VG: 720p widescreen): 720p 16:9 H.264 MP4, then H.264 MP4 up to 720p, then any
# codec up to 720p, then whatever is best. `?` lets formats whose size is unknown (direct links) pass.
_VIDEO = ("bv[height=720][aspect_ratio>1.7][vcodec^=avc1][ext=mp4]", "bv[height<=?720][vcodec^=avc1][ext=mp4]",
          "bv[height<=?720]", "bv")
_MUXED = ("b[height<=?720][ext=mp4]", "b[height<=?720]", "b")


def format_selector(audio: bool) -> str:
    """The yt-dlp format string: video only by default, with the best M4A (else any) audio when asked."""
    video = [f"{v}+ba[ext=m4a]/{v}+ba" for v in _VIDEO] if audio else list(_VIDEO)
    return "/".join(video + list(_MUXED))


# ---------------------------------------------------------------------------------------------------------
# Classification of yt-dlp's messages. The messages are YouTube's own texts relayed by yt-dlp, so they are
# matched by phrases (tests/fixtures/ytdlp_errors.json lists real ones and where they come from). Order
# matters: the first rule that matches wins ("confirm you're not a bot" before "confirm your age", the
# session rate limit before the generic "not available").

# 403 is transient on YouTube (an expired or throttled format URL: a new attempt extracts fresh ones)
TRANSIENT = ("rate_limited", "server_error", "forbidden", "timeout", "connection")
_RULES: tuple[tuple[str, str], ...] = (
    ("blocked", r"not a bot|captcha|rate-limited by youtube|ip is likely being blocked|po token"),
    ("private", r"private video|this video is private|video has been made private"),
    ("members_only", r"members[- ]only|channel's members|join this channel"),
    ("age_restricted", r"confirm your age|age[- ]restricted|inappropriate for some users"),
    ("copyright", r"copyright"),
    ("geo_blocked", r"(available|blocked it) in your country|from your location|geo[- ]restrict"),
    ("live", r"live event|premieres in|is a live stream|live stream|is live"),
    ("removed", r"removed by the uploader|has been removed|account associated with this video has been "
                r"terminated|no longer available|been terminated"),
    ("rate_limited", r"http error 429|too many requests"),
    ("server_error", r"http error 5\d\d"),
    ("forbidden", r"http error 403"),
    ("not_found", r"http error 404|http error 410|not found"),
    ("no_format", r"requested format is not available"),
    ("unavailable", r"video unavailable|this video is unavailable|not available|does not exist|"
                    r"content isn.t available"),
    ("unsupported", r"unsupported url"),
    ("timeout", r"timed out|timeout|download deadline"),
    ("connection", r"incomplete ?read|content too short|did not get any data|connection (?:reset|refused|"
                   r"aborted|broken)|remote ?disconnected|remote end closed|eof occurred|unable to connect|"
                   r"name resolution|network is unreachable|got error: \d+ bytes read"),
    ("extractor_broken", r"please report this issue|unable to extract|signature extraction|nsig"),
)
_COMPILED = tuple((name, re.compile(rule, re.IGNORECASE)) for name, rule in _RULES)


def classify(message: str) -> str:
    """Classification of a download failure message; 'error' when no rule knows it (not retried)."""
    for name, rule in _COMPILED:
        if rule.search(message):
            return name
    return "error"


def is_transient(classification: str) -> bool:
    return classification in TRANSIENT


class DownloadFailed(Exception):
    def __init__(self, classification: str, message: str, attempts: int):
        super().__init__(f"{classification}: {message}")
        self.classification, self.message, self.attempts = classification, message, attempts


# ---------------------------------------------------------------------------------------------------------
# Rate limit and circuit breaker: the node's shared download state

class NodePaused(Exception):
    """The node's downloads are paused (a bot check or IP block) past the caller's deadline."""

    def __init__(self, until: float):
        super().__init__(f"paused until {until:.0f}")
        self.until = until


class RateLimiter:
    """Downloads started per minute on one node, across processes, and the node's pause after a bot check.

    Every video task of the node keeps this state in one small JSON file under an exclusive `fcntl` lock,
    so N concurrent tasks share one budget instead of each taking the full rate. Slots are spaced 60/rate
    seconds apart, each spacing randomised by +/- `jitter` so that nodes and tasks do not request in lockstep.

    Circuit breaker: a bot check or IP block is the node's state, not the video's. `pause` stops every
    download of the node for `pause_s`, doubling with each block in a row up to `max_pause_s`; the first
    download after the pause probes the source again and `resume` (a success) resets the doubling. Tasks
    wait the pause out, or give up at once when it outlasts their deadline (`NodePaused`), so a flagged IP
    neither keeps asking nor turns the rest of a part into permanent failures."""

    def __init__(self, per_minute: float, state: str | Path, jitter: float = 0.0, seed: int | None = None):
        self.interval = 60.0 / per_minute if per_minute > 0 else 0.0
        self.state, self.jitter, self.random = Path(state), jitter, random.Random(seed)

    def _update(self, change) -> dict:
        """Apply `change(state) -> new state or None` under the node's lock; the state it leaves."""
        with open(self.state, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.seek(0)
            try:
                state = json.loads(f.read() or "{}")
            except json.JSONDecodeError:  # torn by a crash mid-write: start afresh
                state = {}
            new = change(dict(state))
            if new is not None and new != state:
                f.seek(0)
                f.truncate()
                f.write(json.dumps(new))
                state = new
        return state

    def reserve(self, now: float) -> float:
        """Take the next free slot at or after `now` and after any pause; returns its start time."""
        if self.interval == 0 and not self.state.exists():
            return now  # unlimited and never paused: no shared state needed

        def take(state: dict) -> dict:
            start = max(now, state.get("next", 0.0) if self.interval else 0.0, state.get("paused_until", 0.0))
            spacing = self.interval * (1 + self.random.uniform(-self.jitter, self.jitter))
            return {**state, "next": start + spacing, "start": start}

        return self._update(take)["start"]

    def paused_until(self) -> float:
        return self._update(lambda state: None).get("paused_until", 0.0) if self.state.exists() else 0.0

    def pause(self, now: float, pause_s: float, max_pause_s: float) -> float:
        """A download met a bot check or IP block: pause the node; returns when the pause ends."""
        def trip(state: dict) -> dict:
            blocks = state.get("blocks", 0) + 1
            until = max(state.get("paused_until", 0.0), now + min(max_pause_s, pause_s * 2 ** (blocks - 1)))
            return {**state, "blocks": blocks, "paused_until": until}

        return self._update(trip)["paused_until"]

    def resume(self) -> None:
        """A download succeeded: the next block pauses for `pause_s` again."""
        if self.state.exists():
            self._update(lambda state: {**state, "blocks": 0} if state.get("blocks") else None)

    def acquire(self, deadline: float = float("inf")) -> None:
        """Wait for this download's slot (wall-clock times: shared by every process of the node); raises
        NodePaused, without waiting, when the node's pause ends after `deadline`."""
        until = self.paused_until()
        if until > deadline:
            raise NodePaused(until)
        now = time.time()
        time.sleep(max(0.0, self.reserve(now) - now))


# ---------------------------------------------------------------------------------------------------------
# yt-dlp

@dataclass
class Downloaded:
    path: Path
    meta: dict = field(default_factory=dict)   # SOURCE_META_FIELDS from yt-dlp's info
    format: str | None = None
    attempts: int = 1


class _Quiet:
    """yt-dlp logger: nothing reaches stdout/stderr (messages could carry URLs of the proxy); failures
    reach the caller through the exception instead."""

    def debug(self, msg: str) -> None: ...
    def info(self, msg: str) -> None: ...
    def warning(self, msg: str) -> None: ...
    def error(self, msg: str) -> None: ...


class _Deadline(Exception):
    """Raised from yt-dlp's progress hook once `download_timeout_s` has passed; aborts the transfer."""


# user:password@ inside any URL (a proxy, a mirror, a presigned link), whoever configured it
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s@:'\"]+:[^/\s@'\"]*@")


def secrets_of(cfg: SourceConfig) -> list[str]:
    """What must never reach a row or a log line: the proxy URL, its password alone (it may appear in a
    ProxyError's repr), the cookies file's path."""
    password = urllib.parse.urlparse(cfg.proxy).password if cfg.proxy else None
    return [s for s in (cfg.proxy, password, cfg.cookies) if s]


def redact(text: str, secrets: list[str | None] = ()) -> str:
    """`text` without `secrets` and without credentials written into any URL."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):  # a URL before the password in it
        text = text.replace(s, "<redacted>")
    return _URL_CREDENTIALS.sub("<redacted>@", text)


def source_meta(info: dict) -> dict:
    categories = info.get("categories")
    return {
        "title": info.get("title"),
        "channel": info.get("channel") or info.get("uploader"),
        "categories": [str(c) for c in categories] if isinstance(categories, list) else None,
        "upload_date": info.get("upload_date"),
        "license": info.get("license"),
    }


# ---------------------------------------------------------------------------------------------------------
# YouTube's JS challenges

class YouTubeNotReady(RuntimeError):
    """yt-dlp here cannot solve YouTube's JS challenges: the job stops instead of failing every video."""


def js_runtime_path(cfg: SourceConfig) -> str | None:
    """`source.js_runtime`, else the Deno binary of the `deno` package, else None (yt-dlp looks on PATH)."""
    if cfg.js_runtime:
        return cfg.js_runtime
    try:
        from deno import find_deno_bin
    except ImportError:
        return None
    try:
        return find_deno_bin()
    except (FileNotFoundError, RuntimeError):
        return None


def js_runtimes(cfg: SourceConfig) -> dict:
    """yt-dlp's `js_runtimes` option."""
    return {"deno": {"path": js_runtime_path(cfg)} if js_runtime_path(cfg) else {}}


def youtube_readiness(cfg: SourceConfig) -> dict:
    """What yt-dlp itself reports here: its version, the JS runtime it found, the challenge providers it can
    use ({"yt_dlp", "js_runtime", "challenge_providers"}). Raises YouTubeNotReady naming what is missing."""
    import yt_dlp
    from yt_dlp.extractor.youtube.jsc._director import initialize_jsc_director

    fix = ("install yt-dlp with its challenge solver and Deno (`pip install 'yt-dlp[default]' deno`, as "
           "requirements.txt does) or point source.js_runtime at a Deno >= 2.3 binary")
    with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True, "logger": _Quiet(), "cachedir": False,
                           "js_runtimes": js_runtimes(cfg)}) as ydl:
        runtime = ydl._js_runtimes.get("deno")
        info = runtime.info if runtime is not None else None
        if info is None or not info.supported:
            found = f"deno {info.version} at {info.path} is too old" if info else \
                f"no Deno at {js_runtime_path(cfg) or 'PATH'}"
            raise YouTubeNotReady(f"yt-dlp {yt_dlp.version.__version__} has no usable JS runtime ({found}): "
                                  f"YouTube serves no playable formats without one; {fix}")
        director = initialize_jsc_director(ydl.get_info_extractor("Youtube"))
        providers = sorted(p.PROVIDER_NAME for p in director.providers.values() if p.is_available())
        if not providers:
            raise YouTubeNotReady(f"yt-dlp {yt_dlp.version.__version__} sees deno {info.version} but no JS "
                                  f"challenge provider can use it (is yt-dlp-ejs installed?); {fix}")
    return {"yt_dlp": yt_dlp.version.__version__, "js_runtime": f"deno {info.version}",
            "js_runtime_path": info.path, "challenge_providers": providers}


@functools.lru_cache(maxsize=4)
def _readiness_of(js_runtime: str | None) -> dict:
    return youtube_readiness(SourceConfig(js_runtime=js_runtime))


def youtube_ready(cfg: SourceConfig) -> dict:
    """`youtube_readiness`, checked once per process (the driver at start, each worker at its first download)."""
    return _readiness_of(cfg.js_runtime)


def _options(scratch: Path, cfg: SourceConfig, deadline: float) -> dict:
    def hook(progress: dict) -> None:
        if time.monotonic() > deadline:
            raise _Deadline()

    opts = {
        "format": format_selector(cfg.audio), "merge_output_format": "mp4",
        "paths": {"home": str(scratch), "temp": str(scratch)}, "outtmpl": "source.%(ext)s",
        "noplaylist": True, "quiet": True, "no_warnings": True, "noprogress": True, "logger": _Quiet(),
        "socket_timeout": cfg.socket_timeout_s, "progress_hooks": [hook], "cachedir": False,
        # retries are ours (counted, classified, backed off, rate-limited): yt-dlp makes one try
        "retries": 0, "fragment_retries": 0, "extractor_retries": 0, "file_access_retries": 0,
        "continuedl": False, "overwrites": True, "js_runtimes": js_runtimes(cfg),
    }
    if cfg.proxy:
        opts["proxy"] = cfg.proxy
    if cfg.cookies:
        # a private copy: yt-dlp writes its cookie jar back on exit, which must not touch the user's file
        copy = scratch / "cookies.txt"
        shutil.copyfile(cfg.cookies, copy)
        opts["cookiefile"] = str(copy)
    return opts


def _attempt(url: str, scratch: Path, cfg: SourceConfig, deadline: float) -> Downloaded:
    import yt_dlp

    with yt_dlp.YoutubeDL(_options(scratch, cfg, deadline)) as ydl:
        info = ydl.extract_info(url, download=False)
        if info.get("_type") in ("playlist", "multi_video"):
            raise DownloadFailed("unsupported", f"{url} is a playlist, not one video", 1)
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming", "post_live"):
            raise DownloadFailed("live", f"live_status {info.get('live_status')!r}: a live stream has no "
                                 "fixed frames to cut", 1)
        info = ydl.process_ie_result(info, download=True)
    files = [Path(d["filepath"]) for d in info.get("requested_downloads") or [] if d.get("filepath")]
    path = files[0] if files else None
    if path is None or not path.is_file() or path.parent != scratch:
        raise DownloadFailed("error", "yt-dlp reported success but wrote no file", 1)
    return Downloaded(path=path, meta=source_meta(info), format=info.get("format"))


def _clean(scratch: Path) -> None:
    """Remove what a failed attempt left (partial files), so a retry starts from nothing."""
    for p in scratch.iterdir():
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def download(url: str, scratch: str | Path, cfg: SourceConfig, limiter: RateLimiter | None = None) -> Downloaded:
    """Download `url` (a YouTube watch URL, or any URL yt-dlp's extractors take) into the empty folder
    `scratch`. Raises DownloadFailed; the folder is emptied after a failure."""
    import yt_dlp

    scratch = Path(scratch)
    if "youtube.com/" in url or "youtu.be/" in url:
        youtube_ready(cfg)  # raises YouTubeNotReady: a node that cannot download from YouTube stops the job
    started = time.monotonic()
    deadline = started + cfg.download_timeout_s
    secrets = secrets_of(cfg)
    attempt, cls, msg = 0, None, None
    while True:
        if limiter is not None:
            try:
                limiter.acquire(time.time() + deadline - time.monotonic())
            except NodePaused as paused:
                if cls == "blocked":  # this video's own block: its message says why
                    raise DownloadFailed(cls, msg, attempt) from None
                raise DownloadFailed("blocked", f"downloads on this node are paused for "
                                     f"{paused.until - time.time():.0f} s more after a bot check or IP block, "
                                     f"past this download's deadline", attempt) from None
        attempt += 1
        try:
            got = _attempt(url, scratch, cfg, deadline)
            got.attempts = attempt
            (scratch / "cookies.txt").unlink(missing_ok=True)
            if limiter is not None:
                limiter.resume()
            return got
        except DownloadFailed as exc:
            cls, msg = exc.classification, exc.message
        except _Deadline:
            cls, msg = "timeout", f"download deadline of {cfg.download_timeout_s:g} s passed"
        except yt_dlp.utils.DownloadError as exc:
            # one line: yt-dlp's messages carry \r progress resets and YouTube's multi-line reasons
            msg = redact(re.sub(r"\s+", " ", str(exc)).strip(), secrets)
            cls = classify(msg)
        _clean(scratch)
        if cls == "blocked" and limiter is not None:
            # the node pauses; the next acquire waits the pause out (or gives up past the deadline)
            limiter.pause(time.time(), cfg.block_pause_s, cfg.block_pause_max_s)
            if attempt <= cfg.retries:
                continue
        backoff = cfg.backoff_s * 2 ** (attempt - 1)
        if not is_transient(cls) or attempt > cfg.retries or time.monotonic() + backoff > deadline:
            raise DownloadFailed(cls, msg, attempt)
        time.sleep(backoff)
