"""Face boxes per presenter video, stored on disk and reused for every new speech on that video.

Key: sha256 of the video's bytes + the options that change detection (so editing the video or
changing pads/crop/face choice never reuses stale boxes). Writes are atomic (temp file + rename).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from lipsync_triton.files import file_sha256

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    base = os.environ.get("LIPSYNC_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lipsync-triton")
    return Path(base) / "presenters"


class PresenterCache:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()

    def key(self, video: Path, options: dict) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "video": file_sha256(video), "options": options}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def load(self, key: str) -> tuple[np.ndarray, int] | None:
        path = self.directory / f"{key}.npz"
        try:
            with np.load(path) as data:
                return data["boxes"].astype(np.int32), int(data["filled"])
        except (OSError, KeyError, ValueError):
            return None

    def store(self, key: str, boxes: np.ndarray, filled: int) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.npz"
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npz", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, boxes=boxes.astype(np.int32), filled=np.int64(filled))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
