"""The options of a lip-sync job, declared once: `GenerateOptions`.

Each field that users set is declared with `option(default, help, bounds...)`; from that one
declaration come the CLI flags (lipsync_triton/cli.py), the job service's model and REST form
fields (service/job_options.py, service/api.py), the web UI's controls (service/ui.py), the batch
manifest's columns and the checks in `validate`. `job=True` marks what a job may set through the
service; the others tune the client (batch sizes, cache, requests in flight) on the CLI and in the
Python API only. Adding an option is one line here (plus the code that uses it).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lipsync_triton.errors import OptionError
from lipsync_triton.preprocessing.media_input import MediaLimits
from .mp4_writer import DEFAULT_X264_PARAMS

Quad = tuple[int, int, int, int]
MAX_PAD_PX = 1000  # the bound checked up front; at run time each pad is bounded by the face box (preprocessing/faces.py)
QUAD_PARTS = ("TOP", "BOTTOM", "LEFT", "RIGHT")


@dataclass(frozen=True)
class Option:
    """What an interface needs to offer one field: its help, bounds and where it is offered."""

    help: str
    job: bool = False  # settable per job through the service (API, UI, manifest), not only on the CLI
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    max_length: int | None = None
    flag: str | None = None  # the CLI flag when it is not --NAME (a bool defaulting to True: its --no-... form)
    metavar: str | None = None


def option(default: Any, help: str, **spec: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, **spec)})


@dataclass
class GenerateOptions:
    """Everything one job can be told: the reference inference.py options (same meanings) and ours."""

    pads: Quad = option((0, 10, 0, 0), "pixels added to the face box: top bottom left right (the reference's pads); each "
                                       "from minus half to plus the face box's size on that side", job=True,
                        ge=-MAX_PAD_PX, le=MAX_PAD_PX)
    resize_factor: int = option(1, "divide the frame resolution by this factor", job=True, ge=1, le=8)
    crop: Quad = option((0, -1, 0, -1), "crop the frames first: top bottom left right; -1 = frame edge", job=True)
    box: Quad | None = option(None, "fixed face box top bottom left right; skips detection", job=True)
    rotate: bool = option(False, "rotate frames 90 degrees clockwise", job=True)
    nosmooth: bool = option(False, "do not smooth face boxes over time", job=True)
    static: bool = option(False, "use only the first video frame", job=True)
    fps: float = option(25.0, "output frames per second for a still image", job=True, gt=0, le=120)
    face_select: str = option("largest", "'largest', 'index:N' (0 = leftmost) or 'point:X,Y'", job=True, max_length=40)
    hard_paste: bool = option(False, "paste the whole box as the reference does (no blending)", job=True)
    detect_every: int = option(2, "detect faces on every K-th frame and interpolate between (1 = every frame, as the reference)",
                               job=True, ge=1, le=10, metavar="K")
    keyframe_every: int = option(8, "detect every N-th frame first and the K-th frames between only where the face moved "
                                    "(0 = off)", job=True, ge=0, le=64, metavar="N")
    face_det_batch_size: int = option(8, "face detector frames per request", ge=1, le=256)
    wav2lip_batch_size: int = option(16, "Wav2Lip frames per request", ge=1, le=256)
    in_flight: int = option(4, "requests in flight per model", ge=1, le=64)
    use_cache: bool = option(True, "do not read or write the presenter cache", flag="--no-cache")
    cache_dir: Path | None = option(None, "presenter cache folder (default ~/.cache/lipsync-triton/presenters)")
    cache_whole_video: bool = option(False, "detect faces on every presenter frame, not only those this speech uses, "
                                            "so any later speech hits the cache")
    # Set by programs (the job worker, benchmarks), not offered as flags:
    retry_seconds: float = 120.0  # how long a request retries servers that are down, counted from the last answer
    server_wait_s: float = 0.0  # how long the start waits for a server that is down or loading its models (0: fail at once)
    request_timeout: float = 120.0  # one request's deadline (then it counts as a transient error)
    crf: int = 18
    preset: str = "veryfast"
    x264_params: str = DEFAULT_X264_PARAMS
    limits: MediaLimits = field(default_factory=MediaLimits.from_env)  # what the input files may declare
    traceparent: str | None = None  # W3C trace context sent to Triton with every request (lipsync_triton.tracing)


@dataclass(frozen=True)
class Declared:
    """One declared option: its field name, type, default and Option."""

    name: str
    type: Any
    default: Any
    spec: Option

    @property
    def cli_flag(self) -> str:
        """The CLI flag: --NAME with dashes, or the declared one."""
        return self.spec.flag or "--" + self.name.replace("_", "-")


def declared() -> list[Declared]:
    """Every declared option, in declaration order."""
    hints = typing.get_type_hints(GenerateOptions)
    return [Declared(f.name, hints[f.name], f.default, f.metadata["option"])
            for f in dataclasses.fields(GenerateOptions) if "option" in f.metadata]


def job_options() -> list[Declared]:
    """The options a job may set through the service."""
    return [d for d in declared() if d.spec.job]


def bound_error(spec: Option, value: Any) -> str | None:
    """Why `value` is outside the option's bounds (each element of a quad), or None."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return next((f"each value {error}" for error in map(lambda v: bound_error(spec, v), value) if error), None)
    if spec.max_length is not None and len(str(value)) > spec.max_length:
        return f"at most {spec.max_length} characters"
    for limit, ok, words in ((spec.ge, lambda v, b: v >= b, ">="), (spec.gt, lambda v, b: v > b, ">"),
                             (spec.le, lambda v, b: v <= b, "<=")):
        if limit is not None and not ok(value, limit):
            return f"must be {words} {limit:g}, got {value}"
    return None


def validate(opts: GenerateOptions) -> None:
    """One-line errors for values outside the declared bounds (the same bounds every interface applies)."""
    for d in declared():
        error = bound_error(d.spec, getattr(opts, d.name))
        if error:
            raise OptionError(d.name, error)


def flag_of(name: str) -> str:
    """The CLI flag of a declared option (what the CLI names in its errors)."""
    return next((d.cli_flag for d in declared() if d.name == name), "--" + name.replace("_", "-"))
