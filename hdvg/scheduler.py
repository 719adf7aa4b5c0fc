"""The curation job's scheduler: every input video is one `InFlight` record that moves through named stages
until its row commits.

    decoding    process task running (fetch, probe, filter, cut, keyframes)       deadline enforced here
    preparing   keyframes of the clips still without a caption being preprocessed
    queued      preprocessed, waiting for a captioner batch
    captioning  in a captioner actor's call (a batch gathers keyframes of several videos)  deadline here too
    adding      sent to its node's shard writer
    pending     added, waiting for the writer to commit the shard it is in

A record is done when its writer commits; only then does it count in the progress line, and only then is
a later input line with the same video_id recorded (as a duplicate), so a crash in between never marks the
original done. A video task that passes its deadline is cancelled and recorded as `timeout: ...`; one whose
writer is lost (its node died) is processed again, unless the writer committed it before it died.
A captioner call without an answer within `captioner.call_timeout_s` (counted from its dispatch, so it covers
an actor still loading its weights) fails its videos as transient `caption: timeout: ...` and the actor is
killed and started again by Ray, so a hung GPU costs one batch, not the job.

`Scheduler` only moves records; the stage functions and actors are in hdvg.pipeline.
"""
from __future__ import annotations

import heapq
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import ray
from ray.exceptions import ActorUnschedulableError, RayActorError, RayError, RayTaskError

from hdvg.config import CurateConfig
from hdvg.contract import STATUS_FAILED, VIDEO_SCHEMA, VIDEOS_DIR, shard_name
from hdvg.download import YouTubeNotReady, youtube_ready
from hdvg.process import video_row
from hdvg.shards import remove_uncommitted
from hdvg.sources import WorkItem, is_youtube_source
from hdvg.storage import Store
from hdvg.tally import VideoTally, duplicate_reason

log = logging.getLogger("hdvg")
POLL_S = 1.0          # how often deadlines are checked while nothing finishes
CANCEL_GRACE_S = 30.0  # a cancelled task that has not stopped by then is killed with its worker process
MAX_WRITER_LOSSES = 2  # a video whose writer was lost this often is recorded as failed (transient)


@dataclass
class InFlight:
    item: WorkItem
    deadline: float
    head_ref: Any = None
    jpgs_ref: Any = None
    mp4s_ref: Any = None
    head: tuple | None = None          # (row, clip metas, node id), fetched when the task is done
    need: list[int] = field(default_factory=list)  # clips that still need a caption, by position
    pixels_ref: Any = None
    captioned_ref: Any = None          # (captions, captioner name) of the clips in `need`
    captioner: int | None = None
    writer: "WriterSlot | None" = None
    writer_losses: int = 0
    duplicate_of: str | None = None    # a duplicate input line: its row only, no task
    recorded: bool = False             # the row is the scheduler's own (timeout, lost worker, ...): no task
    done: bool = False                 # counted in the progress line's videos done

    @property
    def video_id(self) -> str:
        return self.item.video_id


@dataclass
class WriterSlot:
    """A shard writer actor and the records it holds that are not committed yet."""
    key: str                         # node id, or "head"
    writer_id: str                   # this actor's name for the shard numbers it takes
    actor: Any
    next_number: int | None = None   # the job's only writer counts its own numbers: the next it takes
    unanswered: int = 0              # add and commit calls sent, not answered yet: each can take one number
    pending: list[InFlight] = field(default_factory=list)
    committing: Any = None           # ref of a commit call in flight
    dead: bool = False
    lost_commits: list[int] | None = None  # once lost: the numbers it had committed that we had not seen

    def answered(self, committed: str | None) -> None:
        """One of its calls came back; `committed`: the shard that call committed, if any."""
        self.unanswered -= 1
        if committed and self.next_number is not None:
            self.next_number = int(committed) + 1

    def unseen_numbers(self) -> range:
        """The numbers a writer that counts its own can have committed without our having seen it."""
        return range(self.next_number, self.next_number + self.unanswered)


def read_ahead(items: Iterator[WorkItem], window: int, size: Callable[[WorkItem], int]) -> Iterator[WorkItem]:
    """`items` in a bounded look-ahead: at most `window` are held; the largest (by `size`) of those held goes
    first (longest processing time first, so a long video does not start last and leave cores idle)."""
    heap: list[tuple[int, int, WorkItem]] = []
    for n, item in enumerate(items):
        heapq.heappush(heap, (-size(item), n, item))
        if len(heap) >= window:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]


