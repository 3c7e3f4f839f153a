#!/usr/bin/env python3
"""Which locked Python packages have a newer release on PyPI (`make outdated`, docs/upgrades.md).
Reads the hashed lock files scripts/lock.sh writes and asks PyPI's JSON API for each package's
latest release (pre-releases aside, as PyPI's own "latest" does). A report, not a gate: it exits
0 unless PyPI cannot be asked. It says nothing about vulnerabilities (no advisory database is
asked).
    scripts/outdated.py            one line per outdated package: the lock files naming it, and
                                   where it is pinned (a direct dependency) or "transitive"
Env: PYPI_URL (default https://pypi.org; a mirror serving /pypi/NAME/json works too).
"""

import json
import os
import re
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK_FILES = [
    "services/web/requirements.txt",
    "services/web/requirements-dev.txt",
    "tests/requirements.txt",
    "bench/requirements.txt",
]
# Where the direct dependencies are pinned (exactly): a newer release of one of those needs its pin
# there raised first; the others are transitive, and `make lock LOCK_UPGRADE=...` takes them.
DIRECT_FILES = ["services/web/pyproject.toml", "tests/requirements.in", "bench/requirements.in"]
DIRECT = re.compile(r'^\s*"?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==', re.MULTILINE)
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
PYPI_URL = os.environ.get("PYPI_URL", "https://pypi.org").rstrip("/")


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[tuple[str, str], list[str]]:
    """(package, version) -> the lock files that pin it."""
    pins: dict[tuple[str, str], list[str]] = {}
    for name in LOCK_FILES:
        for line in (ROOT / name).read_text().splitlines():
            if m := PIN.match(line):
                pins.setdefault((normalized(m.group(1)), m.group(2)), []).append(name)
    return pins


def direct() -> dict[str, str]:
    """package -> the file that pins it as a direct dependency."""
    found: dict[str, str] = {}
    for name in DIRECT_FILES:
        for package in DIRECT.findall((ROOT / name).read_text()):
            found.setdefault(normalized(package), name)
    return found


def latest(package: str) -> str:
    if not PYPI_URL.startswith(("https://", "http://")):
        raise ValueError(f"PYPI_URL must be an http(s) URL, not {PYPI_URL!r}")
    url = f"{PYPI_URL}/pypi/{package}/json"
    with urllib.request.urlopen(url, timeout=30) as reply:  # noqa: S310 (http(s) only, above)
        return json.load(reply)["info"]["version"]


def release_key(version: str) -> tuple:
    """Enough of PEP 440 ordering for final releases: numeric parts compared as numbers."""
    return tuple(int(p) if p.isdigit() else -1 for p in re.split(r"[.+-]", version))


def main() -> int:
    pins = locked()
    packages = sorted({package for package, _ in pins})
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            newest = dict(zip(packages, pool.map(latest, packages), strict=True))
    except (urllib.error.URLError, TimeoutError) as e:
        print(f"outdated: error: cannot ask {PYPI_URL} ({e}); is PyPI reachable?", file=sys.stderr)
        return 1
    pinned = direct()
    rows = [
        (package, version, newest[package], ", ".join(files), pinned.get(package, "transitive"))
        for (package, version), files in sorted(pins.items())
        if release_key(newest[package]) > release_key(version)
    ]
    width = max([len(r[0]) for r in rows] + [7])
    for package, version, new, files, where in rows:
        print(f"{package:<{width}}  {version:>12} -> {new:<12}  {files}  (pinned: {where})")
    print(
        f"outdated: {len(rows)} of {len(pins)} locked pins ({len(packages)} packages in "
        f"{len(LOCK_FILES)} lock files) have a newer release on PyPI. Direct ones: raise the "
        "pin where it is, then `make lock`; transitive ones: `make lock LOCK_UPGRADE=NAME`. A "
        "lock takes only what fits Python 3.11 and the other packages' ranges (docs/upgrades.md)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
