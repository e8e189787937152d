"""A batch as one ZIP: `manifest.csv` (columns `face`, `audio`, optional `name` and option columns)
naming members of the same archive. Members are read one at a time into the request's own
temporary folder; absolute paths, `..`, symlinks, oversized members and missing names are refused
per item (the item fails, the rest run)."""
from __future__ import annotations

import csv
import io
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .jobs import InputError, safe_name

MANIFEST = "manifest.csv"
MAX_ITEMS = 1000


@dataclass
class ZipItem:
    face: Path | None
    audio: Path | None
    name: str
    options: dict = field(default_factory=dict)
    error: str | None = None


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


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, max_bytes: int) -> Path:
    written = 0
    with archive.open(info) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:  # the header lied (a zip bomb): stop at the limit
                raise InputError(f"archive member {info.filename!r} expands beyond the upload limit")
            dst.write(chunk)
    return target


def read_zip_batch(zip_path: Path, workdir: Path, max_bytes: int) -> list[ZipItem]:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError):
        raise InputError("archive is not a readable ZIP file") from None
    with archive:
        try:
            manifest = archive.read(MANIFEST).decode("utf-8-sig")
        except KeyError:
            raise InputError(f"archive has no {MANIFEST} (columns: face, audio, optional name and options)") from None
        except UnicodeDecodeError:
            raise InputError(f"{MANIFEST} is not UTF-8 text") from None
        rows = list(csv.DictReader(io.StringIO(manifest)))
        if not rows or not {"face", "audio"} <= set(rows[0]):
            raise InputError(f"{MANIFEST} needs a header row with face and audio columns and at least one item")
        if len(rows) > MAX_ITEMS:
            raise InputError(f"{MANIFEST} lists {len(rows)} items; the limit is {MAX_ITEMS} per batch")
        items = []
        for number, row in enumerate(rows):
            face_name, audio_name = (row.pop("face") or "").strip(), (row.pop("audio") or "").strip()
            name = safe_name((row.pop("name", "") or "").strip() or PurePosixPath(face_name).stem, f"item{number}")
            options = {k: v for k, v in row.items() if k}
            try:
                face = _extract(archive, _safe_member(archive, face_name, max_bytes), workdir / f"{number}_face", max_bytes)
                audio = _extract(archive, _safe_member(archive, audio_name, max_bytes), workdir / f"{number}_audio", max_bytes)
                items.append(ZipItem(face, audio, name, options))
            except InputError as exc:
                items.append(ZipItem(None, None, name, options, error=str(exc)))
        return items
