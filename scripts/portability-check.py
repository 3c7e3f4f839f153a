#!/usr/bin/env python3
"""Fails on bash-4-only and GNU-only constructs in the scripts of the developer path (make dev,
dev-down, logs, shell, psql, lint, test-django, prod-env, certs-selfsigned, lock), which must run
with macOS's bash 3.2 and BSD tools. Scripts that run only inside our Debian images, or only on
the Debian server (deploy, backup), are not checked.
    scripts/portability-check.py     exit 1 naming file:line and the construct
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEVELOPER_PATH = [
    "scripts/docker-setup.sh", "scripts/dev-urls.sh", "scripts/compose.sh", "scripts/build.sh",
    "scripts/test.sh", "scripts/certs-selfsigned.sh", "scripts/prod-env.sh", "scripts/lock.sh",
    "scripts/lint.sh",  # the pre-commit hooks run it on developers' machines
]  # fmt: skip
NOT_PORTABLE = {
    r"\b(mapfile|readarray)\b": "mapfile/readarray (bash 4)",
    r"\b(declare|local|typeset) -[a-zA-Z]*[An]": "associative arrays or namerefs (bash 4)",
    r"\$\{[^}]*(,,|\^\^|,|\^)\}": "case conversion in ${...} (bash 4)",
    r"\$\{[^}]*@[QEPAaUuLK]\}": "${var@op} (bash 4.4)",
    r"\$\{[A-Za-z_]+\[-[0-9]+\]\}": "negative array index (bash 4.3)",
    r"\bcoproc\b": "coproc (bash 4)",
    r"&>>|\|&": "&>> or |& (bash 4)",
    r"\[\[ -v ": "[[ -v (bash 4.2)",
    r"\bwait -n\b": "wait -n (bash 4.3)",
    r"\$EPOCH(SECONDS|REALTIME)": "$EPOCHSECONDS (bash 5)",
    r"\bsed\b[^|;]*\s-i\b": "sed -i (GNU and BSD differ)",
    r"(^|[\s;|&(])timeout\s": "timeout (GNU coreutils)",
    r"\bdate\b[^|;]*(%N|\s-d\s|--date)": "GNU date (%N, -d)",
    r"\breadlink -f\b": "readlink -f (GNU)",
    r"\bstat -c\b": "stat -c (GNU; BSD has stat -f)",
    r"\bgrep\b[^|;]*\s-[a-zA-Z]*P": "grep -P (GNU)",
    r"\bxargs -r\b": "xargs -r (GNU)",
    r"\b(sha256sum|md5sum|sha1sum)\b": "sha256sum/md5sum (GNU coreutils)",
    r"\bfind\b[^|;]*-printf": "find -printf (GNU)",
}


def code_part(line: str) -> str:
    """The line without a trailing comment (good enough for these scripts' style)."""
    stripped = line.lstrip()
    return "" if stripped.startswith("#") else re.split(r"\s#\s", line, maxsplit=1)[0]


def main() -> int:
    problems = []
    for name in DEVELOPER_PATH:
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            code = code_part(line)
            for pattern, what in NOT_PORTABLE.items():
                if re.search(pattern, code):
                    problems.append(f"{name}:{n}: {what}: {line.strip()}")
    for line in problems:
        print(line)
    if not problems:
        print(f"{len(DEVELOPER_PATH)} developer-path scripts: bash 3.2 and BSD tools only")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
