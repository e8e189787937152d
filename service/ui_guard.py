"""What stands between a browser and the web UI (Gradio, mounted at /ui) beyond Gradio's own sign-in.

- **Uploads have owners.** Gradio's upload folder is shared by every user, and a UI function is
  called with whatever `FileData` path a client sends. `UploadOwners` records each file that
  Gradio's upload endpoint accepted with the signed-in user who sent it; the UI's functions act only
  on paths their caller uploaded (`UploadOwners.check`), never on a server path, a URL or another
  user's upload.
- **Sign-in** (`POST /ui/login`) is refused when the browser says it comes from another site (login
  CSRF: a hostile page signing the visitor into the attacker's tenant), its cookies are
  `SameSite=Lax`, and failed attempts count against the client address (`AuthThrottle`).
"""
from __future__ import annotations

import json
import os
import threading
import time
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from .auth_throttle import AuthThrottle

UI_PREFIX = "/ui"
UPLOAD_PATH = f"{UI_PREFIX}/gradio_api/upload"
LOGIN_PATHS = (f"{UI_PREFIX}/login", f"{UI_PREFIX}/login/")
EVENT_PREFIX = f"{UI_PREFIX}/gradio_api/"  # /call/<fn>, /queue/join, /run/<fn>: a function's inputs as JSON
MAX_EVENT_BYTES = 4 << 20  # inputs are options and file references; the files come through the upload
LOCAL_USER = ""  # local-only mode has no sign-in: one user


def _file_paths(data, depth: int = 0):
    """The `path` of every Gradio FileData in a function call's JSON."""
    if depth > 32:
        return
    if isinstance(data, dict):
        if isinstance(data.get("path"), str) and (data.get("meta") or {}).get("_type") == "gradio.FileData":
            yield data["path"]
        for value in data.values():
            yield from _file_paths(value, depth + 1)
    elif isinstance(data, list):
        for value in data:
            yield from _file_paths(value, depth + 1)


def _is_url(path: str) -> bool:
    return "://" in path or path.lower().startswith(("http:", "https:", "//"))


class NotYourUpload(Exception):
    """A UI function was handed a path its caller did not upload."""


class UploadOwners:
    """Uploaded file (real path) -> the signed-in user who sent it, for `keep_s` (Gradio deletes its
    cached uploads on the same schedule)."""

    def __init__(self, keep_s: float, max_entries: int = 100_000):
        self.keep_s, self.max_entries = keep_s, max_entries
        self._owners: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def record(self, user: str, paths: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._owners) + len(paths) > self.max_entries:
                self._prune(now)
            for path in paths:
                self._owners[os.path.realpath(path)] = (user, now)

    def _prune(self, now: float) -> None:
        cutoff = now - self.keep_s
        self._owners = {p: (u, t) for p, (u, t) in self._owners.items() if t >= cutoff}
        while len(self._owners) >= self.max_entries:  # still full: the oldest go
            self._owners.pop(next(iter(self._owners)))

    def check(self, path: str | None, user: str) -> str | None:
        """`path` if `user` uploaded it (and it is still kept), else NotYourUpload."""
        if not path:
            return None
        real = os.path.realpath(str(path))
        with self._lock:
            entry = self._owners.get(real)
        if entry is None or entry[0] != user or time.monotonic() - entry[1] > self.keep_s or not os.path.isfile(real):
            raise NotYourUpload("that file is not one you uploaded on this page (or it has expired): upload it again")
        return real


def _cross_site(request: Request) -> bool:
    """The browser says the request comes from another site (Fetch Metadata, else Origin vs Host)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False  # not a browser's cross-site form post (browsers send Origin with every POST)
    return origin == "null" or urlsplit(origin).netloc.lower() != (request.headers.get("host") or "").lower()


def _lax_cookies(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    out = []
    for name, value in headers:
        if name.lower() == b"set-cookie":
            parts = [p for p in value.split(b";") if p.strip().lower().split(b"=")[0] != b"samesite"]
            value = b";".join(parts) + b"; SameSite=Lax"
        out.append((name, value))
    return out


class UiGuard:
    """ASGI middleware around the whole app; it looks only at /ui's upload and sign-in requests."""

    def __init__(self, app, owners: UploadOwners, throttle: AuthThrottle, current_user):
        self.app, self.owners, self.throttle = app, owners, throttle
        self.current_user = current_user  # Request -> the signed-in user name, or None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in LOGIN_PATHS:
            return await self._login(scope, receive, send)
        if path == UPLOAD_PATH:
            return await self._upload(scope, receive, send)
        if path.startswith(EVENT_PREFIX):
            return await self._event(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _event(self, scope, receive, send):
        """A function call: refused when it hands a function a URL as a file (Gradio would fetch it
        from this server: a request forgery) before Gradio reads it."""
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > MAX_EVENT_BYTES:
                return await JSONResponse({"detail": "the UI's function call is too large"}, status_code=413)(scope, receive, send)
        try:
            data = json.loads(bytes(body)) if body else None
        except ValueError:
            data = None
        if any(_is_url(path) for path in _file_paths(data)):
            return await JSONResponse({"detail": "the UI takes only files uploaded on its page, not URLs"},
                                      status_code=422)(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _login(self, scope, receive, send):
        request = Request(scope)
        if _cross_site(request):
            return await JSONResponse({"detail": "sign-in from another site is refused: open the UI's own page to sign in"},
                                      status_code=403)(scope, receive, send)
        client = request.client.host if request.client else ""
        try:
            self.throttle.check(client)
        except HTTPException as refused:
            return await JSONResponse({"detail": refused.detail}, refused.status_code, refused.headers)(scope, receive, send)

        async def send_lax(message):
            if message["type"] == "http.response.start":
                if message["status"] >= 400:
                    self.throttle.failed(client)
                message = {**message, "headers": _lax_cookies(list(message.get("headers", [])))}
            await send(message)

        await self.app(scope, receive, send_lax)

    async def _upload(self, scope, receive, send):
        user = self.current_user(Request(scope))
        status, body = 0, bytearray()

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                body.extend(message.get("body", b""))
                if not message.get("more_body") and user is not None:
                    try:
                        paths = json.loads(bytes(body))
                    except ValueError:
                        paths = []
                    if isinstance(paths, list):
                        self.owners.record(user, [p for p in paths if isinstance(p, str)])
            await send(message)

        await self.app(scope, receive, recording_send)
