"""Helpers of the abuse suite: the figures each case records, and bounded concurrent loads.

Every case writes what it measured (requests sent, refused, p99 of a legitimate client, bytes
written) to ``abuse-figures.jsonl`` in the results folder and to its junit properties: the
closing figures of docs/reliability.md ("Threats and limits") come from there, never from code.
"""

import json
import time
from pathlib import Path

from conftest import RESULTS_DIR

FIGURES = Path(RESULTS_DIR) / "abuse-figures.jsonl"


def record_figures(request, case: str, **figures) -> None:
    """Append the case's figures to abuse-figures.jsonl and to the test's junit properties."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"case": case, **figures}) + "\n")
    for name, value in figures.items():
        request.node.user_properties.append((name, value))
    print(case, figures)


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of measured values; fails on an empty list."""
    if not values:
        raise AssertionError("no measurement taken: the load did not run")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - start
