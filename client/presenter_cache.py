"""Raw face detections per presenter video, stored on disk and reused for every new speech on it.

Key: sha256 of the video's bytes + the tracking spec (detector identity and size, frame transform,
face choice, pads, smoothing), so editing the video, re-exporting the detector or changing an
option never reuses stale boxes. An entry holds the followed face's box per decoded frame (NaN
where none) for the first K frames, and whether K is the whole video: a longer speech later
extends it. Writes are atomic (temp file + rename); an unreadable entry is a logged miss and is
rewritten, never a crash.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipsync_triton import log
from lipsync_triton.files import file_sha256

CACHE_VERSION = 3  # 3: detector input letterboxed from I420 frames


def default_cache_dir() -> Path:
    base = os.environ.get("LIPSYNC_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "lipsync-triton")
    return Path(base) / "presenters"


@dataclass
class CachedDetections:
    raw: np.ndarray  # float32 [K, 4] x1,y1,x2,y2 of the followed face per frame; NaN rows: no face
    complete: bool  # K is every frame of the video

    def covers(self, frames: int | None) -> bool:
        return self.complete or (frames is not None and len(self.raw) >= frames)


class PresenterCache:
    def __init__(self, directory: Path | None = None):
        self.directory = Path(directory) if directory else default_cache_dir()

    def key(self, video: Path, spec: dict) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "video": file_sha256(video), "spec": spec}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> CachedDetections | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                raw, complete = np.asarray(data["raw"], np.float32), bool(data["complete"])
            if raw.ndim != 2 or raw.shape[1] != 4 or len(raw) == 0:
                raise ValueError(f"boxes of shape {raw.shape}")
        except Exception as exc:  # any damage (truncated zip, wrong arrays) is a miss, never a crash
            log.event("presenter_cache", status="corrupt", key=key, reason=f"{type(exc).__name__}: {exc}"[:160])
            return None
        return CachedDetections(raw, complete)

    def store(self, key: str, entry: CachedDetections) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".npz", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, raw=entry.raw.astype(np.float32), complete=np.bool_(entry.complete))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
