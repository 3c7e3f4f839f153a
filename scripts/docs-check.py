#!/usr/bin/env python3
"""Keeps the docs from rotting: every Make target and every environment variable the stack reads
must be documented in README.md or docs/*.md.
    scripts/docs-check.py            check (exit 1 naming what is missing)
    scripts/docs-check.py --table    print the Make targets as the README's markdown table
Targets come from the Makefile's `## ` comments (the source of `make help`); variables from the
Django settings, the gunicorn config, the compose files, the Makefile and the images' scripts.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Where variables are read, and the patterns that find their names.
VARIABLE_SOURCES = {
    "services/web/config/*.py": [
        r'env\.\w+\(\s*"([A-Z][A-Z0-9_]+)"',
        r'environ(?:\.get|\.setdefault)?\(\s*"([A-Z][A-Z0-9_]+)"',
        r'environ\["([A-Z][A-Z0-9_]+)"\]',
    ],
    "docker-compose*.yml": [r"\$\{([A-Z][A-Z0-9_]+)"],
    "compose/*.yml": [r"\$\{([A-Z][A-Z0-9_]+)"],
    "Makefile": [r"^([A-Z][A-Z0-9_]+)\s*\?="],
    "scripts/*.sh": [r"\$\{([A-Z][A-Z0-9_]+):-"],
    "services/*/*.sh": [r"\$\{([A-Z][A-Z0-9_]+):-"],
    "nginx/*.sh": [r"\$\{([A-Z][A-Z0-9_]+):-"],
}
# Read but not ours to document (set by Docker, Python, the shell or Django itself).
# PG*: libpq's own variables, set by our scripts for psql/pg_dump. DRS_TEMP_SERVER: internal
# state of the postgres entrypoint, not a setting.
NOT_OURS = {
    "HOME", "PATH", "HOSTNAME", "PWD", "CI", "DOCKER_CONFIG", "DJANGO_SETTINGS_MODULE",
    "PYTHONPATH", "PGDATA", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE",
    "PGCONNECT_TIMEOUT", "DRS_TEMP_SERVER",
}  # fmt: skip


def targets() -> list[tuple[str, str, str]]:
    section, rows = "", []
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif m := re.match(r"^([a-zA-Z0-9_-]+):.*?## (.*)$", line):
            rows.append((section, m.group(1), m.group(2)))
    return rows


def variables() -> set[str]:
    found = set()
    for pattern, regexes in VARIABLE_SOURCES.items():
        for path in ROOT.glob(pattern):
            text = path.read_text()
            for regex in regexes:
                found.update(re.findall(regex, text, flags=re.MULTILINE))
    return found - NOT_OURS


def docs_text() -> str:
    return "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted(ROOT.glob("docs/*.md"))])


def table() -> str:
    out = ["| Target | Group | What |", "| --- | --- | --- |"]
    out += [f"| `make {name}` | {section} | {text} |" for section, name, text in targets()]
    return "\n".join(out)


def check() -> int:
    readme, docs = (ROOT / "README.md").read_text(), docs_text()
    missing_targets = [n for _, n, _ in targets() if f"| `make {n}` |" not in readme]
    missing_vars = sorted(v for v in variables() if f"`{v}`" not in docs)
    if missing_targets:
        print("README.md's target table lacks: " + ", ".join(missing_targets))
        print("  (print the table with scripts/docs-check.py --table)")
    if missing_vars:
        print("not documented in README.md or docs/*.md: " + ", ".join(missing_vars))
    if missing_targets or missing_vars:
        return 1
    print(f"documented: {len(targets())} Make targets, {len(variables())} variables")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(table())
    else:
        sys.exit(check())
