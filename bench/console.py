"""Progress lines, errors, and running commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time

STARTED = time.monotonic()


def log(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[bench {elapsed // 60:2d}:{elapsed % 60:02d}] {message}", flush=True)


def fail(message: str) -> None:
    print(f"bench: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run(
    cmd: list[str],
    *,
    env: dict | None = None,
    check: bool = True,
    timeout: float = 600,
    input_text: str | None = None,
) -> subprocess.CompletedProcess:
    """`cmd` with the environment plus `env`; output captured. check: fail on a non-zero exit."""
    result = subprocess.run(
        cmd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        check=False,
    )
    if check and result.returncode != 0:
        fail(f"{' '.join(cmd[:6])}... exited {result.returncode}:\n{result.stderr[-2000:]}")
    return result
