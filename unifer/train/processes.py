"""Child processes of the launcher: stopping a whole process group, Ctrl-C / SIGTERM as an exception, a tee."""
from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child (``preexec_fn``): get SIGTERM when the launcher dies, even by SIGKILL, so that no torchrun or
    server outlives it (Linux; a no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Stopped(Exception):
    """Ctrl-C or SIGTERM reached the launcher; ``status`` is the shell's exit status for it (130 / 143)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


class StopSignals:
    """While active, the first SIGINT / SIGTERM raises ``Stopped`` (later ones are ignored during the clean-up)."""

    def __enter__(self):
        self.fired = False
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.fired:
            return
        self.fired = True
        raise Stopped(128 + signum)

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, h)
        return False


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the process group ``proc`` leads, then SIGKILL to what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its group may not be
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
    proc.wait()


def tee(stream, sinks) -> threading.Thread:
    def pump():
        for chunk in iter(lambda: stream.read1(65536), b""):
            for sink in sinks:
                sink.write(chunk)
                sink.flush()

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread
