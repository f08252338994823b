"""Run a suite's tuning studies (``harness.suite.tuning``) with Optuna, then the chosen settings' finals.

Each study (one method in one condition) is an Optuna study in one journal file per suite,
``<results>/<suite>/tuning/optuna.journal``, so a study survives a crash and several drivers (or Slurm
jobs on a shared filesystem) can share it. A round asks every study for its next trials (Optuna's grid,
random or TPE sampler, seeded per study), runs all of them as ordinary runs through the executor in one
batch (in parallel, on local, Slurm or Ray), and tells each study the objective its runs reached on the
validation split (``FAIL`` for a crashed or diverged run: it spent its share of the budget too; ``PRUNED``
for a trial its pruner stopped, ``harness.run.pruning``, whose run tells it itself). Rounds
go on until every study has spent its budget; then each study's best trial (the first with the highest
objective; test accuracy is never read) runs on the final seeds, scored on the test set.

Resume: a trial and its run id follow from its setting, so a trial whose run finished is never trained
again (its row is read back), and a trial asked before an interruption but never told (``RUNNING`` in the
journal) is run, or read back, and told on the next call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from harness.contract.run_spec import RunSpec
from harness.plugins import Registry
from harness.results.read import read_runs
from harness.results.store import suite_dir
from harness.suite.checks import Checker
from harness.suite.record import Suite
from harness.suite.tuning import Range, Study, Tuning, studies

JOURNAL = Path("tuning") / "optuna.journal"
#: Row columns a study reads back: the outcome, and what a cost budget counts.
COST_COLUMNS = {"trials": None, "grad_evals": "grad_evals", "train_time_s": "train_time_s"}

Execute = Callable[[Sequence[RunSpec]], None]


@dataclasses.dataclass
class StudyOutcome:
    """What one study did: its trials (setting, objective or None, how it ended), the setting chosen, its finals."""

    study: Study
    trials: list[tuple[dict[str, Any], float | None, str]] = dataclasses.field(default_factory=list)
    chosen: dict[str, Any] | None = None
    finals: list[RunSpec] = dataclasses.field(default_factory=list)


def journal_path(results_dir: str | Path, suite: str) -> Path:
    """The suite's Optuna journal, inside its results folder."""
    return suite_dir(results_dir, suite) / JOURNAL


def open_storage(results_dir: str | Path, suite: str) -> JournalStorage:
    """The suite's Optuna journal storage (file-locked: drivers and pruned trials share it)."""
    path = journal_path(results_dir, suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def run_studies(suite: Suite, registry: Registry, results_dir: str | Path, execute: Execute) -> list[StudyOutcome]:
    """Every study's trials, round by round, then every study's finals; returns what each study did, or
    nothing when a round told no trial (their runs are other processes': run again once they finished)."""
    spec: Tuning = suite.tuning
    checker = Checker(suite.path, ())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(results_dir, suite.name)
    outcomes = [StudyOutcome(study) for study in studies(suite.runs, spec)]
    opened = {
        o.study.name: optuna.create_study(
            study_name=o.study.name,
            storage=storage,
            sampler=_sampler(spec, o.study),
            direction="maximize",
            load_if_exists=True,
        )
        for o in outcomes
        if o.study.space
    }
    rows = _rows(results_dir, suite.name, spec)
    while True:
        pending = []
        for outcome in outcomes:
            if outcome.study.space:
                pending += _next_trials(spec, outcome.study, opened[outcome.study.name], rows, checker, registry)
        if not pending:
            break
        execute([run for _, _, run in pending])
        rows = _rows(results_dir, suite.name, spec)
        told = [
            _tell(optuna_study, number, rows.get(run.run_id), spec.objective) for optuna_study, number, run in pending
        ]
        if not any(told):  # every pending trial is another process's (leased): theirs to finish, no finals yet
            return []
    finals = []
    for outcome in outcomes:
        if outcome.study.space:
            done = opened[outcome.study.name].get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            outcome.trials = [
                (setting(t.params), t.value if t.state == TrialState.COMPLETE else None, t.state.name.lower())
                for t in _by_number(opened[outcome.study.name])
            ]
            if not done:
                continue  # every trial failed: no setting to choose (the report says so)
            best = max(done, key=lambda t: (t.value, -t.number))
            outcome.chosen = setting(best.params)
        else:
            outcome.chosen = {}
        outcome.finals = outcome.study.finals(spec, outcome.chosen, checker, registry)
        finals += outcome.finals
    execute(finals)
    return outcomes


def _next_trials(
    spec: Tuning, study: Study, optuna_study: optuna.Study, rows: Mapping[str, Mapping[str, Any]], checker, registry
) -> list[tuple[optuna.Study, int, RunSpec]]:
    """The trials to run this round: those asked and never told, then new ones while the budget allows."""
    trials = _by_number(optuna_study)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    pending = [
        (optuna_study, t.number, study.trial(spec, setting(t.params), checker, registry, t.number)) for t in running
    ]
    kind, budget = spec.budget
    if kind == "trials":
        room = int(budget) - len(trials)
    else:  # a cost budget: one more trial at a time, while what the told trials cost is under it
        told = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)]
        spent = sum(_cost(rows, study.trial(spec, setting(t.params), checker, registry, t.number), kind) for t in told)
        room = 1 if spent < budget and not running else 0
    if spec.parallel:
        room = min(room, spec.parallel - len(running))
    distributions = _distributions(study.space)
    for _ in range(max(room, 0)):
        trial = optuna_study.ask(distributions)
        pending.append(
            (optuna_study, trial.number, study.trial(spec, setting(trial.params), checker, registry, trial.number))
        )
    return pending


