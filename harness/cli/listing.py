"""How ``validate`` and ``run --dry-run`` print a suite's expanded runs (a summary beyond
``SUMMARY_OVER`` runs unless ``--all-runs``).
"""

from __future__ import annotations

import sys
from collections import Counter

#: ``validate`` and ``run --dry-run`` list a suite of more runs than this as its first and last
#: ``SUMMARY_ENDS`` runs and the count of each axis value, unless ``--all-runs``.
SUMMARY_OVER, SUMMARY_ENDS = 50, 5


def print_runs(suite, *, every: bool) -> None:
    """The expanded runs as a table: all of them, or (beyond ``SUMMARY_OVER`` unless ``every``) the first
    and last ``SUMMARY_ENDS`` and a count per axis value, since printing 20,000 rows took most of a
    ``validate``."""
    from rich.console import Console
    from rich.table import Table

    runs = suite.runs
    summarised = not every and len(runs) > SUMMARY_OVER
    title = f"suite {suite.name}: {len(runs)} runs"
    if summarised:
        title += f" (the first and last {SUMMARY_ENDS}; --all-runs lists every run)"
    table = Table(title=title, title_justify="left")
    columns = ("run_id", "method", "optimizer", "scheduler", "model", "dataset", "noise", "seed", "epochs")
    for column in columns:
        table.add_column(column)
    for index, run in enumerate(runs[:SUMMARY_ENDS] + runs[-SUMMARY_ENDS:] if summarised else runs):
        if summarised and index == SUMMARY_ENDS:
            table.add_row(f"... {len(runs) - 2 * SUMMARY_ENDS} more", *("..." for _ in columns[1:]))
        table.add_row(
            run.run_id,
            run.method,
            _with_params(run.optimizer, run.optimizer_params),
            _with_params(run.scheduler, run.scheduler_params),
            run.model,
            run.dataset,
            f"{run.noise_rate:g}",
            str(run.seed),
            str(run.epochs),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    if summarised:
        print(_axis_counts(runs))
    for title, (describe, counted) in SECTIONS.items():
        print(_section(title, runs, describe, counted, summarised=summarised))


def _section(title: str, runs, describe, counted, *, summarised: bool) -> str:
    """``title:`` and, per run it says something about, ``describe(run)``; summarised, each of the
    ``counted(run)`` texts with the number of runs that have it."""
    if summarised:
        counts = Counter(text for run in runs for text in counted(run))
        lines = [f"  {count} runs: {text}" for text, count in counts.items()]
    else:
        lines = [f"  {run.run_id}: {describe(run)}" for run in runs if describe(run)]
    return f"{title}:\n" + "\n".join(lines) if lines else f"{title}: none"


def _cell(cell, *, value: bool) -> str:
    """A published cell: paper, table, what it reports and where its setting differs; with ``value``, also
    the paper's method and the value as an accuracy (summarised, the runs are counted per paper and table)."""
    shown = f" {100 * cell.test_acc:.2f}%" + (" (published as test error)" if cell.metric == "test_error" else "")
    differs = f" [differs: {cell.differs}]" if cell.differs else ""
    if not value:
        return f"{cell.paper} {cell.table} {cell.reported}{differs}"
    return f"{cell.source} {cell.reported}{shown}{differs}"


def _extension(run) -> str:
    return f"[extension: {run.extension}]" if run.extension else ""


#: What ``print_runs`` lists after the table, per run: what the suite's conditions set (and why), the
#: published cells attached (``final``: compared with test_acc, ``best``: with best_test_acc) and the
#: extensions (a method outside its paper's setting). ``(per run, summarised texts)`` for each.
SECTIONS = {
    "conditions": (lambda run: run.conditions, lambda run: [run.conditions] if run.conditions else []),
    "references (final: compared with test_acc, best: with best_test_acc)": (
        lambda run: "; ".join(_cell(cell, value=True) for cell in run.references),
        lambda run: [_cell(cell, value=False) for cell in run.references],
    ),
    "extensions": (_extension, lambda run: [_extension(run)] if run.extension else []),
}


def _axis_counts(runs) -> str:
    """One line per grid axis: each value and its number of runs (a long axis: how many values, and its ends)."""
    axes = {
        "method": lambda run: run.method,
        "model": lambda run: _with_params(run.model, run.model_params),
        "dataset": lambda run: _with_params(run.dataset, run.dataset_params),
        "noise rate": lambda run: f"{run.noise_rate:g}",
        "batch size": lambda run: str(run.batch_size),
        "seed": lambda run: str(run.seed),
    }
    lines = []
    for axis, value_of in axes.items():
        counts = Counter(value_of(run) for run in runs)
        if len(counts) <= 2 * SUMMARY_ENDS:
            shown = ", ".join(f"{value} ({count})" for value, count in counts.items())
        else:
            values = list(counts)
            shown = f"{len(values)} values: {', '.join(values[:3])}, ..., {values[-1]}"
        lines.append(f"  {axis}: {shown}")
    return "runs per axis value:\n" + "\n".join(lines)


def _with_params(name: str, params) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{name}({shown})" if shown else name


def print_studies(suite) -> None:
    """A suite's tuning studies: the protocol, each method's space, and how many trial and final runs."""
    import math

    from harness.suite.tuning import Range, studies

    spec = suite.tuning
    found = studies(suite.runs, spec)
    kind, budget = spec.budget
    tuned = [study for study in found if study.space]
    picked = ", seeded subsample of each grid" if spec.subsample and spec.sampler == "grid" else ""
    print(
        f"tuning: {len(found)} studies (method x condition; {len(tuned)} tuned), objective {spec.objective} on the "
        f"validation split, budget {kind} {budget:g} per tuned study, sampler {spec.sampler} (seed {spec.seed}"
        f"{picked}); trials on seed {spec.trial_seed}, finals on seeds {list(spec.final_seeds)} scored on test"
    )
    for method in dict.fromkeys(study.method for study in found):
        space = spec.spaces.get(method)
        if not space:
            print(f"  {method}: not tuned (no space): finals at its preset's values")
            continue
        shown = ", ".join(
            f"{key} in [{value.low:g}, {value.high:g}]{' (log)' if value.log else ''}"
            if isinstance(value, Range)
            else f"{key} in {list(value)}"
            for key, value in space.items()
        )
        points = (
            ""
            if any(isinstance(v, Range) for v in space.values())
            else f" ({math.prod(map(len, space.values()))} points)"
        )
        print(f"  {method}: {shown}{points}")
    trials = (
        f"{len(tuned) * int(budget)} trial runs"
        if kind == "trials"
        else f"trial runs until each study spent {budget:g} {kind}"
    )
    print(f"  {trials} and {len(found) * len(spec.final_seeds)} final runs")
