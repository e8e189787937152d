"""A batch as one ZIP: `manifest.csv` (columns `face`, `audio`, optional `name` and option columns)
naming members of the same archive.

A ZIP is a few kilobytes that can claim terabytes, so nothing is trusted before it is bounded:
- the manifest is streamed with a byte cap (MAX_MANIFEST_BYTES) and a row cap (MAX_ITEMS), never
  read whole;
- the caller checks the tenant's job limit from the row count before anything is extracted;
- each member's first bytes are sniffed (an accepted container of the right kind) before it is
  extracted, and each member is extracted at most once, however many rows name it;
- every row's members count against one budget of expanded bytes (`budget_bytes`, each use counted,
  since each job stores its inputs): declared sizes are checked first, and the real bytes while they
  are written (a header can lie);
- absolute paths, `..`, symlinks, oversized members and missing names are refused per item (the
  item fails, the rest run).
"""
from __future__ import annotations

import csv
import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from lipsync_triton.errors import InputError, LipsyncError
from lipsync_triton.preprocessing.media_sniff import AUDIO, HEAD_BYTES, IMAGE, VIDEO, check_head
from .jobs import safe_name

MANIFEST = "manifest.csv"
MAX_ITEMS = 1000
MAX_MANIFEST_BYTES = 1 << 20  # 1000 rows of paths and options fit in a tenth of it
KINDS = {"face": (VIDEO, IMAGE), "audio": (AUDIO, VIDEO)}


@dataclass
class ZipItem:
    face: Path | None
    audio: Path | None
    name: str
    options: dict = field(default_factory=dict)
    error: str | None = None


class _Capped(io.RawIOBase):
    """A member's stream that refuses to give more than `limit` bytes."""

    def __init__(self, raw, limit: int, message: str):
        self.raw, self.left, self.message = raw, limit, message

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(min(len(buffer), self.left + 1))
        if len(data) > self.left:
            raise InputError(self.message)
        self.left -= len(data)
        buffer[:len(data)] = data
        return len(data)


def _open_archive(zip_path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise InputError("archive is not a readable ZIP file") from None


def _rows(archive: zipfile.ZipFile) -> Iterator[dict]:
    """The manifest's rows, streamed: past MAX_MANIFEST_BYTES or MAX_ITEMS rows it stops with a 422."""
    try:
        raw = archive.open(MANIFEST)
    except KeyError:
        raise InputError(f"archive has no {MANIFEST} (columns: face, audio, optional name and options)") from None
    capped = _Capped(raw, MAX_MANIFEST_BYTES, f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES >> 20} MB; "
                                              f"list at most {MAX_ITEMS} items in it")
    text = io.TextIOWrapper(io.BufferedReader(capped), encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(text)
        if not reader.fieldnames or not {"face", "audio"} <= set(reader.fieldnames):
            raise InputError(f"{MANIFEST} needs a header row with face and audio columns and at least one item")
        for number, row in enumerate(reader):
            if number >= MAX_ITEMS:
                raise InputError(f"{MANIFEST} lists more than {MAX_ITEMS} items; the limit is {MAX_ITEMS} per batch")
            yield row
    except UnicodeDecodeError:
        raise InputError(f"{MANIFEST} is not UTF-8 text") from None
    except csv.Error as exc:
        raise InputError(f"{MANIFEST} is not a readable CSV file ({exc})") from None
    finally:
        raw.close()


def _safe_member(archive: zipfile.ZipFile, name: str, max_bytes: int) -> zipfile.ZipInfo:
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        raise InputError(f"archive member {name!r} is not a plain relative path")
    try:
        info = archive.getinfo(str(path))
    except KeyError:
        raise InputError(f"manifest names {name!r}, which the archive does not hold") from None
    if stat.S_ISLNK(info.external_attr >> 16):
        raise InputError(f"archive member {name!r} is a symbolic link")
    if info.file_size > max_bytes:
        raise InputError(f"archive member {name!r} is larger than the upload limit")
    return info


class _Extractor:
    """Members extracted once each into `workdir`, every use counted against the budget."""

    def __init__(self, archive: zipfile.ZipFile, workdir: Path, max_bytes: int, budget_bytes: int):
        self.archive, self.workdir, self.max_bytes = archive, workdir, max_bytes
        self.budget_left = budget_bytes
        self.done: dict[str, tuple[Path, int] | InputError] = {}

    def member(self, name: str, role: str) -> Path:
        key = f"{role}:{name}"  # a member used as face and as audio is sniffed for each role
        if key not in self.done:
            try:
                self.done[key] = self._extract(name, role, len(self.done))
            except InputError as exc:
                self.done[key] = exc
        found = self.done[key]
        if isinstance(found, InputError):
            raise found
        path, size = found
        if size > self.budget_left:
            raise InputError("the archive's items add up to more than the batch's extracted-size budget "
                             "(LIPSYNC_MAX_ARCHIVE_EXPANDED_MB): split the batch")
        self.budget_left -= size
        return path

    def _extract(self, name: str, role: str, number: int) -> tuple[Path, int]:
        info = _safe_member(self.archive, name, self.max_bytes)
        limit = min(self.max_bytes, self.budget_left)
        if info.file_size > limit:
            raise InputError(f"archive member {name!r} is larger than the batch's remaining extracted-size budget")
        target = self.workdir / f"member{number}_{role}"
        with self.archive.open(info) as src, open(target, "wb") as dst:
            head = src.read(HEAD_BYTES)
            try:
                check_head(head, f"archive member {name!r}", KINDS[role])
            except LipsyncError as exc:
                raise InputError(str(exc)) from None
            dst.write(head)
            written = len(head)
            while chunk := src.read(1 << 20):
                written += len(chunk)
                if written > limit:  # the header lied (a zip bomb): stop at the limit
                    raise InputError(f"archive member {name!r} expands beyond the upload limit")
                dst.write(chunk)
        return target, written


def read_zip_batch(zip_path: Path, workdir: Path, max_bytes: int, budget_bytes: int,
                   before_extracting: Callable[[int], None] = lambda count: None) -> list[ZipItem]:
    """The archive's items, members extracted into `workdir`. `before_extracting(item count)` runs
    once the manifest is read and before any member is extracted (the caller's job limit)."""
    with _open_archive(zip_path) as archive:
        rows = list(_rows(archive))  # at most MAX_ITEMS rows of a capped manifest
        if not rows:
            raise InputError(f"{MANIFEST} needs a header row with face and audio columns and at least one item")
        before_extracting(len(rows))
        extractor = _Extractor(archive, workdir, max_bytes, budget_bytes)
        items = []
        for number, row in enumerate(rows):
            face_name, audio_name = (row.pop("face") or "").strip(), (row.pop("audio") or "").strip()
            name = safe_name((row.pop("name", "") or "").strip() or PurePosixPath(face_name).stem, f"item{number}")
            options = {k: v for k, v in row.items() if k and isinstance(v, str)}
            try:
                face = extractor.member(face_name, "face")
                audio = extractor.member(audio_name, "audio")
                items.append(ZipItem(face, audio, name, options))
            except InputError as exc:
                items.append(ZipItem(None, None, name, options, error=str(exc)))
        return items
