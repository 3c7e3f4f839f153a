#!/usr/bin/env python3
"""Keeps the docs from rotting, both ways:
* every Make target and every environment variable the stack reads is documented in README.md or
  docs/*.md;
* every file, doc link (with its #anchor), Make target and variable that README.md, docs/*.md or a
  comment in the code names exists.
    scripts/docs-check.py            check (exit 1 naming what is missing)
    scripts/docs-check.py --table    print the Make targets as the README's markdown table
Targets come from the Makefile's `## ` comments (the source of `make help`); variables from the
Django settings, the gunicorn config, the compose files, the Makefile and the images' scripts.
"""

import pathlib
import re
import subprocess
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


# Files that exist only once made (by make prod-env, make deploy, a test run): named, never tracked.
GENERATED = re.compile(r"^(compose/prod\.env|compose/\S*\.tags|certs/|\.cache/)")
# Top-level folders a path reference starts with; `apps/`, `config/`, `tests/` are also looked up
# in services/web (the Django project's own relative paths).
PATH_REF = re.compile(
    r"(?<![\w./${}-])((?:\.ci|bench|compose|docs|nginx|scripts|services|tests|apps|config)/[\w./*-]*[\w*/])"
)
DOC_LINK = re.compile(r"\]\(([^)\s]+)\)")
MAKE_REF = re.compile(r"`make ([a-z][a-z0-9-]*)")
# A variable named in the docs must be read somewhere (names with one of the stack's prefixes).
DOC_VAR = re.compile(
    r"`((?:DJANGO|POSTGRES|REDIS|NGINX|BACKUP|EXPORT|CELERY|DRS|BENCH|GUNICORN|HTTPS?|TLS|"
    r"DEPLOY|FUZZ|ABUSE|E2E|PROD|DEV|WEB|WORKER)_[A-Z0-9_]*[A-Z0-9])(?![A-Z0-9_*])"
)
TEXT_SUFFIXES = {
    ".py",
    ".sh",
    ".yml",
    ".yaml",
    ".conf",
    ".template",
    ".md",
    ".txt",
    ".toml",
    ".in",
    ".lua",
    ".example",
    ".env",
}


def tracked() -> list[pathlib.Path]:
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).is_file()]


def text_files() -> list[pathlib.Path]:
    return [
        p
        for p in tracked()
        if (p.suffix in TEXT_SUFFIXES or p.name in ("Makefile", "Dockerfile", "run"))
        and not str(p.relative_to(ROOT)).startswith("bench/results/")
    ]


def exists(ref: str, origin: pathlib.Path) -> bool:
    ref = ref.rstrip(".")
    if GENERATED.match(ref):
        return True
    bases = [ROOT, ROOT / "services/web", origin.parent]
    if "services" in origin.relative_to(ROOT).parts[:1]:
        bases.append(ROOT.joinpath(*origin.relative_to(ROOT).parts[:2]))
    for base in bases:
        if "*" in ref:
            if list(base.glob(ref.rstrip("/"))):
                return True
        elif (base / ref).exists():
            return True
    return False


def anchors(path: pathlib.Path) -> set[str]:
    found = set()
    for line in path.read_text().splitlines():
        if m := re.match(r"^#+\s+(.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def stale_references() -> list[str]:
    problems = []
    make_targets = set(
        re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.MULTILINE)
    )
    files = text_files()
    code = "\n".join(p.read_text(errors="replace") for p in files if p.suffix != ".md")
    for path in files:
        rel = path.relative_to(ROOT)
        if path == pathlib.Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        in_docstring = False
        for n, line in enumerate(text.splitlines(), 1):
            where = f"{rel}:{n}"
            # In code, only comments and docstrings are prose (a string may be a URL path).
            prose = path.suffix == ".md" or line.lstrip().startswith("#") or in_docstring
            if path.suffix == ".py" and line.count('"""') % 2:
                in_docstring, prose = not in_docstring, True
            for ref in PATH_REF.findall(line) if prose else []:
                if not exists(ref, path):
                    problems.append(f"{where}: no such file or folder: {ref}")
            for target in MAKE_REF.findall(line):
                if target not in make_targets:
                    problems.append(f"{where}: no such Make target: make {target}")
            if path.suffix != ".md":
                continue
            for link in DOC_LINK.findall(line):
                if re.match(r"^[a-z]+:", link):
                    continue
                file, _, anchor = link.partition("#")
                target = (path.parent / file) if file else path
                if not target.exists():
                    problems.append(f"{where}: broken link: {link}")
                elif anchor and target.suffix == ".md" and anchor not in anchors(target):
                    problems.append(f"{where}: no heading for anchor: {link}")
            for var in DOC_VAR.findall(line):
                if not re.search(rf"\b{var}\b", code):
                    problems.append(f"{where}: variable read nowhere: {var}")
    return problems


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
    stale = stale_references()
    for line in stale:
        print(line)
    if missing_targets or missing_vars or stale:
        return 1
    print(
        f"documented: {len(targets())} Make targets, {len(variables())} variables;"
        " no stale reference"
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(table())
    else:
        sys.exit(check())
