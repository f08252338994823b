"""The ``harness`` command's own options (harness/cli/parser.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import harness

REPO = Path(__file__).resolve().parents[1]


def test_version_prints_the_version_pyproject_declares_and_exits_0():
    declared = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    done = subprocess.run([sys.executable, "-m", "harness.cli", "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, f"harness {declared}\n", "")
    assert harness.__version__ == declared  # the same version the result rows record (harness_version)
