"""One writer per OUT: the job's lock in OUT/_lock/.

pyarrow's filesystems offer no conditional put, so the lock is a claim protocol that needs only what every
store here gives, a listing that shows an object once its write has returned (local folders; S3 and GCS
are strongly consistent):

1. read the claims in OUT/_lock/; a live one of another job stops this job with `OutLocked`, naming the
   holder; a stale one (its heartbeat older than `ttl_s`, or its process gone on this host) is removed;
2. write this job's claim `OUT/_lock/<job id>.json` (job id, host, pid, start, heartbeat);
3. list again: if another claim appeared meanwhile, both jobs raced; this one withdraws and stops.

Two jobs can never both pass step 3: the later of the two writes comes after the other job's listing, so
its own listing sees the other's claim. While the job runs, a thread renews the heartbeat every ttl_s/4;
`release` removes the claim. `force` (`--force-unlock`) removes every other claim, live or not.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid

import pyarrow.fs as pafs

from hdvg.contract import LOCK_DIR
from hdvg.storage import Store

log = logging.getLogger("hdvg")


class OutLocked(RuntimeError):
    """Another job holds OUT's lock; the message names it and says how to go on."""


def _alive_here(claim: dict) -> bool:
    if claim.get("host") != socket.gethostname():
        return True  # another machine's process: only its heartbeat can tell
    try:
        os.kill(int(claim["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


class OutLock:
    def __init__(self, store: Store, ttl_s: float = 120.0, job_id: str | None = None):
        self.store, self.ttl_s = store, ttl_s
        self.job_id = job_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.claim = {"job_id": self.job_id, "host": socket.gethostname(), "pid": os.getpid(),
                      "started": time.time()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return f"{self.job_id}.json"

    def _claims(self) -> dict[str, dict]:
        claims = {}
        for name in self.store.list(LOCK_DIR):
            if not name.endswith(".json"):
                continue
            try:
                claims[name] = json.loads(self.store.read_bytes(LOCK_DIR, name))
            except (FileNotFoundError, ValueError):  # removed meanwhile, or caught mid-write
                info = self.store.fs.get_file_info(self.store.path(LOCK_DIR, name))
                if info.type == pafs.FileType.File:
                    claims[name] = {"job_id": name.removesuffix(".json"),
                                    "heartbeat": info.mtime.timestamp() if info.mtime else time.time()}
        return claims

    def _stale(self, claim: dict) -> bool:
        return time.time() - float(claim.get("heartbeat", 0)) > self.ttl_s or not _alive_here(claim)

    def _write(self) -> None:
        data = json.dumps({**self.claim, "heartbeat": time.time()}).encode()
        if self.store.local is not None:  # a rename, so that a reader never sees half a claim
            folder = self.store.local / LOCK_DIR
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{self.name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, folder / self.name)
        else:  # a single PUT: visible only when complete
            with self.store.fs.open_output_stream(self.store.path(LOCK_DIR, self.name)) as f:
                f.write(data)

    @staticmethod
    def _describe(claim: dict) -> str:
        age = time.time() - float(claim.get("heartbeat", 0))
        return (f"job {claim.get('job_id')} (host {claim.get('host', '?')}, pid {claim.get('pid', '?')}, "
                f"heartbeat {age:.0f} s ago)")

    def acquire(self, force: bool = False) -> "OutLock":
        for name, claim in self._claims().items():
            if force or self._stale(claim):
                log.warning("hdvg: %s the lock of %s on %s", "removing" if force else "taking over the stale",
                            self._describe(claim), self.store.uri)
                self.store.fs.delete_file(self.store.path(LOCK_DIR, name))
            else:
                raise OutLocked(f"{self.store.uri} is being written by {self._describe(claim)}; one job writes an "
                                f"OUT at a time. Wait for it, or, if it is gone, rerun after its heartbeat is "
                                f"{self.ttl_s:g} s old (run.lock_ttl_s) or with --force-unlock")
        self._write()
        others = [c for n, c in self._claims().items() if n != self.name]
        if others:
            self.store.fs.delete_file(self.store.path(LOCK_DIR, self.name))
            raise OutLocked(f"{self.store.uri}: {self._describe(others[0])} took the lock at the same time; "
                            f"neither goes on. Run one of them again")
        self._thread = threading.Thread(target=self._beat, name="hdvg-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._write()
            except Exception as exc:  # a storage hiccup: the next beat tries again, well within the ttl
                log.warning("hdvg: lock heartbeat on %s failed: %s", self.store.uri, exc)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store.fs.delete_file(self.store.path(LOCK_DIR, self.name))
        except FileNotFoundError:
            pass

    def __enter__(self) -> "OutLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
