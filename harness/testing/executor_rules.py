"""The contract of executors (``register_executors``): ``executor.run(runs, *, results_dir, events)``.

An executor must train a suite's runs to the same results wherever it runs them. The kit runs a two-run
suite (ERM and SAM on a slice of digits, a 16-unit MLP, one epoch) through the executor, built with its
registered defaults, and compares each run's ``status``, ``test_acc``, ``steps`` and ``grad_evals`` with the
rows the ``local`` executor writes for the same suite (for ``local`` itself: with runs trained in this
process by ``harness.run.runner.execute``). An executor whose optional dependency is missing is skipped, and so is
one that raises ``harness.errors.EngineUnavailable`` (no Slurm controller, no Ray cluster): the skip says why.
"""

from __future__ import annotations

import math
import tempfile
import textwrap
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import EngineUnavailable
from harness.plugins import Registry
from harness.testing.base import ContractSkip, ContractViolation, rule

REFERENCE = "local"
SUITE = """
    name: sam-harness-contract
    defaults: {epochs: 1, batch_size: 64, device: cpu}
    methods: [erm, sam]
    models: [{name: mlp, hidden: 16}]
    datasets: [{name: digits, limit_train: 256, limit_test: 128}]
    seeds: [0]
"""
COLUMNS = ("status", "test_acc", "steps", "grad_evals")

_reference_rows: weakref.WeakKeyDictionary[Registry, dict[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


class _Events:
    """Progress callbacks that record nothing (``harness.execution.RunEvents``)."""

    def started(self, run: Any, worker: str = "") -> None:
        pass

    def epoch(self, run: Any, epoch: int, test_acc: float) -> None:
        pass

    def finished(self, run: Any, row: Mapping[str, Any]) -> None:
        pass

    def skipped(self, run: Any, reason: str) -> None:
        pass


def _suite(registry: Registry, folder: Path) -> Any:
    from harness.suite import load_suite

    for kind, name in (("preset", "erm"), ("preset", "sam"), ("model", "mlp"), ("dataset", "digits")):
        if name not in registry.names(kind):
            raise ContractSkip(
                f"the kit's executor suite needs the {kind} {name!r} of sam-harness, which is not loaded"
            )
    path = folder / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return load_suite(path, registry)


def _rows(folder: Path, suite: Any) -> dict[str, dict[str, Any]]:
    from harness.results.read import read_runs
    from harness.results.store import suite_dir

    table = read_runs(suite_dir(folder, suite.name), columns=["run_id", *COLUMNS, "error"])
    rows = {row["run_id"]: {key: _plain(row[key]) for key in (*COLUMNS, "error")} for row in table.to_dict("records")}
    missing = [run.run_id for run in suite.runs if run.run_id not in rows]
    if missing:
        raise ContractViolation(f"no result row was written for runs {missing}")
    return rows


def _plain(value: Any) -> Any:
    """A cell as a comparable Python value (NaN and missing values as ``None``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _executor(registry: Registry, name: str) -> Any:
    try:
        return registry.create("executor", name)
    except EngineUnavailable as error:
        raise ContractSkip(f"its engine cannot be reached: {error}") from error
    except Exception as error:
        if isinstance(error, ImportError) or isinstance(error.__cause__, ImportError):
            raise ContractSkip(f"an optional dependency is not installed: {error}") from error
        raise ContractViolation(f"building it with its defaults raised {type(error).__name__}: {error}") from error


def _run(registry: Registry, name: str) -> dict[str, dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="sam-harness-contract-") as folder:
        suite = _suite(registry, Path(folder))
        executor = _executor(registry, name)
        try:
            executor.run(list(suite.runs), results_dir=str(Path(folder) / "results"), events=_Events())
        except ImportError as error:
            raise ContractSkip(f"an optional dependency is not installed: {error}") from error
        except EngineUnavailable as error:
            raise ContractSkip(f"its engine cannot be reached: {error}") from error
        except Exception as error:
            raise ContractViolation(f"run(runs, results_dir, events) raised {type(error).__name__}: {error}") from error
        return _rows(Path(folder) / "results", suite)


def _in_process(registry: Registry) -> dict[str, dict[str, Any]]:
    from harness.run.runner import execute

    with tempfile.TemporaryDirectory(prefix="sam-harness-contract-") as folder:
        suite = _suite(registry, Path(folder))
        for run in suite.runs:
            execute(run, registry, Path(folder) / "results")
        return _rows(Path(folder) / "results", suite)


def reference_rows(registry: Registry, name: str) -> dict[str, dict[str, Any]]:
    """What ``name`` must reproduce: the ``local`` executor's rows (in-process runs for ``local`` itself)."""
    if name == REFERENCE:
        return _in_process(registry)
    if REFERENCE not in registry.names("executor"):
        raise ContractSkip(f"executors are compared with the {REFERENCE!r} executor, which is not loaded")
    if registry not in _reference_rows:
        _reference_rows[registry] = _run(registry, REFERENCE)
    return _reference_rows[registry]


@rule("executor", "same_rows", "a small suite gives the same rows (status, test_acc, steps, grad_evals) as local")
def same_rows(registry: Registry, name: str) -> None:
    rows = _run(registry, name)
    expected = reference_rows(registry, name)
    reference = "runs trained in this process" if name == REFERENCE else f"the {REFERENCE!r} executor"
    for run_id, want in expected.items():
        got = rows[run_id]
        if any(got[key] != want[key] for key in COLUMNS):
            raise ContractViolation(f"run {run_id}: {_shown(got)} where {reference} gave {_shown(want)}")


def _shown(row: dict[str, Any]) -> str:
    text = ", ".join(f"{key}={row[key]!r}" for key in COLUMNS)
    return f"{text} (error: {row['error'].strip().splitlines()[-1]})" if row["error"] else text


RULES = (same_rows,)
