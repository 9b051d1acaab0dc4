"""Fault points: where crash tests stop a process, or make a write fail.

``SEE_FAULT_POINT=name`` pauses the process there (for ``SIGKILL`` at exactly
that point). With ``SEE_FAULT_ERRNO=ENOSPC`` (or ``EROFS``, ``EACCES``, ...)
the point raises that ``OSError`` instead, as the write that follows it would
on a full disk, a read-only filesystem or a forbidden file.
"""
from __future__ import annotations

import errno
import os
import sys
import time
from pathlib import Path


def fault_point(name: str, path: str | Path | None = None) -> None:
    """Pause here, or fail like a write to ``path``, when ``SEE_FAULT_POINT`` names this point."""
    if os.environ.get("SEE_FAULT_POINT") != name:
        return
    code = os.environ.get("SEE_FAULT_ERRNO")
    if code:
        number = getattr(errno, code)
        raise OSError(number, os.strerror(number), str(path) if path is not None else None)
    print(f"SEE_FAULT_POINT {name} reached", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("SEE_FAULT_SLEEP", "300")))
