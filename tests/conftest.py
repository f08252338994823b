"""Shared fixtures: fresh registries, and test plugins loaded through the real entry-point path."""

from __future__ import annotations

import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch

from harness import plugins as plugin_module
from harness.plugins import Registry

# Tests run in parallel (pytest -n): one intra-op thread per worker avoids oversubscribing the cores,
# which makes tiny models orders of magnitude slower.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _plugin_warnings_shown_afresh(monkeypatch):
    """Each test sees a skipped plugin's warning again (a process shows each one once: harness.plugins._WARNED)."""
    monkeypatch.setattr(plugin_module, "_WARNED", set())


@pytest.fixture
def registry() -> Registry:
    """A registry over a fresh plugin manager with the installed plugins."""
    return Registry.from_plugins()


@pytest.fixture
def add_entry_points(monkeypatch, tmp_path: Path):
    """Install extra ``sam_harness`` entry points whose modules are written from source strings.

    ``add_entry_points({"name": "source code"})`` writes ``name_plugin.py`` to a temporary folder on
    ``sys.path`` and makes the entry point ``name = name_plugin`` visible beside the installed ones,
    so the harness loads it exactly as it would load a third-party plugin.
    """
    installed = plugin_module._entry_points()
    extra: list[metadata.EntryPoint] = []
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugin_module, "_entry_points", lambda: [*installed, *extra])

    def add(sources: dict[str, str]) -> None:
        for name, source in sources.items():
            module = f"{name.replace('-', '_')}_plugin"
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            extra.append(metadata.EntryPoint(name=name, value=module, group=plugin_module.ENTRY_POINT_GROUP))

    return add


def write_suite(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path