def local_size(item: WorkItem) -> int:
    path = Path(item.source)
    try:
        return path.stat().st_size if "://" not in item.source else 0
    except OSError:
        return 0


def task_deadline_s(item: WorkItem, cfg: CurateConfig) -> float:
    """The wall-clock limit of one video task: its cutting (`encode.timeout_s`), plus the download's own
    limit when it is downloaded."""
    downloaded = "://" in item.source and not item.source.startswith("file://")
    return cfg.encode.timeout_s + (cfg.source.download_timeout_s if downloaded or is_youtube_source(item.source)
                                   else 0.0)


class Progress:
    """The running job's line: videos done of this run's total (duplicates included), the committed ones by
    status (counted by VideoTally, as stats.json is), and an ETA from the rate so far. The total is known as
    soon as the input is counted (`counted`, beside the run) and exact once all of it is read."""

    def __init__(self, limit: int = 0):
        self.tally, self.read, self.done = VideoTally(), 0, 0
        self.total: int | None = None
        self.limit = limit
        self.started, self.last_print = time.monotonic(), None
        self.input_done = False

    def counted(self, items: int) -> None:
        """The input holds `items` videos this run has to do (`--limit` caps them)."""
        if not self.input_done:
            self.total = min(items, self.limit) if self.limit else items

    def input_read(self) -> None:
        self.input_done, self.total = True, self.read

    def committed(self, rows: list[dict]) -> None:
        self.tally.add(pa.Table.from_pylist(rows, schema=VIDEO_SCHEMA))

    def line(self) -> str:
        t, wall = self.tally, max(time.monotonic() - self.started, 1e-9)
        total = None if self.total is None else max(self.total, self.read, self.done)
        rate = self.done / wall
        eta = f"ETA {(total - self.done) / rate:.0f} s" if total is not None and rate > 0 else "ETA -"
        by = t.by_status
        return (f"[hdvg] videos {self.done}/{self.read if total is None else total}{'+' if total is None else ''} "
                f"(ok {by['ok']}, filtered {by['filtered']}, failed {by['failed']}) clips {t.clips} | "
                f"{t.seconds_in / 3600:.3f} h in, {t.seconds_out / 3600:.3f} h out | "
                f"{t.seconds_in / wall:.2f} video-s/s | {eta}")

    def maybe_print(self, every: float = 10.0, force: bool = False) -> None:
        """A line every `every` seconds, the first once a video is done (it gives the rate the ETA needs) or
        after a minute without one."""
        now = time.monotonic()
        due = now - self.last_print >= every if self.last_print is not None else \
            self.done > 0 or now - self.started >= 60
        if force or due:
            print(self.line(), file=sys.stderr, flush=True)
            self.last_print = now


def error_text(exc: BaseException) -> str:
    text = str(getattr(exc, "cause", None) or exc).strip().splitlines()
    return text[-1][:500] if text else type(exc).__name__


