"""``harness.run.source``: the commit a result row records (``git_commit``), from a real git checkout."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from harness.run import source
from harness.run.source import SOURCE_ROOT, commit_of, source_commit

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _git(folder, *args: str) -> str:
    command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def test_a_checkout_gives_its_commit_and_dirty_only_for_changed_tracked_files(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "commit", "-q", "-m", "first")
    sha = _git(tmp_path, "rev-parse", "HEAD")
    assert commit_of(tmp_path) == sha and len(sha) == 40
    (tmp_path / "results.parquet").write_text("untracked")  # results and other untracked files do not count
    assert commit_of(tmp_path) == sha
    (tmp_path / "code.py").write_text("x = 2\n")
    assert commit_of(tmp_path) == f"{sha}+dirty"


def test_no_checkout_or_no_git_gives_none(tmp_path, monkeypatch):
    assert commit_of(tmp_path) is None  # tmp_path is in no repository
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert commit_of(SOURCE_ROOT) is None


def test_the_row_commit_is_this_checkouts(monkeypatch):
    if commit_of(SOURCE_ROOT) is None:
        pytest.skip("sam-harness is not installed from a git checkout here")
    head = _git(SOURCE_ROOT, "rev-parse", "HEAD")
    source_commit.cache_clear()
    assert source_commit().removesuffix("+dirty") == head
    monkeypatch.setattr(source, "SOURCE_ROOT", SOURCE_ROOT / "no-such-folder")  # a wheel install: no checkout
    source_commit.cache_clear()
    try:
        assert source_commit() is None
    finally:
        source_commit.cache_clear()
