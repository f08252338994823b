"""The commit of the code that ran: the ``git_commit`` column of a result row.

A number in a paper needs the code that produced it. ``harness_version`` names a release; during development
every run is "0.x.0", so the row also records the commit of the git checkout the ``harness`` package was
imported from (an editable install, the way this project is installed for work), with ``+dirty`` when tracked
files had uncommitted changes (untracked files, such as results, do not count). Installed from a wheel, or
without ``git`` on the machine, there is no checkout to ask: None. Asked once per process (two short ``git``
calls), as every run of a worker process runs the same code.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

import harness

#: The folder above the ``harness`` package: the repository root of a checkout.
SOURCE_ROOT = Path(harness.__file__).resolve().parent.parent


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit_of(folder: Path) -> str | None:
    """The commit checked out at ``folder`` (``<sha>+dirty`` with uncommitted changes to tracked files);
    None when ``folder`` is not in a git checkout or git cannot be run."""
    sha = _git(folder, "rev-parse", "--verify", "HEAD")
    if not sha:
        return None
    changes = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return f"{sha}+dirty" if changes else sha


@functools.cache
def source_commit() -> str | None:
    """``commit_of`` the checkout this process's ``harness`` package comes from (cached)."""
    return commit_of(SOURCE_ROOT) if (SOURCE_ROOT / "harness" / "__init__.py").is_file() else None
