"""ffmpeg as a child process: argument lists only, raw frames through pipes, stderr always drained.

Every decode and encode in the project goes through `FfmpegProcess`, so three things hold everywhere:
- stderr is read by a thread into a bounded tail: a chatty codec can never fill that pipe and block
  ffmpeg (which would then block our own read or write forever);
- the exit status is checked, and a failure names ffmpeg's reason in one line;
- the process never outlives us: killed and reaped on close, and killed by the kernel if this
  process dies first (PR_SET_PDEATHSIG);
- it has a process group of its own: a terminal's Ctrl-C reaches us, and we stop it.
"""
from __future__ import annotations

import subprocess
import threading
from collections import deque

from lipsync_triton.process_guard import OWN_GROUP, guarded

STDERR_LINES = 20


class FfmpegProcess:
    """`with FfmpegProcess(args, read=True) as ff: ff.readinto(view)`; `ff.finish()` gives the exit status."""

    def __init__(self, args: list[str], *, read: bool = False, write: bool = False, bufsize: int = -1):
        self.cmd = ["ffmpeg", *([] if write else ["-nostdin"]), "-hide_banner", "-v", "error", *args]
        self.proc = subprocess.Popen(guarded(self.cmd), stdin=subprocess.PIPE if write else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if read else subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     bufsize=bufsize, **OWN_GROUP)
        self._tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._drain = threading.Thread(target=self._drain_stderr, name="ffmpeg-stderr", daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").strip()
            if line:
                self._tail.append(line)

    def readinto(self, view: memoryview) -> int:
        """Fill `view` from ffmpeg's stdout (short reads are retried); returns the bytes read (< len at EOF)."""
        got = 0
        while got < len(view):
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    def read(self, size: int) -> bytes:
        return self.proc.stdout.read(size)

    def write(self, data) -> bool:
        """Send bytes to ffmpeg's stdin; False when ffmpeg has stopped reading (it failed)."""
        try:
            self.proc.stdin.write(data)
            return True
        except BrokenPipeError:
            return False

    def finish(self) -> int:
        """Close stdin (if any), wait for ffmpeg to exit and return its exit status."""
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        code = self.proc.wait()
        self._drain.join(timeout=5)
        return code

    def reason(self) -> str:
        """ffmpeg's last error line, for one-line messages."""
        self._drain.join(timeout=0 if self.proc.poll() is None else 5)
        return self._tail[-1][:200] if self._tail else "ffmpeg reported no error"

    def close(self) -> None:
        """Kill ffmpeg if it still runs and release its pipes (safe to call twice)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        self._drain.join(timeout=5)

    def __enter__(self) -> "FfmpegProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
