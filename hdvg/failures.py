"""Failure classes of a `failed` video row: would a retry help?

`transient`: the failure is the world's, not the video's (disk full, a deadline, HTTP 429/5xx, a lost worker,
a captioner actor error, a bot check or IP block); `hdvg curate --retry-failed transient` redoes these.
`permanent`: the video itself is the problem (private, removed, unreadable, undecodable); only
`--retry-failed all` redoes them. A reason is `<stage>: <message>`; the stage decides, and for downloads
the classification hdvg.download gives the message.
"""
from __future__ import annotations

import re

from hdvg.download import is_transient

TRANSIENT, PERMANENT = "transient", "permanent"
RETRY_MODES = ("none", "transient", "all")

# stages whose failure never says anything about the video
TRANSIENT_STAGES = ("timeout", "worker", "caption", "writer")
# a bot check / IP block is the node's state, not the video's: transient, and it pauses the node's downloads
TRANSIENT_DOWNLOADS = ("blocked",)
_RESOURCE = re.compile(r"no space left on device|disk quota exceeded|cannot allocate memory|errno 28\b|"
                       r"enospc|out of memory", re.IGNORECASE)


def failure_class(reason: str) -> str:
    """`transient` or `permanent` for the reason of a failed row."""
    stage, _, message = reason.partition(": ")
    if stage in TRANSIENT_STAGES or _RESOURCE.search(reason):
        return TRANSIENT
    if stage == "download":
        classification = message.partition(": ")[0]
        return TRANSIENT if is_transient(classification) or classification in TRANSIENT_DOWNLOADS else PERMANENT
    return PERMANENT


def should_retry(status: str, failure: str | None, reason: str | None, mode: str) -> bool:
    """Whether a rerun in retry `mode` (none | transient | all) redoes a video whose latest row is this.
    Rows written before failure classes existed carry no `failure`: their reason is classified."""
    if status != "failed" or mode == "none":
        return False
    return mode == "all" or (failure or failure_class(reason or "")) == TRANSIENT
