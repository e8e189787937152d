"""The errors users see, by cause: each is one line naming the problem and the fix.

A cause is a class; what it means to a caller is decided here, once: `HTTP_STATUS` (the job
service's answer) and `EXIT_CODE` (the CLI's status), both looked up along the class's MRO.

- `LipsyncError` itself (and `InputError`): the input or a setting is at fault; trying again will
  not help (a job fails at once, the CLI exits 2, the API answers 422).
- `LimitExceeded` (429; `TooLarge` 413), `NotFound` (404), `Forbidden` (403), `Conflict` (409;
  `Gone` 410): a request refused for what it asks, not for its content.
- `Unavailable` (alias `TransientError`): something outside the input failed and may recover
  (Triton down, restarting or loading its models; storage or the database unreachable). The job
  service waits or retries and never counts it against the job; the API answers 503, the CLI exits 3.
- `Cancelled`: the caller asked to stop; nothing is written (exit 130).
"""
from __future__ import annotations


class LipsyncError(Exception):
    """A user-facing error. The CLI prints `error: <message>` and exits non-zero, no traceback."""

    @property
    def exit_code(self) -> int:
        return exit_code(self)


class InputError(LipsyncError):
    """The request's content is at fault (a bad file, option or field)."""


class OptionError(InputError):
    """A job option outside its bounds. `option` is the declared name: the CLI shows its flag
    (--resize-factor), the service and the UI its name (resize_factor), each without rewording."""

    def __init__(self, option: str, detail: str):
        super().__init__(f"option {option}: {detail}")
        self.option, self.detail = option, detail


class NoFaceFound(InputError):
    """No frame of the presenter shows a face. What to do instead depends on where the user is (the
    CLI: --box; a job: option box; a registration: a clearer clip), so the hint is a field."""

    CLI_HINT = "pass --box"

    def __init__(self, source: object, hint: str = CLI_HINT):
        self.source, self.hint = str(source), hint
        super().__init__(f"no face found in any frame of {self.source}; use a clip with a visible frontal face"
                         + (f" or {hint}" if hint else ""))


class LimitExceeded(LipsyncError):
    """Over a quota or a concurrency limit: wait for work to finish, or ask for less."""


class TooLarge(LimitExceeded):
    """A body or a medium larger or longer than allowed."""


class NotFound(LipsyncError):
    """No such job, batch, presenter or session for this tenant (another tenant's looks the same)."""


class Forbidden(LipsyncError):
    """The caller may not do this."""


class Conflict(LipsyncError):
    """The thing exists but is in a state that does not allow this (yet)."""


class Gone(Conflict):
    """The thing's files were deleted (retention) or are missing."""


class Unavailable(LipsyncError):
    """A dependency is down or not ready; a later attempt may succeed (never the input's fault)."""


TransientError = Unavailable  # the older name, used by callers that retry


class ServerUnavailable(Unavailable):
    """No Triton server could serve the job (down, restarting, models loading) within the wait allowed."""


class ModelChanged(Unavailable):
    """The served model changed during a job (a rolling update): the job runs again on one model."""


class Cancelled(LipsyncError):
    """The caller cancelled the job (its cancel event was set)."""


HTTP_STATUS: dict[type, int] = {
    Cancelled: 409, Unavailable: 503, Gone: 410, Conflict: 409, Forbidden: 403, NotFound: 404,
    TooLarge: 413, LimitExceeded: 429, LipsyncError: 422,
}
EXIT_CODE: dict[type, int] = {Cancelled: 130, Unavailable: 3, LipsyncError: 2}


def _lookup(table: dict[type, int], exc: BaseException, default: int) -> int:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return default


def http_status(exc: BaseException) -> int:
    """The HTTP status the service answers `exc` with (500 for what is not a LipsyncError)."""
    return _lookup(HTTP_STATUS, exc, 500)


def exit_code(exc: BaseException) -> int:
    """The CLI's exit status for `exc` (1 for what is not a LipsyncError)."""
    return _lookup(EXIT_CODE, exc, 1)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An error's first line, shortened: what logs and messages carry."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:limit]
