"""The result columns, declared once: name, Arrow type, meaning, and which record fills each.

A run file has one row per run (``RUN_COLUMNS``), a history file one row per epoch (``HISTORY_COLUMNS``), a
step-trace file one row per traced step (``STEP_COLUMNS``, then one float64 column per numeric value the step's
``StepInfo.extras`` and its scheduler's ``diagnostics()`` hold).
``harness.results.store`` builds its Arrow schemas from these declarations, the runner's ``result_row`` and the
crash writer (``harness.execution.worker.record_crash``) fill the identity columns through ``identity``, and the
column tables of ``results/README.md`` are generated from them (``python -m harness.results.columns``; a test
checks the file is up to date). A run row also holds one ``p_*`` column per resolved hyperparameter
(``harness.results.hyperparameters``); any other column beyond these is a plugin metric.

``filled_by`` says where a run column's value comes from: ``spec`` (the ``RunSpec``, also in a crash
row), ``outcome`` (status and error, also in a crash row), ``clock`` (the run's start and end, also in a
crash row), ``training`` (what training measured), ``environment`` (the process and machine) or
``writer`` (``harness.results.store.write_run``). The module imports neither torch nor the runner.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from harness.results.hyperparameters import hyperparameters

TIMESTAMP = pa.timestamp("us", tz="UTC")
#: The ``filled_by`` values whose columns a crash row holds (every other column of a crash row is null).
CRASH_FILLED = ("spec", "outcome", "clock")


@dataclass(frozen=True)
class Column:
    """One result column. ``from_run`` reads a ``spec`` column's value from a ``RunSpec``."""

    name: str
    type: pa.DataType
    meaning: str
    filled_by: str = "training"
    from_run: Callable[[Any], Any] | None = None


def _spec(name: str, type: pa.DataType, meaning: str) -> Column:
    """A column holding the ``RunSpec`` attribute of the same name."""
    return Column(name, type, meaning, "spec", operator.attrgetter(name))


def _spec_json(name: str, meaning: str) -> Column:
    """A column holding a ``RunSpec`` mapping attribute of the same name, as sorted JSON."""
    return Column(
        name,
        pa.string(),
        f"{meaning}, as JSON",
        "spec",
        lambda run: json.dumps(dict(getattr(run, name)), sort_keys=True),
    )