class Scheduler:
    """Runs `items` through the job's Ray tasks and actors (`stages`, see hdvg.pipeline.Stages)."""

    def __init__(self, cfg: CurateConfig, stages, items: Iterator[WorkItem], max_inflight: int):
        self.cfg, self.stages, self.max_inflight = cfg, stages, max_inflight
        self.items = items
        self.store = Store(cfg.output)
        self.progress = Progress(cfg.run.limit or 0)
        self.decoding: dict = {}     # head ref -> record
        self.cancelling: dict = {}   # head ref -> time its grace ends
        self.preparing: dict = {}    # pixels ref -> record
        self.queued: list[InFlight] = []
        self.captioning: dict = {}   # captioned ref -> record
        self.adding: dict = {}       # add ref -> record
        self.writers: dict[str, WriterSlot] = {}
        self.next_first = stages.first_shard  # of the next writer that counts its own numbers
        self.started_ids: set[str] = set()          # ids taken this run (duplicates are detected against them)
        self.committed_ids: set[str] = set()
        self.waiting_duplicates: dict[str, list[WorkItem]] = {}
        self.outstanding = [0] * len(stages.captioners)
        self.youtube: dict | None = None  # yt-dlp's report, once the input has a video to download from YouTube

    # ---------------------------------------------------------------- feeding

    def in_flight(self) -> int:
        return (len(self.decoding) + len(self.preparing) + len(self.queued) + len(self.captioning)
                + len(self.adding))

    def _feed(self) -> None:
        while not self.progress.input_done and self.in_flight() < self.max_inflight:
            item = next(self.items, None)
            if item is None or (self.cfg.run.limit and len(self.started_ids) >= self.cfg.run.limit):
                self.progress.input_read()
                return
            self.progress.read += 1
            if self.youtube is None and is_youtube_source(item.source) and \
                    (not self.cfg.source.mirror or self.cfg.source.mirror_fallback):
                self.youtube = youtube_ready(self.cfg.source)  # YouTubeNotReady stops the job before a download
            if item.video_id in self.started_ids:
                if item.video_id in self.committed_ids:
                    self._record_duplicate(item)
                else:
                    self.waiting_duplicates.setdefault(item.video_id, []).append(item)
                continue
            self.started_ids.add(item.video_id)
            self._submit(InFlight(item, 0.0))

    def _submit(self, rec: InFlight) -> None:
        rec.deadline = time.monotonic() + task_deadline_s(rec.item, self.cfg)
        rec.head_ref, rec.jpgs_ref, rec.mp4s_ref = self.stages.process(rec.item)
        rec.head, rec.need, rec.pixels_ref, rec.captioned_ref = None, [], None, None
        self.decoding[rec.head_ref] = rec

    def _record_duplicate(self, item: WorkItem) -> None:
        rec = InFlight(item, 0.0, duplicate_of=item.video_id, recorded=True)
        self._fail(rec, duplicate_reason(item.video_id))

    def _fail(self, rec: InFlight, reason: str) -> None:
        """Record `rec` as failed with `reason` (no clips)."""
        rec.head = (video_row(rec.item, STATUS_FAILED, reason), [], None)
        rec.jpgs_ref = rec.mp4s_ref = rec.captioned_ref = None
        rec.need, rec.recorded = [], True
        self._add(rec)

    # ---------------------------------------------------------------- stages

    def _decoded(self, rec: InFlight) -> None:
        try:
            rec.head = ray.get(rec.head_ref)
        except RayTaskError as exc:
            if isinstance(exc.cause, YouTubeNotReady):  # that node cannot download from YouTube: stop the job
                raise exc.cause from None
            self._fail(rec, f"worker: {error_text(exc)}")
            return
        except RayError as exc:  # the worker died (segfault, OOM kill) even after a retry
            self._fail(rec, f"worker: {error_text(exc)}")
            return
        metas = rec.head[1]
        rec.need = [i for i, meta in enumerate(metas) if meta["captioner"] is None]
        if rec.need and self.stages.spec.runs_model:
            rec.pixels_ref = self.stages.preprocess(rec.jpgs_ref, rec.need)
            self.preparing[rec.pixels_ref] = rec
        else:  # nothing to caption, or no model ('none', weights missing): the missing captions stay empty
            self._add(rec)

    def _dispatch_captions(self) -> None:
        """Batches gather keyframes of several videos; a partial one goes only to an idle captioner, or when
        no more keyframes are on their way."""
        batch = self.cfg.captioner.batch_size
        while self.queued:
            index = min(range(len(self.outstanding)), key=self.outstanding.__getitem__)
            waiting = sum(len(r.need) for r in self.queued)
            if waiting < batch and self.outstanding[index] and (self.decoding or self.preparing):
                return
            group, clips = [], 0
            while self.queued and (not group or clips + len(self.queued[0].need) <= batch):
                group.append(self.queued.pop(0))
                clips += len(group[-1].need)
            refs = self.stages.caption(index, [r.pixels_ref for r in group])
            deadline = time.monotonic() + self.cfg.captioner.call_timeout_s
            for ref, rec in zip(refs, group):
                rec.captioner, rec.captioned_ref, rec.deadline = index, ref, deadline
                self.captioning[ref] = rec
            self.outstanding[index] += len(group)

    def _captioned(self, rec: InFlight) -> None:
        self.outstanding[rec.captioner] -= 1
        try:
            ray.get(rec.captioned_ref)
        except RayError as exc:  # the batch's videos fail, transient: a rerun with --retry-failed redoes them
            self._fail(rec, f"caption: {error_text(exc)}")
            return
        self._add(rec)

    def _writer_for(self, rec: InFlight) -> WriterSlot:
        """The writer of the node that ran the video (its clips are in that node's object store), or the
        driver's node's one."""
        node = rec.head[2] if self.stages.per_node_writers and rec.head[2] else "head"
        if node != "head" and node not in self.stages.alive_nodes():
            node = "head"
        slot = self.writers.get(node)
        if slot is None or slot.dead:
            writer_id = f"{node[:12]}-{len(self.writers)}-{time.monotonic_ns()}"
            # one writer at a time (all on the driver's node): it counts its own numbers, no ShardNumbers
            first = None if self.stages.per_node_writers else self.next_first
            slot = self.writers[node] = WriterSlot(node, writer_id, self.stages.writer(node, writer_id, first),
                                                   next_number=first)
        return slot

    def _add(self, rec: InFlight) -> None:
        rec.writer = self._writer_for(rec)
        rec.writer.unanswered += 1
        ref = rec.writer.actor.add.remote(rec.head, rec.need, rec.captioned_ref, rec.jpgs_ref, rec.mp4s_ref)
        self.adding[ref] = rec

    def _added(self, ref, rec: InFlight) -> None:
        try:
            committed = ray.get(ref)
        except (RayActorError, ActorUnschedulableError) as exc:  # its node died: lost unless it committed
            self._writer_lost(rec.writer, exc, also=[rec])
            return
        except RayTaskError:  # the writer itself failed (disk full, permissions): fatal, nothing half-written
            raise
        except RayError as exc:  # its clips could not be fetched (their node died): process the video again
            self._redo(rec, f"worker: {error_text(exc)}")
            return
        rec.writer.answered(committed)
        rec.writer.pending.append(rec)
        if not rec.done:  # at its writer, as good as committed for the rate the ETA needs
            rec.done = True
            self.progress.done += 1
        if committed:
            self._committed(rec.writer)

    def _committed(self, slot: WriterSlot) -> None:
        done, slot.pending = slot.pending, []
        self.progress.committed([r.head[0] for r in done if r.duplicate_of is None])
        for rec in done:
            self._done(rec)

    def _done(self, rec: InFlight) -> None:
        if rec.duplicate_of is None:
            self.committed_ids.add(rec.video_id)
            for dup in self.waiting_duplicates.pop(rec.video_id, []):
                self._record_duplicate(dup)

    def _writer_lost(self, slot: WriterSlot, exc: BaseException, also: list[InFlight] = ()) -> None:
        if slot.dead:
            lost = list(also)
        else:
            slot.dead = True
            lost = slot.pending + [r for r in self.adding.values() if r.writer is slot] + list(also)
            for ref in [ref for ref, r in self.adding.items() if r.writer is slot]:
                del self.adding[ref]
            slot.pending = []
            log.warning("hdvg: shard writer on %s lost (%s): %d uncommitted videos redone", slot.key,
                        error_text(exc), len(lost))
            slot.lost_commits = self._unseen_commits(slot)
            if slot.next_number is not None:
                # the job's only writer: the next one goes on after its last commit, so the numbers stay
                # gapless, and what it left half-published under the numbers after it goes first
                self.next_first = max(slot.lost_commits, default=slot.next_number - 1) + 1
                remove_uncommitted(self.store)
        committed = self._committed_by(slot, {r.video_id for r in lost})
        kept = [r for r in lost if r.video_id in committed and r.duplicate_of is None]
        if kept:
            self.progress.committed([r.head[0] for r in kept])
            for rec in kept:
                self._done(rec)
        for rec in lost:
            if rec not in kept:
                self._redo(rec, f"writer: lost ({error_text(exc)})")

    def _unseen_commits(self, slot: WriterSlot) -> list[int]:
        """The shard numbers a lost writer had committed whose commit never reached us (it died meanwhile)."""
        taken = slot.unseen_numbers() if slot.next_number is not None else self.stages.numbers_of(slot.writer_id)
        return [n for n in taken if self.store.exists(VIDEOS_DIR, f"{shard_name(n)}.parquet")]

    def _committed_by(self, slot: WriterSlot, ids: set[str]) -> set[str]:
        """Which of `ids` a lost writer had committed before it died."""
        found = set()
        for number in slot.lost_commits:
            part = self.store.dataset(VIDEOS_DIR, [f"{shard_name(number)}.parquet"], VIDEO_SCHEMA)
            found |= ids & set(part.to_table(columns=["video_id"])["video_id"].to_pylist())
        return found

    def _redo(self, rec: InFlight, reason: str) -> None:
        """`rec` was lost on its way to a commit: its row again when it is the scheduler's own, else the
        video again (a lost cause after MAX_WRITER_LOSSES)."""
        rec.writer_losses += 1
        if rec.recorded:
            self._add(rec)
        elif rec.writer_losses > MAX_WRITER_LOSSES:
            self._fail(rec, reason)
        else:
            self._submit(rec)

    # ---------------------------------------------------------------- deadlines

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for ref, rec in list(self.decoding.items()):
            if now > rec.deadline:
                del self.decoding[ref]
                ray.cancel(ref)  # a KeyboardInterrupt in the task: it removes its scratch folder
                self.cancelling[ref] = now + CANCEL_GRACE_S
                limit = task_deadline_s(rec.item, self.cfg)
                self._fail(rec, f"timeout: no result within {limit:g} s (encode.timeout_s"
                                f"{' + source.download_timeout_s' if limit > self.cfg.encode.timeout_s else ''}); "
                                f"task cancelled")
        late = {rec.captioner for rec in self.captioning.values() if now > rec.deadline}
        for index in late:  # a hung call: its videos fail (transient), its actor starts afresh
            calls = [(ref, rec) for ref, rec in self.captioning.items() if rec.captioner == index]
            self.stages.restart_captioner(index, [ref for ref, _ in calls])
            self.outstanding[index] = 0
            for ref, rec in calls:
                del self.captioning[ref]
                self._fail(rec, f"caption: timeout: no answer within {self.cfg.captioner.call_timeout_s:g} s "
                                f"(captioner.call_timeout_s); captioner restarted")
        if self.cancelling:
            ready, _ = ray.wait(list(self.cancelling), num_returns=len(self.cancelling), timeout=0, fetch_local=False)
            for ref in ready:
                del self.cancelling[ref]
            for ref, grace in list(self.cancelling.items()):
                if now > grace:  # stuck in native code: kill its worker process
                    ray.cancel(ref, force=True)
                    del self.cancelling[ref]

    # ---------------------------------------------------------------- the loop

    def _finish_writers(self) -> None:
        """Once nothing is on its way to a writer, each writer commits what it holds."""
        if self.in_flight() or not self.progress.input_done:
            return
        for slot in self.writers.values():
            if slot.pending and slot.committing is None and not slot.dead:
                slot.unanswered += 1
                slot.committing = slot.actor.commit.remote()

    def run(self) -> Progress:
        while True:
            self._feed()
            self._dispatch_captions()
            self._finish_writers()
            commits = {s.committing: s for s in self.writers.values() if s.committing is not None}
            waiting = [*self.decoding, *self.preparing, *self.captioning, *self.adding, *commits]
            if not waiting:
                if self.progress.input_done and not self.waiting_duplicates and not self.queued:
                    break
                continue
            ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_S, fetch_local=False)
            for ref in ready:
                if ref in self.decoding:
                    self._decoded(self.decoding.pop(ref))
                elif ref in self.preparing:  # a failed preprocess surfaces as the failure of its caption call
                    self.queued.append(self.preparing.pop(ref))
                elif ref in self.captioning:
                    self._captioned(self.captioning.pop(ref))
                elif ref in self.adding:
                    self._added(ref, self.adding.pop(ref))
                else:
                    slot = commits[ref]
                    slot.committing = None
                    try:
                        committed = ray.get(ref)  # a writer error (disk full, permissions) is fatal
                    except RayActorError as exc:
                        self._writer_lost(slot, exc)
                        continue
                    slot.answered(committed)
                    self._committed(slot)
            self._check_deadlines()
            self.progress.maybe_print()
        self.progress.maybe_print(force=True)
        return self.progress
