"""Results folders -> one table of runs and one of history, checked to be safe to average over seeds.

A folder argument is either a suite folder (``RESULTS_DIR/<suite>``, holding ``*.parquet`` run
files) or a folder of suite folders (``RESULTS_DIR``). Several folders, from several suites or
machines, are read together; each run row keeps the folder it came from in ``source``. Files that
cannot be read, or are not run (history) files, are skipped (``harness.results.read.read_folder``) and
passed to ``on_skip``: one bad file never blocks a report or a comparison.

Runs are averaged per group (suite, dataset, model, noise rate, method) only when their resolved
configurations (the ``config`` column) agree in everything but the seed and provenance; otherwise
``IncompatibleRunsError`` names the group and the differing keys. The same seed twice in a group
(the same run read from two folders) is refused as well: it would count twice.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import HarnessError
from harness.results.read import SUBFOLDERS, Skipped, read_folder

CONDITION = ("dataset", "model", "noise_rate")
GROUP = ("suite", *CONDITION, "method")
#: Config keys that say where or with what a run was made, not what was run.
PROVENANCE_KEYS = frozenset(
    {
        "harness_version",
        "torch_version",
        "host",
        "device_name",
        "plugin_versions",
        "git_commit",
        "started_at",
        "finished_at",
        "source",
    }
)
#: A folder holding this file is a report's output, never a suite folder.
REPORT_MARKER = "report.md"
#: A suite folder's subfolders of per-run files (``harness.results.store``): never suite folders themselves.
HISTORY, STEPS = SUBFOLDERS["history"], SUBFOLDERS["steps"]


class IncompatibleRunsError(HarnessError):
    """Runs that would be averaged differ in more than their seed."""


@dataclass(frozen=True)
class Results:
    """Run rows, history rows and step-trace rows read from one or more folders."""

    runs: pd.DataFrame
    history: pd.DataFrame
    folders: tuple[Path, ...]
    skipped: tuple[Skipped, ...] = ()
    steps: pd.DataFrame = field(default_factory=pd.DataFrame)


def suite_folders(path: str | Path) -> list[Path]:
    """``path`` itself when it holds run files, else its subfolders that do (never a suite's ``history/`` or
    ``steps/``, nor a hidden folder such as the index's ``.index/``: none holds run files)."""
    folder = Path(path)
    if not folder.is_dir():
        raise HarnessError(f"{folder}: no such folder; expected RESULTS_DIR or RESULTS_DIR/<suite>")
    what = {HISTORY: "history folder (one row per epoch)", STEPS: "step-trace folder (one row per traced step)"}
    if folder.resolve().name in what and _holds_runs(folder.resolve().parent):
        raise HarnessError(
            f"{folder}: a suite's {what[folder.resolve().name]}, not run results; "
            f"give its suite folder: {folder.resolve().parent}"
        )
    if _holds_runs(folder):
        return [folder]
    found = sorted(
        child
        for child in folder.iterdir()
        if child.is_dir()
        and child.name not in (HISTORY, STEPS)
        and not child.name.startswith(".")
        and _holds_runs(child)
    )
    if not found:
        raise HarnessError(
            f"{folder}: no result files (*.parquet) here or in its subfolders; run a suite first: harness run SUITE"
        )
    return found


def _holds_runs(folder: Path) -> bool:
    return not (folder / REPORT_MARKER).exists() and any(
        not file.name.startswith(".") for file in folder.glob("*.parquet")
    )


def load(paths: Iterable[str | Path], on_skip: Callable[[Skipped], None] | None = None) -> Results:
    """Every run and history row under ``paths`` (each a suite folder or a folder of them).

    A file skipped (damaged, or not a run or history file) is passed to ``on_skip`` as soon as it is
    found, and listed in ``Results.skipped``; a folder none of whose files is a run file is left out.
    Raises ``HarnessError`` when no run file at all can be read.
    """
    paths = list(paths)
    candidates = list(dict.fromkeys(f.resolve() for p in paths for f in suite_folders(p)))
    folders, runs, history, steps, skipped = [], [], [], [], []
    for folder in candidates:
        found, curves = read_folder(folder, "run"), read_folder(folder / HISTORY, "history")
        traced = read_folder(folder / STEPS, "steps")
        for file in (*found.skipped, *curves.skipped, *traced.skipped):
            skipped.append(file)
            if on_skip is not None:
                on_skip(file)
        if found.rows.empty:
            continue
        rows = found.rows
        rows["source"] = str(folder)
        rows["suite"] = rows["suite"].fillna(folder.name)
        folders.append(folder)
        runs.append(rows)
        history.append(curves.rows.assign(source=str(folder)))
        steps.append(traced.rows.assign(source=str(folder)))
    if not runs:
        shown = "; ".join(map(str, skipped[:3])) + (f"; and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        raise HarnessError(f"{', '.join(map(str, paths))}: no readable run file" + (f" ({shown})" if skipped else ""))
    runs_table = pd.concat(runs, ignore_index=True) if len(runs) > 1 else runs[0]
    history_table, steps_table = (
        pd.concat([t for t in tables if not t.empty] or tables[:1], ignore_index=True) for tables in (history, steps)
    )
    return Results(runs_table, history_table, tuple(folders), tuple(skipped), steps_table)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"optimizer": {"rho": 0.05}}`` -> ``{"optimizer.rho": 0.05}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value, sort_keys=True) if isinstance(value, list) else value
    return flat


