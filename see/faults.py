"""Fault points: where crash tests stop a process (``SEE_FAULT_POINT=name``) to SIGKILL it exactly there."""
from __future__ import annotations

import os
import sys
import time


def fault_point(name: str) -> None:
    """Pause here when ``SEE_FAULT_POINT`` names this point."""
    if os.environ.get("SEE_FAULT_POINT") == name:
        print(f"SEE_FAULT_POINT {name} reached", file=sys.stderr, flush=True)
        time.sleep(float(os.environ.get("SEE_FAULT_SLEEP", "300")))