RUN_COLUMNS: tuple[Column, ...] = (
    _spec("run_id", pa.string(), "`<method>-s<seed>-<hash of the resolved config>`"),
    _spec("suite", pa.string(), "suite name"),
    _spec("method", pa.string(), "method name"),
    _spec("preset", pa.string(), "preset the method came from ('' for inline methods)"),
    _spec("optimizer", pa.string(), "optimizer plugin name"),
    _spec_json("optimizer_params", "its resolved hyperparameters"),
    _spec("scheduler", pa.string(), "perturbation scheduler plugin name"),
    _spec_json("scheduler_params", "its parameters (rho, ...)"),
    _spec_json("base_optimizer", "timm base optimizer settings"),
    _spec_json("lr_schedule", "timm learning-rate schedule settings"),
    _spec("model", pa.string(), "model plugin name"),
    _spec_json("model_params", "its resolved parameters"),
    _spec("dataset", pa.string(), "dataset plugin name"),
    _spec_json("dataset_params", "its resolved parameters"),
    _spec("noise_rate", pa.float64(), "label noise rate (0 for clean data)"),
    _spec("seed", pa.int64(), "run seed"),
    _spec("epochs", pa.int64(), "epochs asked for"),
    Column("epochs_completed", pa.int64(), "epochs actually finished"),
    _spec("batch_size", pa.int64(), "training batch size"),
    Column("steps", pa.int64(), "optimizer steps taken"),
    Column(
        "status",
        pa.string(),
        "`ok`, `failed`, `diverged` or `pruned` (a tuning trial its pruner stopped early)",
        "outcome",
    ),
    Column("error", pa.string(), "error text ('' when ok)", "outcome"),
    Column("test_acc", pa.float64(), "final test accuracy (fraction in [0, 1])"),
    Column("best_test_acc", pa.float64(), "best test accuracy over the epochs"),
    Column("test_loss", pa.float64(), "final test loss"),
    Column("train_loss", pa.float64(), "mean training loss of the last epoch"),
    Column("train_acc", pa.float64(), "final accuracy on the training set (eval mode, labels trained on)"),
    Column("train_acc_clean", pa.float64(), "with label noise: training accuracy on the clean samples"),
    Column(
        "train_acc_noisy_given",
        pa.float64(),
        "with label noise: accuracy on the noisy samples against their given (wrong) labels (memorization)",
    ),
    Column(
        "train_acc_noisy_true",
        pa.float64(),
        "with label noise: accuracy on the noisy samples against their true labels",
    ),
    Column("val_acc", pa.float64(), "final validation accuracy (null without a validation split)"),
    Column("best_val_acc", pa.float64(), "best validation accuracy over the epochs"),
    Column(
        "references",
        pa.string(),
        "every published cell the run is compared with, one per suite `reference:` block it matches: paper, "
        "table, method (the paper's), metric, test_acc (fraction), reported (`final`: compare with test_acc, "
        "`best`: with best_test_acc), differs (where the paper's setting differs), as a JSON list "
        "(folders written before it hold one reference_test_acc and reference_source instead; the report reads both)",
        "spec",
        lambda run: json.dumps([dataclasses.asdict(cell) for cell in run.references]),
    ),
    _spec("extension", pa.string(), "why the run applies its method outside its paper's setting ('' when it does not)"),
    _spec("conditions", pa.string(), "what the suite's `conditions:` set on this run, and why ('' when none)"),
    _spec("role", pa.string(), "`trial` or `final` for a run of a tuning study (`harness tune`), '' otherwise"),
    _spec(
        "study",
        pa.string(),
        "the tuning study of a trial or final: `<method> | <model> <dataset> noise <rate> batch <size>`",
    ),
    _spec("tuned", pa.string(), 'JSON of the setting a trial tries or a final runs with (`{"scheduler.rho": 0.05}`)'),
    _spec("objective", pa.string(), "the result column a tuning study selects on (`val_acc`); '' otherwise"),
    _spec("pruner", pa.string(), "JSON of the pruning rule a trial ran under (`tuning.pruner`); '' for none"),
    _spec("trial_number", pa.int64(), "the trial's number in its Optuna study (null outside a study)"),
    Column("train_time_s", pa.float64(), "train-only wall-clock"),
    Column("eval_time_s", pa.float64(), "evaluation wall-clock (excluded from train time)"),
    Column("step_time_median_s", pa.float64(), "median optimizer step time"),
    Column("step_time_p10_s", pa.float64(), "10th percentile of the step times"),
    Column("step_time_p90_s", pa.float64(), "90th percentile of the step times"),
    Column("metric_time_s", pa.float64(), "wall-clock of the metric plugins (excluded from train time)"),
    Column("checkpoint_time_s", pa.float64(), "wall-clock of writing checkpoints (excluded from train time)"),
    Column("restarts", pa.int64(), "times the run resumed from its checkpoint (0: trained in one go)"),
    Column("restart_time_s", pa.float64(), "wall-clock of reading and restoring checkpoints (not train time)"),
    _spec("target_acc", pa.float64(), "test accuracy the run's time-to-target is measured against (null when none)"),
    Column("time_to_target_s", pa.float64(), "train time when the test accuracy first reached `target_acc`"),
    Column("throughput_samples_per_s", pa.float64(), "training samples per second of train time"),
    Column("sam_fraction", pa.float64(), "%SAM as a fraction: share of steps that were perturbed"),
    Column("perturbed_steps", pa.int64(), "perturbed steps"),
    Column(
        "grad_evals",
        pa.int64(),
        "gradient evaluations in full-batch passes (a pass on part of the batch, m-sharpness's or ESAM's, counts "
        "its share), rounded to an integer",
    ),
    Column("optimizer_state_bytes", pa.int64(), "bytes of every tensor the optimizer holds between steps"),
    Column(
        "perturbation_state_bytes",
        pa.int64(),
        "of those, the bytes beyond the base optimizer's state: what the perturbation holds (0 for ERM)",
    ),
    Column("peak_rss_bytes", pa.int64(), "process peak RSS", "environment"),
    Column("peak_device_bytes", pa.int64(), "CUDA peak allocated bytes of the training epochs (null on CPU)"),
    Column("device", pa.string(), "torch device", "environment"),
    Column("device_name", pa.string(), "its name", "environment"),
    Column("host", pa.string(), "host name", "environment"),
    Column("torch_version", pa.string(), "torch version", "environment"),
    Column("harness_version", pa.string(), "sam-harness version", "environment"),
    Column(
        "git_commit",
        pa.string(),
        "the commit of the sam-harness checkout that ran (+dirty: with uncommitted changes; null: not a checkout)",
        "environment",
    ),
    Column(
        "plugin_versions", pa.string(), "providing distribution and version per component kind, as JSON", "environment"
    ),
    Column(
        "config",
        pa.string(),
        "the whole resolved run configuration, what run_id hashes, as JSON",
        "spec",
        lambda run: json.dumps(run.config(), sort_keys=True),
    ),
    Column("schema_version", pa.int32(), "version of this layout (2: with the `p_*` columns)", "writer"),
    Column("started_at", TIMESTAMP, "wall-clock start of the run", "clock"),
    Column("finished_at", TIMESTAMP, "wall-clock end of the run", "clock"),
)

