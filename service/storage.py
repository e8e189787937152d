"""Inputs and results under one URL through fsspec: a local folder by default, `s3://bucket/prefix`
(MinIO, Huawei OBS, AWS S3) via s3fs with a custom endpoint. The keys' layout is storage_keys.py's.
Writes are atomic: a local file is written beside its key and renamed; an S3 PUT is atomic."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import fsspec


class Storage:
    def __init__(self, url: str, endpoint_url: str = ""):
        options = {}
        if url.startswith("s3://"):
            # Bounded waits: a store that stops answering fails a call in seconds (then the job's
            # retry policy applies) instead of hanging a worker thread for botocore's minute.
            options["config_kwargs"] = {"connect_timeout": 5, "read_timeout": 30,
                                        "retries": {"max_attempts": 5, "mode": "standard"}}
            if endpoint_url:
                options["client_kwargs"] = {"endpoint_url": endpoint_url}
        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        self.root = root.rstrip("/")
        self.local = self.fs.protocol in ("file", "local") or "file" in (self.fs.protocol or ())
        if self.local:
            Path(self.root).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid storage key {key!r}")
        return f"{self.root}/{key}"

    def put_file(self, local: str | Path, key: str, move: bool = False) -> None:
        """Upload `local` as `key`, replacing it atomically (a re-run overwrites, never duplicates).
        `move`: the caller is done with `local`, so local storage may rename it instead of copying."""
        target = self._path(key)
        if self.local:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            tmp = f"{target}.partial-{uuid.uuid4().hex}"
            try:
                try:
                    if not move:
                        raise OSError
                    os.rename(local, tmp)  # same file system: no copy
                except OSError:
                    shutil.copyfile(local, tmp)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
        else:
            self.fs.put_file(str(local), target)

    def get_file(self, key: str, local: str | Path) -> None:
        self.fs.get_file(self._path(key), str(local))

    def local_path(self, key: str) -> Path | None:
        """The file itself when storage is a local folder (served without a copy), else None."""
        return Path(self._path(key)) if self.local else None

    @staticmethod
    def plain_file_under(path: str, prefix: str) -> bool:
        """A local path that exists (or not yet) under `prefix` with no symbolic link on the way: what
        it names is what is read, never a file elsewhere that a planted link points to."""
        base, target = Path(prefix), Path(path)
        if not target.is_relative_to(base):
            return False
        for part in [target, *target.parents]:
            if part == base.parent:
                break
            if part.is_symlink():
                return False
        return not target.exists() or (target.is_file() and target.resolve().is_relative_to(base.resolve()))

    def open(self, key: str, mode: str = "rb"):
        return self.fs.open(self._path(key), mode)

    def size(self, key: str) -> int:
        """The object's size in bytes (FileNotFoundError when there is none)."""
        return int(self.fs.size(self._path(key)))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm(self._path(key), recursive=True)
        except FileNotFoundError:
            pass

    def ping(self) -> None:
        """Raises when the store cannot be reached (readiness): lists the folder, or the bucket."""
        self.fs.ls(self.root if self.local else self.root.split("/")[0], refresh=True)