def configuration(config_json: str | None, *, drop: Iterable[str] = ()) -> dict[str, Any]:
    """The flattened ``config`` of a run, without provenance and without the top-level keys in ``drop``."""
    config = json.loads(config_json) if isinstance(config_json, str) and config_json else {}
    dropped = PROVENANCE_KEYS | set(drop)
    return flatten({k: v for k, v in config.items() if k not in dropped})


def configuration_key(config_json: str | None, *, drop: Iterable[str] = ()) -> str:
    """A canonical string of ``configuration(...)``: equal for runs of the same configuration."""
    return _canonical(configuration(config_json, drop=drop))


def configuration_keys(config_json: str | None) -> tuple[str, str]:
    """``configuration_key`` of a config with and without its seed, parsing it once."""
    config = configuration(config_json)
    return _canonical(config), _canonical({key: value for key, value in config.items() if key != "seed"})


def _canonical(configuration: Mapping[str, Any]) -> str:
    return json.dumps(configuration, sort_keys=True, default=str)


def group_label(group: Mapping[str, Any] | Sequence[Any]) -> str:
    """``suite quickstart, digits / small-cnn / noise 0, method sam`` for a GROUP tuple or mapping."""
    values = dict(zip(GROUP, group, strict=True)) if not isinstance(group, Mapping) else group
    return (
        f"suite {values['suite']}, {values['dataset']} / {values['model']} / noise {values['noise_rate']:g}, "
        f"method {values['method']}"
    )


def check_averageable(runs: pd.DataFrame, seedless: Sequence[str | None] | None = None) -> None:
    """Raise ``IncompatibleRunsError`` when a group's runs differ in more than the seed, or repeat a seed.

    Each configuration is parsed once (``seedless``: each run's ``configuration_key`` without the seed,
    None without a config, when the caller has them); only a group whose configurations are not all
    alike is compared key by key (to name the keys), so the cost grows with the runs, not runs x keys.
    """
    if seedless is None:
        seedless = [configuration_key(c, drop=("seed",)) if isinstance(c, str) and c else None for c in runs["config"]]
    rows_of = runs[[*GROUP, "run_id", "config", "source", "seed"]].assign(seedless=list(seedless))
    for group, rows in rows_of.groupby(list(GROUP), sort=True, dropna=False):
        differing = []
        if rows["seedless"].nunique() > 1:
            configs = {
                run_id: configuration(config, drop=("seed",))
                for run_id, config in zip(rows["run_id"], rows["config"], strict=True)
                if isinstance(config, str) and config
            }
            differing = _differing_keys(configs)
        if differing:
            shown = "; ".join(differing[:5]) + (f"; and {len(differing) - 5} more" if len(differing) > 5 else "")
            sources = sorted(set(rows["source"]))
            if len(sources) == 1:  # a rerun with other settings (--set) wrote into the same folder
                advice = (
                    f"They are all in {sources[0]}: move the runs of one configuration (<run_id>.parquet and "
                    "history/<run_id>.parquet) to another folder, or run each configuration with its own --results-dir."
                )
            else:
                advice = "Report the folders separately, or rerun them with one configuration."
            raise IncompatibleRunsError(
                f"{group_label(group)}: the runs differ in more than the seed, so they cannot be averaged: {shown}. "
                + advice
            )
        repeated = rows[rows.duplicated("seed", keep=False)]
        if not repeated.empty:
            where = ", ".join(f"{r} in {s}" for r, s in zip(repeated["run_id"], repeated["source"], strict=True))
            raise IncompatibleRunsError(
                f"{group_label(group)}: seed {repeated['seed'].iloc[0]} appears more than once ({where}); "
                "it would count twice. Report the folders separately."
            )


def _differing_keys(configs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``key (value in run_a, value in run_b)`` for every key whose value is not the same in all configs."""
    keys = sorted({key for config in configs.values() for key in config})
    differing = []
    for key in keys:
        values: dict[str, str] = {}
        for run_id, config in configs.items():
            values.setdefault(json.dumps(config.get(key, "<absent>"), default=str), run_id)
        if len(values) > 1:
            examples = ", ".join(f"{value} in {run_id}" for value, run_id in list(values.items())[:2])
            differing.append(f"{key} ({examples})")
    return differing