def _tell(optuna_study: optuna.Study, number: int, row: Mapping[str, Any] | None, objective: str) -> bool:
    """Tell a study what its trial's run reached: the objective, PRUNED, or FAIL (crashed, diverged, not
    finite); nothing when the run told it itself (a pruned study's trials do). False when the run has no row
    yet (another process holds it): it is told on a later round or call."""
    if row is None:
        return False
    value = row.get(objective)
    if row.get("status") == "ok" and value is not None and math.isfinite(float(value)):
        optuna_study.tell(number, float(value), skip_if_finished=True)
    else:
        state = TrialState.PRUNED if row.get("status") == "pruned" else TrialState.FAIL
        optuna_study.tell(number, state=state, skip_if_finished=True)
    return True


def _rows(results_dir: str | Path, suite: str, spec: Tuning) -> dict[str, dict[str, Any]]:
    folder = suite_dir(results_dir, suite)
    columns = ["run_id", "status", spec.objective, "grad_evals", "train_time_s"]
    frame = read_runs(folder, columns=columns) if folder.exists() else None
    if frame is None or frame.empty:
        return {}
    return {row["run_id"]: row for row in frame.to_dict("records")}


def _cost(rows: Mapping[str, Mapping[str, Any]], run: RunSpec, kind: str) -> float:
    value = (rows.get(run.run_id) or {}).get(COST_COLUMNS[kind])
    return float(value) if value is not None and math.isfinite(float(value)) else 0.0


def _by_number(optuna_study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return sorted(optuna_study.get_trials(deepcopy=False), key=lambda t: t.number)


def _distributions(space: Mapping[str, Any]) -> dict[str, Any]:
    """Optuna's distributions: a range as floats, a list as the JSON texts of its values (any suite value,
    a block such as nuSAM's ``inner_params`` included, is then a valid choice; ``setting`` decodes them)."""
    return {
        key: FloatDistribution(value.low, value.high, log=value.log)
        if isinstance(value, Range)
        else CategoricalDistribution(_choices(value))
        for key, value in space.items()
    }


def _choices(values: Sequence[Any]) -> list[str]:
    return [json.dumps(value, sort_keys=True) for value in values]


def setting(params: Mapping[str, Any]) -> dict[str, Any]:
    """The suite setting an Optuna trial's ``params`` stand for (list choices are JSON texts)."""
    return {key: json.loads(value) if isinstance(value, str) else value for key, value in params.items()}


class _AskTellGrid(optuna.samplers.GridSampler):
    """Optuna's grid sampler, asked and told outside ``study.optimize``: its ``after_trial`` only stops the
    optimize loop once the grid is visited (``study.stop`` refuses outside it); the budget stops these."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _sampler(spec: Tuning, study: Study) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded from the suite's ``seed`` and the study's name (studies draw independently)."""
    seed = int.from_bytes(hashlib.sha256(f"{spec.seed}:{study.name}".encode()).digest()[:4], "big")
    if spec.sampler == "grid":
        return _AskTellGrid({key: _choices(values) for key, values in study.space.items()}, seed=seed)
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def describe(outcome: StudyOutcome) -> str:
    """One line: the study, its trials, and the setting chosen."""
    if not outcome.study.space:
        return f"{outcome.study.name}: not tuned (no space), finals at its preset's values"
    if outcome.chosen is None:
        return f"{outcome.study.name}: none of {len(outcome.trials)} trials completed; no setting chosen, no finals"
    best = max(value for _, value, _ in outcome.trials if value is not None)
    pruned = sum(state == "pruned" for _, _, state in outcome.trials)
    return (
        f"{outcome.study.name}: {len(outcome.trials)} trials{f' ({pruned} pruned)' if pruned else ''}, chose "
        f"{json.dumps(outcome.chosen, sort_keys=True)} (objective {best:.4f})"
    )
