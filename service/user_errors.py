"""Errors as a tenant reads them, decided in one place: `tenant_message`.

A tenant never sees a server path or an internal address: the worker's temporary files are named
as the inputs the tenant sent, a dependency that is down is named by what it is (never its URL), and
job options replace the CLI flags the client's messages name."""
from __future__ import annotations

import re
from pathlib import Path

from lipsync_triton.client.options import job_options
from lipsync_triton.errors import LipsyncError, ModelChanged, ServerUnavailable, Unavailable, first_line

_ADDRESS = re.compile(r"\b(?:dns://)?(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{2,5}\b")


# What a "no face" hint offers, where the tenant is: a job takes a `box` option; a presenter's
# registration and a live session take none (a clip with a visible face is the only way); a
# manifest row takes a `box` column.
BOX_HINTS = {"job": "or give a fixed face box (option box)", "presenter": "", "live": "",
             "manifest": "or give a fixed face box (a box column: TOP BOTTOM LEFT RIGHT)"}
CLI_BOX_HINT = "or pass --box"


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
    return user_facing(first_line(exc, 500), work, presenter, where)


def user_facing(message: str, work: Path | None = None, presenter: str = "", where: str = "job") -> str:
    """A message as its tenant may read it: the worker's files named as the inputs the tenant sent
    (never a server path), no host:port, and job options where the client's message names a CLI flag."""
    if work is not None:
        for name, what in (("face", f"the presenter {presenter}".rstrip() if presenter else "the presenter"),
                           ("audio", "the speech"), ("result.mp4", "the result")):
            message = message.replace(str(work / name), what)
        message = message.replace(str(work), "the job's folder")
    message = _ADDRESS.sub("a server", message)
    hint = BOX_HINTS[where]
    message = message.replace(f" {CLI_BOX_HINT}", f" {hint}" if hint else "")
    for d in sorted(job_options(), key=lambda d: -len(d.cli_flag)):  # --face-select before a shorter prefix
        message = re.sub(re.escape(d.cli_flag) + r"\b", f"option {d.name}", message)
    return message
