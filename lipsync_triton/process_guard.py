"""Children never outlive their parent: commands are started through util-linux's `setpriv
--pdeathsig`, which asks Linux to signal the child when the thread that started it dies (prctl
PR_SET_PDEATHSIG survives exec), even on SIGKILL of the parent.

Why not a Python preexec_fn: it forces a plain fork() in a process that runs gRPC threads, whose
fork handlers then log into the child's stderr and can break the child's pollers.
The kernel ties the signal to the starting THREAD, not the process: a child started from a
short-lived thread would be killed when that thread ends, so servers are only guarded when
started from the main thread; ffmpeg children are always used to completion by their thread.
"""
from __future__ import annotations

import shutil
import threading

SETPRIV = shutil.which("setpriv")  # util-linux, an essential Debian package


def guarded(cmd: list[str], signal_name: str = "KILL") -> list[str]:
    """`cmd` prefixed so that the child gets SIG`signal_name` when the calling thread dies."""
    return [SETPRIV, "--pdeathsig", signal_name, "--", *cmd] if SETPRIV else list(cmd)


def niced(cmd: list[str], niceness: int) -> list[str]:
    """`cmd` at a lower CPU priority (coreutils `nice` execs it: same PID, signals reach it; its
    threads and children inherit the niceness)."""
    return ["nice", "-n", str(niceness), *cmd] if niceness else list(cmd)


# Popen/run keyword arguments for a helper child (ffmpeg, ffprobe): a process group of its own, so
# a terminal's Ctrl-C (SIGINT to the whole foreground group) reaches only us. The job then stops
# its children itself, and an interrupt is always reported as one, never as a decoder that died
# under the user's file.
OWN_GROUP = {"process_group": 0}


def guarded_server(cmd: list[str]) -> list[str]:
    """A server gets SIGTERM (a clean shutdown) when we die, if started from the main thread."""
    return guarded(cmd, "TERM") if threading.current_thread() is threading.main_thread() else list(cmd)
