"""Every suite shipped in ``suites/`` validates, expands to runs, and is listed in the README's suite table.

A suite that a plugin change breaks (a renamed preset, a removed parameter) fails here, not in a user's
first ``harness run``; a suite added without documentation fails too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.plugins import Registry
from harness.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "suites").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_a_shipped_suite_validates_and_expands_in_full_and_as_smoke(path):
    registry = Registry.from_plugins()
    suite = load_suite(path, registry)
    smoke = load_suite(path, registry, smoke=True)
    assert suite.runs and smoke.runs and len(smoke.runs) <= len(suite.runs)
    assert len({run.run_id for run in suite.runs}) == len(suite.runs)


@pytest.mark.parametrize("path", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_a_shipped_suite_is_in_the_readme_suite_table(path):
    table_rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| `")]
    assert any(f"`{path.name}`" in row.split("|")[1] for row in table_rows), f"{path.name} is not in the README"
