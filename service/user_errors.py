"""Errors as a tenant reads them: the worker's temporary files named as the inputs the tenant sent
(never a server path), and job options where the client's message names a CLI flag."""
from __future__ import annotations

import re
from pathlib import Path

from lipsync_triton.client.options import job_options


def user_facing(message: str, work: Path, presenter: str = "") -> str:
    """A job error as its tenant may read it: the worker's files named as the inputs the tenant
    sent (never a server path), and job options where the client's message names a CLI flag."""
    for name, what in (("face", f"the presenter {presenter}".rstrip() if presenter else "the presenter"),
                       ("audio", "the speech"), ("result.mp4", "the result")):
        message = message.replace(str(work / name), what)
    message = message.replace(str(work), "the job's folder")
    message = message.replace("or pass --box", "or give a fixed face box (option box)")
    for d in sorted(job_options(), key=lambda d: -len(d.cli_flag)):  # --face-select before a shorter prefix
        message = re.sub(re.escape(d.cli_flag) + r"\b", f"option {d.name}", message)
    return message
