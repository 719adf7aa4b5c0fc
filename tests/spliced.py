"""A spliced set of real footage with known shot boundaries, for the shot-detection test and
bench/bench_detect.py: single-shot pieces of ../shared/data joined by ffmpeg with hard cuts (`concat`) and
gradual transitions (`xfade`: `fade` is a dissolve, `fadeblack` a fade through black) at known frames.

Every piece is brought to one size and frame rate first (scale + centre crop, `fps`, exact frame counts),
so that the output's frame n is known: a cut at frame c starts the next shot at c; an xfade of D frames
blends frames [c - D, c) and the next shot's own frames start at c.
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from hdvg.scenes import Span


@dataclass(frozen=True)
class Piece:
    path: str        # under ../shared/data
    start_s: float   # where the piece starts in its file (away from the file's own cuts)
    frames: int      # frames at the set's rate


@dataclass(frozen=True)
class Boundary:
    kind: str        # cut | fade | fadeblack
    span: Span       # the transition's frames (empty for a cut: Span(c, c), the next shot's first frame)


PANDA = "repo_videos/panda70m_samples/"
# Single-shot pieces, each from a different shot: the eight Panda-70M samples (clips split into single
# scenes by Panda-70M), the HD-VG clip (one released scene), both shots of cockatoo (cut at 7.85 s), the
# shots of Big Buck Bunny's first 30 s (cuts at 11.8, 15.7, 23.0 s), of goldeneye (decoded-frame cuts 60,
# 140 at 2/3 of 23.976 fps: 3.75, 8.76 s) and of the PAL clip (cuts at 2.8, 6.8, 12.0, 16.8 s), chaplin's
# single shot and the pancake clip.
PIECES = [
    Piece(PANDA + "1r2eNjJ__mE.20.mp4", 0.1, 60), Piece(PANDA + "5QQrqobDAG4.54.mp4", 0.1, 60),
    Piece(PANDA + "A3y8N3nnVJ8.68.mp4", 0.1, 60), Piece(PANDA + "QrOHqqixHDU.64.mp4", 0.1, 75),
    Piece(PANDA + "UaQKCrszICw.16.mp4", 0.1, 60), Piece(PANDA + "aIPu1xGNbhc.49.mp4", 0.5, 90),
    Piece(PANDA + "pKIEP-MOCu0.47.mp4", 0.1, 60), Piece(PANDA + "vE7ciKU5KM4.4.mp4", 0.5, 75),
    Piece("repo_videos/hdvg_clip/gpAkjSy_8iY.0_0.mp4", 1.0, 75),
    Piece("repo_videos/imageio_test_images/cockatoo.mp4", 1.0, 75),
    Piece("repo_videos/imageio_test_images/cockatoo.mp4", 9.0, 75),
    Piece("repo_videos/moviepy/big_buck_bunny_0_30.webm", 2.0, 75),
    Piece("repo_videos/moviepy/big_buck_bunny_0_30.webm", 12.5, 75),
    Piece("repo_videos/moviepy/big_buck_bunny_0_30.webm", 17.0, 75),
    Piece("repo_videos/moviepy/big_buck_bunny_0_30.webm", 24.5, 75),
    Piece("pyscenedetect_resources/goldeneye-vfr-drop3.mp4", 0.5, 60),
    Piece("pyscenedetect_resources/goldeneye-vfr-drop3.mp4", 4.5, 75),
    Piece("pyscenedetect_resources/issue-195-aspect-ratio.mp4", 3.5, 75),
    Piece("pyscenedetect_resources/issue-195-aspect-ratio.mp4", 7.5, 75),
    Piece("repo_videos/moviepy/chaplin.mp4", 1.0, 75),
    Piece("repo_videos/decord/flipping_a_pancake.mkv", 1.0, 75),
]


def build_spliced(shared: Path, pieces: list[Piece], joins: list[tuple[str, int]], out: Path,
                  size: tuple[int, int] = (1280, 720), fps: int = 30) -> tuple[list[Boundary], int]:
    """Join `pieces` into `out` (H.264, `fps`, `size`); `joins[i]` = (kind, transition frames) joins piece i
    to piece i + 1 (kind: cut | fade | fadeblack). Returns the boundaries and the video's frame count."""
    assert len(joins) == len(pieces) - 1
    w, h = size
    args, chains = [], []
    for i, p in enumerate(pieces):
        args += ["-ss", f"{p.start_s}", "-i", str(shared / p.path)]
        chains.append(f"[{i}:v]fps={fps},scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h},"
                      f"setsar=1,format=yuv420p,trim=end_frame={p.frames},setpts=PTS-STARTPTS,settb=1/{fps}[p{i}]")
    boundaries, length, last = [], pieces[0].frames, "p0"
    for i, (kind, frames) in enumerate(joins, start=1):
        if kind == "cut":
            chains.append(f"[{last}][p{i}]concat=n=2:v=1:a=0,settb=1/{fps}[j{i}]")
            boundaries.append(Boundary(kind, Span(length, length)))
            length += pieces[i].frames
        else:
            offset = (length - frames) / fps
            chains.append(f"[{last}][p{i}]xfade=transition={kind}:duration={frames / fps}:offset={offset}[j{i}]")
            boundaries.append(Boundary(kind, Span(length - frames, length)))
            length += pieces[i].frames - frames
        last = f"j{i}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, "-filter_complex", ";".join(chains), "-map", f"[{last}]",
                    "-r", str(fps), "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
                    str(out)], check=True)
    return boundaries, length


