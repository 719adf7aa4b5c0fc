"""The progress line tells the truth: the input is counted beside the run, so the total and the ETA are there
from the first line; `--limit`ed items are not counted, duplicates are; the last line reads N/N, ETA 0 s."""
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hdvg.config import SourceConfig
from hdvg.scheduler import Progress
from hdvg.sources import count_inputs, list_inputs
from tests.conftest import ROOT, shared_file

HDVILA = "metadata/hd-vila-100m/DERIVED_hdvila_format_from_hdvg_first10.jsonl"


def test_count_inputs_equals_what_list_inputs_yields(tmp_path):
    pq.write_table(pa.table({"path": [f"v{i}.mp4" for i in range(10_000)]}), tmp_path / "videos.parquet")
    (tmp_path / "list.txt").write_text("# a comment\na.mp4\n\nb.mp4\nhttps://www.youtube.com/watch?v=dQw4w9WgXcQ\n")
    (tmp_path / "list.csv").write_text("path,video_id\na.mp4,x\nb.mp4,y\n")
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.mp4", "b.txt", "sub/c.mp4"):
        (folder / name).write_bytes(b"")
    hdvila = tmp_path / "part.jsonl"
    hdvila.write_bytes(shared_file(HDVILA).read_bytes())
    for spec in ("videos.parquet", "list.txt", "list.csv", "folder", "part.jsonl"):
        for part, parts in ((0, 1), (1, 3), (2, 3)):
            cfg = SourceConfig(part=part, parts=parts)
            assert count_inputs(tmp_path / spec, cfg) == sum(1 for _ in list_inputs(tmp_path / spec, cfg)), spec
    assert count_inputs(tmp_path / "videos.parquet") == 10_000


def eta_of(line: str) -> str:
    return re.search(r"ETA (\S+)", line).group(1)


def test_progress_has_a_total_and_an_eta_from_the_first_video_and_ends_at_n_of_n():
    progress = Progress()
    assert eta_of(progress.line()) == "-" and "videos 0/0+" in progress.line()
    progress.counted(10_000)  # the input counted beside the run
    progress.read, progress.done = 40, 1
    assert "videos 1/10000" in progress.line() and re.fullmatch(r"\d+", eta_of(progress.line()).rstrip("s"))
    assert float(eta_of(progress.line())) > 0
    progress.read = progress.done = 10_000
    progress.input_read()
    assert "videos 10000/10000" in progress.line() and progress.line().endswith("ETA 0 s")


def test_limit_caps_the_total_and_a_late_count_does_not_override_the_read_input():
    progress = Progress(limit=5)
    progress.counted(10_000)
    assert progress.total == 5
    progress.read = progress.done = 3
    progress.input_read()
    progress.counted(10_000)  # the count thread finishing after the input ran out changes nothing
    assert "videos 3/3" in progress.line()


def test_first_progress_line_waits_for_a_rate(capsys):
    progress = Progress()
    progress.counted(10)
    progress.maybe_print()
    assert capsys.readouterr().err == ""  # nothing done yet: no line with an ETA of "-"
    progress.read, progress.done = 2, 1
    progress.maybe_print()
    assert "videos 1/10" in capsys.readouterr().err


@pytest.mark.slow
def test_a_2000_row_manifest_shows_a_numeric_eta_from_its_first_line(tmp_path, sample_videos):
    """Real job, real Ray: 2,000 manifest rows (two real videos, a duplicate, the rest missing files that fail
    fast). Every line has the total; the last reads 2000/2000 with ETA 0 s; --limit 3 reads 4/4 (the three
    videos it takes and the duplicate row met on the way)."""
    real = sorted(p for p in sample_videos.iterdir() if p.suffix == ".mp4")[:2]
    paths = [str(p) for p in real] + [str(real[0])] + [f"/nonexistent/v{i:04d}.mp4" for i in range(1997)]
    pq.write_table(pa.table({"path": paths}), tmp_path / "videos.parquet")
    # about the progress line, not shots: PySceneDetect, the cheap detector
    curate = [sys.executable, "-m", "pipelines.curate", "--input", str(tmp_path / "videos.parquet"), "--captioner",
              "none", "--detector", "adaptive"]
    job = subprocess.run([*curate, "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert job.returncode == 0, job.stderr[-3000:]
    lines = [line for line in job.stderr.splitlines() if line.startswith("[hdvg] videos")]
    assert lines and all("/2000 " in line for line in lines), lines
    assert re.fullmatch(r"\d+", eta_of(lines[0]).rstrip("s")), lines[0]
    assert "videos 2000/2000" in lines[-1] and lines[-1].endswith("ETA 0 s")
    limited = subprocess.run([*curate, "--output", str(tmp_path / "out3"), "--limit", "3"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert limited.returncode == 0, limited.stderr[-3000:]
    last = [line for line in limited.stderr.splitlines() if line.startswith("[hdvg] videos")][-1]
    assert "videos 4/4 " in last and last.endswith("ETA 0 s")
