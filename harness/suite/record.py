"""``Suite``, what ``load_suite`` returns: a validated suite's name, description, file, runs and executor."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.contract.run_spec import RunSpec

DEFAULT_EXECUTOR = "local"


@dataclass(frozen=True)
class Suite:
    """A validated suite: its name, description, source file, expanded runs, executor and tuning block."""

    name: str
    description: str
    path: str
    runs: tuple[RunSpec, ...] = field(default_factory=tuple)
    executor: tuple[str, Mapping[str, Any]] = (DEFAULT_EXECUTOR, {})
    #: the validated ``tuning:`` block (``harness.suite.tuning.Tuning``), None without one
    tuning: Any = None