def shots_of(boundaries: list[Boundary], num_frames: int) -> list[Span]:
    """The frames that show each shot alone: between one transition's end and the next one's start, except
    that a fade through black shows the outgoing shot alone (darkening) up to its black middle frame and
    the incoming one alone from there (every frame of a dissolve mixes both)."""
    def middle(b: Boundary) -> int:
        return b.span.start + b.span.num_frames // 2

    starts = [0, *[middle(b) if b.kind == "fadeblack" else b.span.end for b in boundaries]]
    ends = [*[middle(b) + 1 if b.kind == "fadeblack" else b.span.start for b in boundaries], num_frames]
    return [Span(s, e) for s, e in zip(starts, ends)]


def match(found: list[Span], boundaries: list[Boundary], tolerance: int = 2) -> list[bool]:
    """Which true boundaries a found transition hits (overlaps the transition widened by `tolerance` frames
    each side; a cut at c is the frames c - 1 and c, the last of one shot and the first of the next); each
    found transition counts for one boundary at most."""
    free = list(found)
    hits = []
    for b in boundaries:
        lo, hi = min(b.span.start, b.span.end - 1) - tolerance, b.span.end + tolerance
        hit = next((f for f in free if f.start < hi and max(f.end, f.start + 1) > lo), None)
        if hit is not None:
            free.remove(hit)
        hits.append(hit is not None)
    return hits


def scores(found: list[Span], boundaries: list[Boundary], tolerance: int = 2) -> dict:
    hits = match(found, boundaries, tolerance)
    tp = sum(hits)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(boundaries) if boundaries else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    by_kind = {}
    for b, hit in zip(boundaries, hits):
        got, total = by_kind.get(b.kind, (0, 0))
        by_kind[b.kind] = (got + hit, total + 1)
    return {"precision": precision, "recall": recall, "f1": f1, "by_kind": by_kind}


def spans_outside_shots(spans: list[Span], shots: list[Span], tolerance: int = 2) -> list[Span]:
    """The clip spans that do not lie inside one shot (widened by `tolerance` frames each side: the first and
    last frames of a dissolve differ from the shots' own by a few grey levels)."""
    return [s for s in spans
            if not any(shot.start - tolerance <= s.start and s.end <= shot.end + tolerance for shot in shots)]
