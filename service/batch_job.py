"""`lipsync batch`: a manifest to completion, then exit (a cloud "batch inference job").

The manifest is a CSV with `face` and `audio` columns (paths relative to the manifest, or fsspec
URLs such as s3://), an optional `name` and option columns by the CLI's names. Results go to
OUT (a folder or an s3:// URL) as `<name>.mp4`, with one status file per item in OUT/status/
written atomically. Items are known by their content, not their row: the status file is named by
a digest of the item's name, its inputs' contents (sha256 of local files; the store's checksum,
e.g. the S3 ETag, of URLs) and its options. A re-run skips items whose status says succeeded and
whose result exists, so a crashed or killed run resumes where it stopped; a row inserted anywhere
is made, and an item whose speech, presenter or options changed is made again. Exit status 0
only when every item succeeded."""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import fsspec

from lipsync_triton import log
from lipsync_triton.client.generate import GenerateOptions, generate
from lipsync_triton.client.triton_client import Cancelled
from lipsync_triton.errors import LipsyncError, NoFaceFound
from lipsync_triton.files import file_sha256
from .job_options import JobOptions
from .jobs import display_name, result_names
from .storage import Storage
from .user_errors import BOX_HINTS


@dataclass
class Item:
    number: int
    name: str
    face: str
    audio: str
    options: dict = field(default_factory=dict)


def read_manifest(manifest: Path) -> list[Item]:
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LipsyncError(f"cannot read manifest {manifest}: {exc}; pass a UTF-8 CSV with face,audio columns") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or not {"face", "audio"} <= set(rows[0]):
        raise LipsyncError(f"{manifest} needs a header with face and audio columns and at least one row")
    items = []
    for number, row in enumerate(rows):
        face, audio = (row.pop("face") or "").strip(), (row.pop("audio") or "").strip()
        name = display_name(row.pop("name", "") or face, f"item{number}")
        items.append(Item(number, name, face, audio, {k: v for k, v in row.items() if k and v not in (None, "")}))
    # result names must not collide: the service's rule (its batch archives name results the same way)
    for item, unique in zip(items, result_names([(item.number, item.name) for item in items], suffix="")):
        item.name = unique
    return items


def _resolve(ref: str, base: Path) -> str:
    return ref if "://" in ref else str((base / ref).resolve())


class BatchRun:
    def __init__(self, manifest: Path, out: str, urls: list[str], concurrency: int = 2, s3_endpoint_url: str = "",
                 cancel: threading.Event | None = None):
        self.items = read_manifest(manifest)
        self.base = manifest.parent
        self.out = Storage(out, s3_endpoint_url)
        self.urls = urls
        self.concurrency = max(1, concurrency)
        self.cancel = cancel or threading.Event()
        self.s3_endpoint_url = s3_endpoint_url
        self._keys: dict[int, str] = {}

    def _fs_options(self, url: str) -> dict:
        """fsspec options for an input URL: the S3-compatible endpoint for s3:// ones."""
        return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}} if url.startswith("s3://") and self.s3_endpoint_url else {}

    def _input_identity(self, ref: str) -> str:
        """What an input is: the sha256 of a local file, the store's checksum (S3: the ETag) of a URL."""
        url = _resolve(ref, self.base)
        try:
            if "://" not in url:
                return file_sha256(url)
            options = self._fs_options(url)
            fs, path = fsspec.core.url_to_fs(url, **options)
            return f"{fs.protocol}:{fs.checksum(path)}"
        except (OSError, ValueError):
            return f"missing:{ref}"  # fails when run, with the input named

    def item_key(self, item: Item) -> str:
        """The item's identity: name, both inputs' contents and its options (not its row number)."""
        if item.number not in self._keys:
            parts = [item.name, self._input_identity(item.face), self._input_identity(item.audio),
                     json.dumps(item.options, sort_keys=True)]
            self._keys[item.number] = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]
        return self._keys[item.number]

    def _status_key(self, item: Item) -> str:
        return f"status/{self.item_key(item)}.json"

    def _done(self, item: Item) -> bool:
        try:
            with self.out.open(self._status_key(item)) as fh:
                status = json.load(fh)
        except (OSError, ValueError):
            return False
        return status.get("status") == "succeeded" and self.out.exists(status.get("result", ""))

    def _write_status(self, item: Item, work: Path, **fields) -> None:
        record = {"item": item.number, "key": self.item_key(item), "name": item.name, "face": item.face, "audio": item.audio,
                  "options": item.options, **fields}
        path = work / "status.json"
        path.write_text(json.dumps(record, indent=1) + "\n")
        self.out.put_file(path, self._status_key(item))

    def _fetch(self, ref: str, target: Path) -> Path:
        url = _resolve(ref, self.base)
        options = self._fs_options(url)
        try:
            with fsspec.open(url, "rb", **options) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        except FileNotFoundError:
            raise LipsyncError(f"input {ref} does not exist") from None
        return target

    def run_item(self, item: Item) -> str:
        """The item's outcome: succeeded, failed or cancelled (a cancelled item has no status file:
        the next run makes it)."""
        if self.cancel.is_set():
            return "cancelled"
        work = Path(tempfile.mkdtemp(prefix=f"lipsync-batch-{item.number}-"))
        try:
            try:
                options = GenerateOptions(**JobOptions.parse(item.options).generate_kwargs())
                face, audio = self._fetch(item.face, work / "face"), self._fetch(item.audio, work / "audio")
                result = generate(face, audio, work / "result.mp4", self.urls, options, cancel=self.cancel)
                key = f"{item.name}.mp4"
                self.out.put_file(work / "result.mp4", key)
                self._write_status(item, work, status="succeeded", result=key, frames=result.frames, seconds=result.seconds)
                log.event("batch_item", item=item.number, item_name=item.name, status="succeeded", frames=result.frames)
                return "succeeded"
            except Cancelled:
                log.event("batch_item", item=item.number, item_name=item.name, status="cancelled")
                return "cancelled"
            except Exception as exc:  # this item fails alone (bad input, storage error, a bug)
                message = str(exc).splitlines()[0] if isinstance(exc, LipsyncError) else f"{type(exc).__name__}: {exc}"
                # name the user's inputs, not this run's temporary copies
                message = message.replace(str(work / "face"), item.face).replace(str(work / "audio"), item.audio)
                if isinstance(exc, NoFaceFound):  # what a manifest offers: a box column
                    message = str(NoFaceFound(item.face, BOX_HINTS["manifest"]))
                self._write_status(item, work, status="failed", error=message)
                log.event("batch_item", item=item.number, item_name=item.name, status="failed", error=message)
                return "failed"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(self) -> dict:
        todo = [item for item in self.items if not self._done(item)]
        skipped = len(self.items) - len(todo)
        log.event("batch_started", items=len(self.items), skipped=skipped, concurrency=self.concurrency)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="batch") as pool:
            outcomes = list(pool.map(self.run_item, todo))
        summary = {"items": len(self.items), "skipped": skipped, "succeeded": skipped + outcomes.count("succeeded"),
                   "failed": outcomes.count("failed"), "cancelled": outcomes.count("cancelled")}
        log.event("batch_finished", **summary)
        return summary
