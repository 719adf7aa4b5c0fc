"""Where OUT lives: a local folder or object storage (`s3://`, `gs://`), through `pyarrow.fs`.

Publishing a finished file is atomic in both and never leaves a partial file under its final name:

* local: the file is fsynced, renamed into place, and its folder fsynced, so a commit survives a power
  cut in the order it was made;
* object storage: the file is uploaded under OUT/_tmp/ and then moved (a server-side copy, which is
  atomic, then a delete) to its name. A failed upload leaves at most an object under _tmp/, which the next
  run's `recover` removes, even when deleting it after the failure fails too.

Object storage credentials and endpoints come from the usual environment (AWS_ACCESS_KEY_ID,
AWS_ENDPOINT_URL, GOOGLE_APPLICATION_CREDENTIALS, ...) and are never written anywhere by hdvg.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hdvg.contract import TMP_DIR


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder's fsync makes the renames in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Store:
    """OUT as a pyarrow filesystem plus a root path; names below it are '/'-joined."""

    def __init__(self, uri: str | Path, scratch_dir: str | None = None):
        uri = str(uri)
        # the local staging folder of a remote OUT: one per OUT, so a rerun clears what a crash left
        digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
        self._staging = Path(scratch_dir or tempfile.gettempdir()) / f"hdvg-out-{digest}"
        if is_remote(uri):
            self.fs, self.root = pafs.FileSystem.from_uri(uri)
            self.local: Path | None = None
        else:
            self.local = Path(uri.removeprefix("file://")).resolve()
            self.fs, self.root = pafs.LocalFileSystem(), str(self.local)
        self.uri = uri

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *(p for p in parts if p)])

    def makedirs(self, *dirs: str) -> None:
        if self.local is not None:  # object stores have no folders to make
            for d in dirs:
                (self.local / d).mkdir(parents=True, exist_ok=True)

    def list(self, folder: str) -> list[str]:
        """Names of the files directly in `folder` (none if it does not exist)."""
        selector = pafs.FileSelector(self.path(folder), allow_not_found=True)
        return sorted(i.base_name for i in self.fs.get_file_info(selector) if i.type == pafs.FileType.File)

    def exists(self, folder: str, name: str) -> bool:
        return self.fs.get_file_info(self.path(folder, name)).type == pafs.FileType.File

    def delete(self, folder: str, name: str) -> None:
        self.fs.delete_file(self.path(folder, name))

    def move(self, folder: str, name: str, dest_folder: str) -> None:
        """Move OUT/folder/name to OUT/dest_folder/name (a rename locally, copy + delete remotely)."""
        self.makedirs(dest_folder)
        self.fs.move(self.path(folder, name), self.path(dest_folder, name))

    def scratch(self) -> Path:
        """A local folder for files being written: inside OUT when local (so publishing is a rename), else
        the staging folder (under `run.scratch_dir` when given)."""
        d = self.local / TMP_DIR if self.local is not None else self._staging
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_scratch(self) -> None:
        """Remove what interrupted writers left: the local staging folder and, remotely, OUT/_tmp/."""
        shutil.rmtree(self.local / TMP_DIR if self.local is not None else self._staging, ignore_errors=True)
        if self.local is None:
            for name in self.list(TMP_DIR):
                with contextlib.suppress(FileNotFoundError):
                    self.delete(TMP_DIR, name)

    def publish(self, local_file: Path, folder: str, name: str) -> None:
        """Move a finished local file to OUT/folder/name, atomically and durably."""
        if self.local is not None:
            dest = self.local / folder / name
            fsync_path(local_file)
            os.replace(local_file, dest)
            fsync_path(dest.parent)
            return
        staged = self.path(TMP_DIR, f"{uuid.uuid4().hex}-{name}")
        try:
            with local_file.open("rb") as src, self.fs.open_output_stream(staged) as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
            self.fs.move(staged, self.path(folder, name))
        except BaseException:
            # closing an S3 stream completes its upload: what it leaves is under _tmp/ only
            with contextlib.suppress(Exception):
                self.fs.delete_file(staged)
            raise
        local_file.unlink()

    def write_bytes(self, folder: str, name: str, data: bytes) -> None:
        tmp = self.scratch() / f".{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        self.publish(tmp, folder, name)

    def read_bytes(self, folder: str, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(folder, name)) as f:
            return f.read()

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes("", name, text.encode())

    def dataset(self, folder: str, names: list[str], schema: pa.Schema) -> pads.Dataset:
        """The parquet files `names` of `folder` as one dataset read with `schema`: a column an older file
        lacks reads as null, and only the columns asked for are read."""
        return pads.dataset([self.path(folder, n) for n in names], schema=schema, format="parquet",
                            filesystem=self.fs)

    def read_table(self, folder: str, columns: list[str] | None = None) -> pa.Table | None:
        names = [n for n in self.list(folder) if n.endswith(".parquet")]
        if not names:
            return None
        return pa.concat_tables([pq.read_table(self.path(folder, n), columns=columns, filesystem=self.fs)
                                 for n in names])

    def copy_to_local(self, dest: Path) -> Path:
        """A local copy of OUT (for checks that read files with tools that need paths)."""
        if self.local is not None:
            return self.local
        pafs.copy_files(self.root, str(dest), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return dest
