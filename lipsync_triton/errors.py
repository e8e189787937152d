"""The errors users see, by cause: each is one line naming the problem and the fix.

- `LipsyncError` itself: the input or a setting is at fault; trying again will not help (a job
  fails at once, the CLI exits 2, the API answers 4xx).
- `TransientError`: something outside the input failed and may recover (Triton down or restarting):
  a job service retries the job later; the CLI exits 3.
- `Cancelled`: the caller asked to stop; nothing is written (exit 130).
"""


class LipsyncError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits non-zero, no traceback."""

    exit_code = 2


class TransientError(LipsyncError):
    """A failure that a later attempt may not meet: retried by the job service, not the input's fault."""

    exit_code = 3


class ServerUnavailable(TransientError):
    """No Triton server could serve the job (down, restarting, models not loaded) within the retry budget."""


class Cancelled(LipsyncError):
    """The caller cancelled the job (its cancel event was set)."""

    exit_code = 130
