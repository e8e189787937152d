"""Logs go through the standard `logging` module: a program using the Python API routes or silences
them as usual; the CLI and the service print logfmt or JSON lines on stdout."""
from __future__ import annotations

import json
import logging
import subprocess
import sys

from lipsync_triton import log


def test_a_library_user_receives_events_as_log_records_with_their_fields(caplog):
    with caplog.at_level(logging.INFO, logger="lipsync_triton"):
        log.event("job_started", job="abc", frames=12)
        log.warn("random weights in use", seed=0)
    started, warned = caplog.records[-2:]
    assert started.event == "job_started" and started.fields == {"job": "abc", "frames": 12}
    assert warned.levelno == logging.WARNING and warned.getMessage() == "random weights in use"


def test_a_library_user_can_silence_them():
    code = ("import logging; from lipsync_triton import log; logging.getLogger('lipsync_triton').setLevel(logging.ERROR); "
            "log.configure('logfmt'); logging.getLogger('lipsync_triton').setLevel(logging.ERROR); log.event('x'); log.warn('y')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "" and done.stderr == ""


def test_formats_keep_the_cli_and_service_lines(capsys):
    log.configure("logfmt")
    log.event("generated", frames=3, outfile="a b.mp4")
    log.configure("json")
    log.event("job_succeeded", job="j1", seconds=1.5)
    logger = logging.getLogger("lipsync_triton")
    logger.handlers.clear()
    logger.propagate = True
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith('event=generated frames=3 outfile="a b.mp4"') and out[0].startswith("ts=")
    record = json.loads(out[1])
    assert record["event"] == "job_succeeded" and record["job"] == "j1" and record["seconds"] == 1.5
