"""Running the ``sieve`` command line as a user does: a subprocess, with chosen variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sieve(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``python -m api ARGS`` with ``env`` over this environment; raise on failure if ``check``."""
    proc = subprocess.run(
        [sys.executable, "-m", "api", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=ROOT,
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"sieve {args} exited {proc.returncode}: {proc.stderr}")
    return proc
