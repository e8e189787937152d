"""Presenter video or photo -> a stream of BGR frames (constant memory), with the reference's
resize/crop/rotate options applied to every frame."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from lipsync_triton.errors import LipsyncError, OptionError
from . import i420
from .ffmpeg_pipe import FfmpegProcess
from .media_input import MediaLimits, input_args
from .media_probe import MediaInfo, check_length, probe_media


@dataclass(frozen=True)
class FrameTransform:
    """Reference options: resize_factor (divide resolution), crop [top, bottom, left, right] (-1 = edge), rotate 90° clockwise."""

    resize_factor: int = 1
    crop: tuple[int, int, int, int] = (0, -1, 0, -1)
    rotate: bool = False

    def apply(self, frame: np.ndarray) -> np.ndarray:
        if self.resize_factor > 1:
            frame = cv2.resize(frame, (frame.shape[1] // self.resize_factor, frame.shape[0] // self.resize_factor))
        if self.rotate:
            frame = cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE)
        y1, y2, x1, x2 = self.crop
        if (y1, y2, x1, x2) != (0, -1, 0, -1):
            y2 = frame.shape[0] if y2 == -1 else y2
            x2 = frame.shape[1] if x2 == -1 else x2
            frame = frame[y1:y2, x1:x2]
            if frame.size == 0:
                raise OptionError("crop", f"{self.crop} leaves an empty frame; check the crop against the frame size")
        return np.ascontiguousarray(frame)

    @property
    def is_noop(self) -> bool:
        return self.resize_factor <= 1 and not self.rotate and tuple(self.crop) == (0, -1, 0, -1)

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        probe = np.zeros((height, width, 1), np.uint8)
        out = self.apply(probe)
        return out.shape[1], out.shape[0]


class FrameSource:
    """Decodes frames one at a time through an ffmpeg pipe; never holds the whole video.

    Frames are upright, as a player shows them: ffmpeg applies a video's display-matrix rotation
    and OpenCV a photo's EXIF orientation, and `width`/`height` are the displayed size. A still
    image (or `static=True`) yields its single frame; `frames()` can be iterated again (the video
    is decoded again), which is how looping over a short video works.

    Frames are BGR [H, W, 3] (`pix_fmt="bgr24"`) or I420 [H*3/2, W] (`"yuv420p"`, see `i420`: what
    the generation pipeline uses; an odd size is padded to even, and `width`/`height` say so).
    """

    def __init__(self, path: str | Path, transform: FrameTransform = FrameTransform(), static: bool = False, fps: float = 25.0,
                 pix_fmt: str = "bgr24", limits: MediaLimits = MediaLimits()):
        i420.check_pix_fmt(pix_fmt)
        self.path = Path(path)
        self.pix_fmt = pix_fmt
        self.info: MediaInfo = probe_media(self.path)
        if not self.info.has_video or self.info.width <= 0:
            raise LipsyncError(f"{self.path} has no video or image stream; pass a presenter video or a photo")
        # What the headers declare is checked before a frame is decoded at that size or rate.
        limits.check_frame(str(self.path), self.info.width, self.info.height)
        self.transform = transform
        self.still = self.info.is_image or static
        self.fps = fps if self.info.is_image or not self.info.fps else self.info.fps
        self._limits, self._max_frames = limits, None
        if not self.info.is_image:
            limits.check_fps(str(self.path), self.fps)
            check_length(self.info, limits, str(self.path))
            if limits.max_seconds is not None:  # a header can lie: the length is also checked while decoding
                self._max_frames = int(limits.max_seconds * self.fps) + int(self.fps) + 1
        self._native_i420 = False  # decided below, once the output size is known
        self._still_frame: np.ndarray | None = self._read_still() if self.still else None
        if self._still_frame is not None:
            shape = self._still_frame.shape
            self.width, self.height = i420.frame_size(self._still_frame) if pix_fmt == "yuv420p" else (shape[1], shape[0])
            return
        self.width, self.height = transform.output_size(self.info.width, self.info.height)
        if pix_fmt == "yuv420p":
            self.width, self.height = self.width + self.width % 2, self.height + self.height % 2
            # I420 straight from the decoder when nothing is to be transformed (the usual case);
            # otherwise the transform works on BGR and the result is converted.
            self._native_i420 = transform.is_noop and (self.width, self.height) == (self.info.width, self.info.height)

    def frames(self, ring: int = 0, limit: int | None = None) -> Iterator[np.ndarray]:
        """Decoded frames in order (at most `limit`). With `ring` > 0 frames are decoded into `ring`
        reused, writable buffers (no allocation per frame): a frame stays valid until `ring` more
        have been yielded. A video that ends before the frame count its stream declares raises."""
        if self.still:
            yield self._still_frame
            return
        yield from self._decode(limit=limit, ring=ring)

    def _read_still(self) -> np.ndarray:
        if self.info.is_image:
            # IMREAD_COLOR applies the EXIF orientation, as a photo viewer does.
            image = cv2.imread(str(self.path), cv2.IMREAD_COLOR)
            if image is not None:
                return self._output(self.transform.apply(image))
        for frame in self._decode(limit=1):
            return frame.copy()
        raise LipsyncError(f"{self.path} holds no decodable frame; pass a valid image or video")

    def _decode(self, limit: int | None = None, ring: int = 0) -> Iterator[np.ndarray]:
        w, h = self.info.width, self.info.height
        args = [*input_args(self.path), "-map", "0:v:0"]
        if limit:
            args += ["-frames:v", str(limit)]
        # Keep every source frame (no fps conversion): frame i of the output is frame i of the input.
        native = self._native_i420
        args += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p" if native else "bgr24", "-"]
        shape = (i420.i420_height(h), w) if native else (h, w, 3)
        frame_bytes = int(np.prod(shape))
        buffers = [np.empty(shape, np.uint8) for _ in range(ring)]
        count = 0
        with FfmpegProcess(args, read=True, bufsize=frame_bytes) as reader:
            while True:
                frame = buffers[count % ring] if ring else np.empty(shape, np.uint8)
                if reader.readinto(memoryview(frame).cast("B")) < frame_bytes:
                    break
                count += 1
                self._check_decoded(count)
                yield frame if native else self._output(self.transform.apply(frame))
            status = reader.finish()
            if limit and count >= limit:
                return
            self._check_complete(count, status, reader.reason())

    @property
    def plain_video(self) -> bool:
        """A video whose frames need no transform: ffmpeg can scale and sample them itself."""
        return not self.still and self.transform.is_noop

    def sampled_frames(self, scaled: tuple[int, int], padded: tuple[int, int], step: int,
                       limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(index, BGR image) of frames 0, step, 2*step, ... and the last one (within `limit`), each
        scaled to `scaled` (w, h) and padded right and bottom with black to `padded` (w, h).

        For the face detector: ffmpeg scales, converts and pipes only the frames asked for (the
        video is still decoded whole). Needs `plain_video`. Frames past a truncation are simply
        missing here; the generation decode reports the truncation."""
        if not self.plain_video:
            raise ValueError("sampled_frames needs a video without resize, crop or rotate options")
        total = min(limit, self.info.frames) if limit and self.info.frames else (limit or self.info.frames or None)
        wanted = list(range(0, total, step)) if total else None
        select = f"not(mod(n\\,{step}))"
        if total:
            if (total - 1) % step:
                wanted.append(total - 1)
                select += f"+eq(n\\,{total - 1})"
            select = f"({select})*lt(n\\,{total})"
        (sw, sh), (pw, ph) = scaled, padded
        flags = "area" if sw < self.info.width else "bilinear"
        # The detector sees a reduced picture: skipping the decoder's deblocking filter saves about a
        # quarter of this decode and moves boxes by a fraction of a pixel on average (BENCHMARKS.md).
        args = ["-skip_loop_filter", "all", *input_args(self.path), "-map", "0:v:0",
                "-vf", f"select={select},scale={sw}:{sh}:flags={flags},pad={pw}:{ph}:0:0:black", "-fps_mode", "passthrough",
                *(["-frames:v", str(len(wanted))] if wanted else []), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"]
        with FfmpegProcess(args, read=True, bufsize=pw * ph * 3) as reader:
            for count in itertools.count():  # -frames:v stops ffmpeg after the last wanted frame
                image = np.empty((ph, pw, 3), np.uint8)
                if reader.readinto(memoryview(image).cast("B")) < image.nbytes:
                    break
                index = wanted[count] if wanted is not None else count * step
                self._check_decoded(index + 1)
                yield index, image
            if reader.finish() != 0 and count == 0:
                raise self._no_frame_error(reader.reason())

    def _check_decoded(self, frames: int) -> None:
        """MediaTooLong once more frames than the length limit allows have been decoded (whatever the
        header said): a video that states 1 s and holds an hour stops here, not at its end."""
        if self._max_frames is not None and frames > self._max_frames:
            self._limits.check_seconds(f"{self.path} (more than its header states)", frames / self.fps)

    def _output(self, bgr: np.ndarray) -> np.ndarray:
        return i420.from_bgr(bgr) if self.pix_fmt == "yuv420p" else bgr

    def _no_frame_error(self, reason: str) -> LipsyncError:
        return LipsyncError(f"{self.path} holds no decodable video frame ({reason}); the file is truncated or "
                            "corrupt: re-export the video")

    def _check_complete(self, count: int, status: int, reason: str) -> None:
        expected = self.info.frames
        if count == 0:
            raise self._no_frame_error(reason)
        # One frame of slack: some muxers count a frame that an edit list hides.
        if expected and count < expected - (0 if status else 1):
            raise LipsyncError(f"{self.path}: video ends after {count} of {expected} frames: {reason} "
                               "(truncated or damaged file); re-export or re-download the video")
        if status != 0:
            raise LipsyncError(f"{self.path}: decoding stopped after {count} frames: {reason}; re-export the video")

    def looped(self, n_frames: int, ring: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(source index, frame) for n_frames output frames: frame i uses source frame i mod N.

        Frames are writable when `ring` > 0 (see `frames`); a still image yields fresh copies."""
        if self.still:  # decoded once; every output frame starts from the same picture
            for _ in range(n_frames):
                yield 0, self._still_frame.copy()
            return
        produced = 0
        while produced < n_frames:
            for index, frame in enumerate(self.frames(ring=ring, limit=n_frames - produced)):
                yield index, frame
                produced += 1
