"""The one exception type users see: a one-line message naming the problem and the fix."""


class LipsyncError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits non-zero, no traceback."""

    exit_code = 2
