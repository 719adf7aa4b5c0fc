"""Where OUT lives: a local folder or object storage (`s3://`, `gs://`), through `pyarrow.fs`.

Publishing a finished file is atomic in both: a rename within OUT locally, and a single upload to object
storage, where an object (multipart included) becomes visible under its name only once complete. Object
storage credentials and endpoints come from the usual environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL,
GOOGLE_APPLICATION_CREDENTIALS, ...) and are never written anywhere by hdvg.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from hdvg.contract import TMP_DIR


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


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

    def delete(self, folder: str, name: str) -> None:
        self.fs.delete_file(self.path(folder, name))

    def scratch(self) -> Path:
        """A local folder for files being written: inside OUT when local (so publishing is a rename)."""
        d = self.local / TMP_DIR if self.local is not None else self._staging
        d.mkdir(parents=True, exist_ok=True)
        return d

    def clear_scratch(self) -> None:
        shutil.rmtree(self.local / TMP_DIR if self.local is not None else self._staging, ignore_errors=True)

    def publish(self, local_file: Path, folder: str, name: str) -> None:
        """Move a finished local file to OUT/folder/name, atomically."""
        if self.local is not None:
            os.replace(local_file, self.local / folder / name)
            return
        path = self.path(folder, name)
        dst = self.fs.open_output_stream(path)
        try:
            with local_file.open("rb") as src:
                shutil.copyfileobj(src, dst, length=8 << 20)
        except BaseException:
            # closing an S3 stream completes the upload: remove the partial object it leaves
            with contextlib.suppress(Exception):
                dst.close()
            with contextlib.suppress(Exception):
                self.fs.delete_file(path)
            raise
        dst.close()
        local_file.unlink()

    def read_table(self, folder: str, columns: list[str] | None = None) -> pa.Table | None:
        names = [n for n in self.list(folder) if n.endswith(".parquet")]
        if not names:
            return None
        return pa.concat_tables([pq.read_table(self.path(folder, n), columns=columns, filesystem=self.fs)
                                 for n in names])

    def write_text(self, name: str, text: str) -> None:
        tmp = self.scratch() / f".{name}.tmp"
        tmp.write_text(text)
        self.publish(tmp, "", name)

    def copy_to_local(self, dest: Path) -> Path:
        """A local copy of OUT (for checks that read files with tools that need paths)."""
        if self.local is not None:
            return self.local
        pafs.copy_files(self.root, str(dest), source_filesystem=self.fs, destination_filesystem=pafs.LocalFileSystem())
        return dest
