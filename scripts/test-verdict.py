#!/usr/bin/env python3
"""The verdict of a `scripts/test.sh` run: passes only on a full pass of every stage that ran.
    scripts/test-verdict.py RESULTS_DIR
A stage fails the run when its runner exited non-zero (pytest's exit status, whatever its junit
file says), when it left no results, when it ran fewer tests than tests/expected-counts.txt asks
for, or when a test was skipped without being listed, with its reason, in tests/allowed-skips.txt.
Prints a line per stage and per failure (each naming its stage), then "N passed, N failed";
exits 1 on anything short of a full pass.

Files the runner writes into RESULTS_DIR:
  stages.tsv   STAGE <tab> EXIT_STATUS   one line per stage run (EXIT_STATUS "-" = never started)
  STAGE.xml    the stage's junit file (pytest stages)
  checks.tsv   STAGE <tab> pass|fail <tab> NAME   checks that are not pytest tests (stages lint, bench)
"""

import pathlib
import sys
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXPECTED = ROOT / "tests" / "expected-counts.txt"
ALLOWED_SKIPS = ROOT / "tests" / "allowed-skips.txt"
# Stages made of checks (checks.tsv), not of pytest tests.
CHECK_STAGES = ("lint", "bench")

# pytest's exit codes (pytest.ExitCode), said in words.
PYTEST_EXIT = {
    1: "tests failed",
    2: "the session was interrupted",
    3: "internal error",
    4: "usage error (a wrong path or option?)",
    5: "no tests were collected",
}


def read_table(path: pathlib.Path, columns: int) -> list[list[str]]:
    """Lines of a tab-separated file, comments (#) and blank lines left out."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        row = line.split("\t")
        if len(row) != columns or not all(cell.strip() for cell in row):
            sys.exit(f"{path.relative_to(ROOT)}:{n}: want {columns} tab-separated fields: {line!r}")
        rows.append([cell.strip() for cell in row])
    return rows


def expected_counts() -> dict[str, int]:
    return {stage: int(n) for stage, n in read_table(EXPECTED, 2)}


def allowed_skips() -> set[tuple[str, str]]:
    return {(stage, test) for stage, test, _reason in read_table(ALLOWED_SKIPS, 3)}


def junit_cases(xml: pathlib.Path):
    """(test id, outcome) for every test case: outcome is pass, fail or skip."""
    for case in ET.parse(xml).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            yield test, "fail"
        elif "skipped" in tags:
            yield test, "skip"
        else:
            yield test, "pass"


def too_few(stage: str, ran: int, what: str, expected: dict[str, int]) -> list[str]:
    """The problem, if any, with how many tests (or checks) STAGE ran."""
    where = EXPECTED.relative_to(ROOT)
    if stage not in expected:
        return [f"stage {stage}: no minimum count of {what} in {where}"]
    if ran < expected[stage]:
        return [f"stage {stage}: {ran} {what} ran, at least {expected[stage]} expected ({where})"]
    return []


def main(results: pathlib.Path) -> int:
    expected, allowed = expected_counts(), allowed_skips()
    problems: list[str] = []
    passed = failed = 0
    stages = read_table(results / "stages.tsv", 2) if (results / "stages.tsv").exists() else []
    if not stages:
        problems.append("no stage ran")
    for stage, status in stages:
        if stage in CHECK_STAGES:
            continue  # counted with the checks below
        xml = results / f"{stage}.xml"
        cases = list(junit_cases(xml)) if xml.exists() and xml.stat().st_size else []
        p = sum(1 for _, o in cases if o == "pass")
        f = sum(1 for _, o in cases if o == "fail")
        skips = [t for t, o in cases if o == "skip"]
        passed += p
        failed += f
        print(f"  {stage:<10} {p} passed, {f} failed, {len(skips)} skipped (exit status {status})")
        if status == "-":
            problems.append(f"stage {stage}: did not run (the stack it needs did not start)")
        elif status != "0":
            why = PYTEST_EXIT.get(int(status), "runner failed") if status.isdigit() else status
            problems.append(f"stage {stage}: its runner exited {status} ({why})")
        if not cases and status != "-":
            problems.append(f"stage {stage}: no junit results ({xml.name} missing or empty)")
        problems += too_few(stage, len(cases), "tests", expected)
        for test in skips:
            if (stage, test) not in allowed:
                failed += 1
                problems.append(
                    f"stage {stage}: {test} was skipped and is not listed in "
                    f"{ALLOWED_SKIPS.relative_to(ROOT)}"
                )
    rows = read_table(results / "checks.tsv", 3) if (results / "checks.tsv").exists() else []
    for stage, status in stages:
        if stage not in CHECK_STAGES:
            continue
        mine = [(outcome, name) for s, outcome, name in rows if s == stage]
        p = sum(1 for outcome, _ in mine if outcome == "pass")
        passed += p
        failed += len(mine) - p
        print(f"  {stage:<10} {p} checks passed, {len(mine) - p} failed (exit status {status})")
        problems += [f"stage {stage}: check failed: {name}" for o, name in mine if o != "pass"]
        if status != "0":
            problems.append(f"stage {stage}: did not finish (exit status {status})")
        problems += too_few(stage, len(mine), "checks", expected)
    for problem in problems:
        print(f"FAIL  {problem}")
    print(f"{passed} passed, {failed} failed" + (" (the run FAILED)" if problems else ""))
    return 1 if problems or failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
