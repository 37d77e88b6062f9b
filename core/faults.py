"""Crash points for the fault-injection tests.

`crashpoint("name")` kills the whole worker process group with SIGKILL when PATCHPILOT_CRASHPOINTS names it, so
tests can stop a real worker at an exact line (before the launch call, between AWX's 201 and our commit, ...).
Unset in production: then it is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal


def crashpoint(name: str) -> None:
    wanted = os.environ.get("PATCHPILOT_CRASHPOINTS")
    if wanted and name in wanted.split(","):
        os.killpg(os.getpgrp(), signal.SIGKILL)
