"""A cheap first look at an upload: which of the accepted containers its first bytes announce.

The API answers at once with this (microseconds, no process): plain garbage, text, a playlist or a
script gets its 4xx before anything is stored; the worker then probes and decodes the file as
what it is (media_probe, media_input's whitelists), and a file that only looks right fails its
job with one line. Each signature below belongs to one of media_input.SUPPORTED_DEMUXERS.
"""
from __future__ import annotations

from pathlib import Path

from lipsync_triton.errors import LipsyncError
from .media_input import REFERRING_MEDIA, SUPPORTED_DEMUXERS

VIDEO, AUDIO, IMAGE = "video", "audio", "image"
HEAD_BYTES = 400  # enough for an MPEG-TS packet and a half
# Text that names other files: HLS, DASH, ffconcat, SMIL/XSPF-like XML, a bare file list.
REFERRING_STARTS = (b"#EXTM3U", b"#EXT", b"ffconcat", b"<?xml", b"<MPD", b"<smil", b"file ", b"file'")


def _signature(head: bytes) -> tuple[str, str] | None:
    """(demuxer, kind) from the first bytes, or None."""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mov", VIDEO  # also m4a speech: the worker finds out which streams it holds
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska", VIDEO
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"WAVE", b"WEBP"):
        return {b"AVI ": ("avi", VIDEO), b"WAVE": ("wav", AUDIO), b"WEBP": ("webp_pipe", IMAGE)}[head[8:12]]
    if head.startswith(b"riff\x2e\x91\xcf\x11"):
        return "w64", AUDIO
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff", AUDIO
    for magic, found in ((b"caff", ("caf", AUDIO)), (b"fLaC", ("flac", AUDIO)), (b"OggS", ("ogg", AUDIO)),
                         (b"ID3", ("mp3", AUDIO)), (b"FLV\x01", ("flv", VIDEO)), (b"GIF87a", ("gif", IMAGE)),
                         (b"GIF89a", ("gif", IMAGE)), (b"\x89PNG\r\n\x1a\n", ("png_pipe", IMAGE)),
                         (b"\xff\xd8\xff", ("jpeg_pipe", IMAGE)), (b"II*\x00", ("tiff_pipe", IMAGE)),
                         (b"MM\x00*", ("tiff_pipe", IMAGE)), (b"BM", ("bmp_pipe", IMAGE))):
        if head.startswith(magic):
            return found
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts", VIDEO
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return ("aac", AUDIO) if head[1] & 0x06 == 0 else ("mp3", AUDIO)  # ADTS (layer 0) or an MPEG audio frame
    return None


assert {d for d in ("mov", "matroska", "avi", "wav", "w64", "aiff", "caf", "flac", "ogg", "mp3", "aac", "flv", "gif",
                    "png_pipe", "jpeg_pipe", "tiff_pipe", "bmp_pipe", "webp_pipe", "mpegts")} <= set(SUPPORTED_DEMUXERS)


def sniff(path: str | Path) -> tuple[str, str] | None:
    with open(path, "rb") as fh:
        return _signature(fh.read(HEAD_BYTES))


def check_upload(path: str | Path, what: str, kinds: tuple[str, ...]) -> None:
    """A one-line LipsyncError unless the file starts like an accepted container of these kinds."""
    with open(path, "rb") as fh:
        check_head(fh.read(HEAD_BYTES), what, kinds)


def check_head(head: bytes, what: str, kinds: tuple[str, ...]) -> None:
    """`check_upload` on a file's first HEAD_BYTES (a ZIP member is judged before it is extracted)."""
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(REFERRING_STARTS):
        raise LipsyncError(f"{what}: {REFERRING_MEDIA}")
    found = _signature(head)
    if found is None:
        raise LipsyncError(f"{what} is not a video, photo or audio file this service reads (mp4/mov/webm/mkv/avi/ts/flv, "
                           "jpg/png/webp/bmp/tiff/gif, wav/mp3/aac/m4a/flac/ogg/aiff/caf); a playlist, script or text is not accepted")
    if found[1] not in kinds:
        raise LipsyncError(f"{what} is {'a photo' if found[1] == IMAGE else 'audio only'} ({found[0]}); "
                           f"upload {'a speech track' if AUDIO in kinds else 'a presenter video or photo'}")