HISTORY_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "the run", "writer"),
    Column("epoch", pa.int64(), "epoch number (from 1)"),
    Column("step", pa.int64(), "optimizer steps so far"),
    Column("lr", pa.float64(), "learning rate at the end of the epoch"),
    Column("rho", pa.float64(), "perturbation radius of the epoch's last step"),
    Column("train_loss", pa.float64(), "mean training loss of the epoch"),
    Column("train_acc", pa.float64(), "training-set accuracy after the epoch (with `train_eval: epoch`)"),
    Column("test_loss", pa.float64(), "test loss after the epoch"),
    Column("test_acc", pa.float64(), "test accuracy after the epoch"),
    Column("val_acc", pa.float64(), "validation accuracy after the epoch (null without a validation split)"),
    Column("train_acc_clean", pa.float64(), "as the run column, after the epoch (with `train_eval: epoch`)"),
    Column("train_acc_noisy_given", pa.float64(), "as the run column, after the epoch (with `train_eval: epoch`)"),
    Column("train_acc_noisy_true", pa.float64(), "as the run column, after the epoch (with `train_eval: epoch`)"),
    Column("train_time_s", pa.float64(), "cumulative train-only wall-clock"),
    Column("sam_fraction", pa.float64(), "%SAM so far"),
    Column("grad_evals", pa.int64(), "gradient evaluations so far"),
)

#: The step trace's own columns (``harness.run.trace``), written with ``trace_every: N``; the variant's values
#: follow them, a float64 column each (``grad_norm``, ``surrogate_gap``, ``cos_g_gp``, ``threshold``, ...).
STEP_COLUMNS: tuple[Column, ...] = (
    Column("run_id", pa.string(), "the run", "writer"),
    Column("step", pa.int64(), "the step's number (from 1; a multiple of `trace_every`)"),
    Column("epoch", pa.int64(), "its epoch (from 1)"),
    Column("perturbed", pa.bool_(), "whether the step ran the second, perturbed pass"),
    Column("rho", pa.float64(), "the perturbation radius of the step (0 when not perturbed)"),
    Column("sam_fraction", pa.float64(), "%SAM up to and including the step (every step counts, traced or not)"),
)


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    """The Arrow schema of ``columns``, in their order (names must be unique)."""
    names = [column.name for column in columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"result columns declared twice: {', '.join(duplicates)}")
    return pa.schema([(column.name, column.type) for column in columns])


def identity(run: Any) -> dict[str, Any]:
    """The ``spec`` columns of ``run`` (a ``RunSpec``) and its ``p_*`` hyperparameter columns
    (``harness.results.hyperparameters``): what both a result row and a crash row hold."""
    spec = {column.name: column.from_run(run) for column in RUN_COLUMNS if column.from_run is not None}
    return {**spec, **hyperparameters(run.config())}


def crash_row(run: Any, error: str, now: Any) -> dict[str, Any]:
    """Every run column of a run whose worker died: identity, ``failed`` and ``error``, ``now``; the rest null."""
    row: dict[str, Any] = dict.fromkeys(column.name for column in RUN_COLUMNS if column.filled_by != "writer")
    row.update(identity(run), status="failed", error=error, started_at=now, finished_at=now)
    return row


def markdown_table(columns: Sequence[Column]) -> str:
    """``columns`` as the Markdown table of ``results/README.md``: column, Arrow type, meaning."""
    lines = ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| {column.name} | {column.type} | {column.meaning} |" for column in columns]
    return "\n".join(lines) + "\n"


def readme_tables() -> Mapping[str, str]:
    """The generated sections of ``results/README.md``, by heading."""
    return {
        "## Run table": markdown_table(RUN_COLUMNS),
        "## History table": markdown_table(HISTORY_COLUMNS),
        "## Step trace table": markdown_table(STEP_COLUMNS),
    }


def render_readme(text: str) -> str:
    """``text`` (``results/README.md``) with each generated table replaced by the declaration's.

    A generated table follows its heading and a blank line and runs to the next blank line.
    """
    for heading, table in readme_tables().items():
        start = text.index(heading + "\n\n") + len(heading) + 2
        end = text.find("\n\n", start)
        text = text[:start] + table + (text[end + 1 :] if end != -1 else "")
    return text


if __name__ == "__main__":  # python -m harness.results.columns: rewrite results/README.md's tables
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "results" / "README.md"
    readme.write_text(render_readme(readme.read_text()))
