"""Errors as a tenant reads them, decided in one place: `tenant_message`.

A tenant never sees a server path or an internal address: the worker's temporary files are named
as the inputs the tenant sent, and a dependency that is down is named by what it is (never its
URL). Options are named by the errors themselves (`OptionError` says `option NAME`; the CLI shows
the flag), and a missing face's hint is chosen by where the tenant is (`NoFaceFound.hint`)."""
from __future__ import annotations

import re
from pathlib import Path

from lipsync_triton.errors import LipsyncError, ModelChanged, NoFaceFound, ServerUnavailable, Unavailable, first_line

_ADDRESS = re.compile(r"\b(?:dns://)?(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{2,5}\b")


# What a "no face" hint offers, where the tenant is: a job takes a `box` option; a presenter's
# registration and a live session take none (a clip with a visible face is the only way); a
# manifest row takes a `box` column.
BOX_HINTS = {"job": "give a fixed face box (option box)", "presenter": "", "live": "",
             "manifest": "give a fixed face box (a box column: TOP BOTTOM LEFT RIGHT)"}


def tenant_message(exc: BaseException, work: Path | None = None, presenter: str = "", outage_s: float | None = None,
                   where: str = "job") -> str:
    """The one line a tenant reads for `exc` (API detail, job error, UI message); `where` the
    tenant is (job, presenter, live, manifest) decides what a hint offers."""
    if isinstance(exc, ServerUnavailable):
        waited = f" for {outage_s / 60:.0f} min" if outage_s else ""
        return f"the lip-sync model servers were unavailable{waited}; submit the job again later (the operator's log has details)"
    if isinstance(exc, ModelChanged):
        return "the lip-sync model changed on the servers during the job (a model update); it runs again"
    if isinstance(exc, Unavailable):
        return "a service the job needs (storage, database or model servers) is unavailable; try again later"
    if not isinstance(exc, LipsyncError):
        return "internal error; the operator's log has the details"
    if isinstance(exc, NoFaceFound):
        exc = NoFaceFound(exc.source, BOX_HINTS[where])
    return user_facing(first_line(exc, 500), work, presenter)


def reworded(exc: LipsyncError, message: str) -> LipsyncError:
    """`exc`'s cause (so its HTTP status) with another message: its own class, or the nearest one
    above it that takes just a message (OptionError and NoFaceFound carry fields)."""
    cls = next(c for c in type(exc).__mro__ if "__init__" not in c.__dict__ or c is LipsyncError)
    return cls(message)


def user_facing(message: str, work: Path | None = None, presenter: str = "") -> str:
    """A message as its tenant may read it: the worker's files named as the inputs the tenant sent
    (never a server path), and no host:port."""
    if work is not None:
        for name, what in (("face", f"the presenter {presenter}".rstrip() if presenter else "the presenter"),
                           ("audio", "the speech"), ("result.mp4", "the result")):
            message = message.replace(str(work / name), what)
        message = message.replace(str(work), "the job's folder")
    return _ADDRESS.sub("a server", message)
