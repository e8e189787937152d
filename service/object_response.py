"""A stored object as an HTTP response, streamed from object storage in chunks: whole, or the one
byte range a player or download manager asks for (206), never copied to the API's disk."""
from __future__ import annotations

import re
from typing import Iterator
from urllib.parse import quote

from starlette.responses import Response, StreamingResponse

from .storage import Storage

CHUNK_BYTES = 1 << 20


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) of a single `bytes=` range within `size`, None for the whole object; raises
    ValueError for a range that cannot be served (416)."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        return None  # several ranges or another unit: the whole object, as RFC 9110 allows
    first, last = match.groups()
    if first == "":  # the last N bytes
        first, last = max(0, size - int(last)), size - 1
    else:
        first, last = int(first), min(int(last) if last else size - 1, size - 1)
    if first >= size or first > last:
        raise ValueError
    return first, last


def _chunks(storage: Storage, key: str, first: int, length: int) -> Iterator[bytes]:
    with storage.open(key) as handle:
        handle.seek(first)
        left = length
        while left > 0:
            chunk = handle.read(min(CHUNK_BYTES, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def stream_object(storage: Storage, key: str, size: int, range_header: str | None, media_type: str, filename: str,
                  head: bool = False) -> Response:
    headers = {"accept-ranges": "bytes", "content-disposition": f"attachment; filename*=utf-8''{quote(filename)}"}
    try:
        wanted = _range(range_header, size)
    except ValueError:
        return Response(status_code=416, headers={**headers, "content-range": f"bytes */{size}"})
    first, last = wanted or (0, size - 1)
    length = max(0, last - first + 1)
    headers["content-length"] = str(length)
    status = 200
    if wanted is not None:
        status, headers["content-range"] = 206, f"bytes {first}-{last}/{size}"
    if head:
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(_chunks(storage, key, first, length), status_code=status, headers=headers, media_type=media_type)
