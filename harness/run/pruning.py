"""A tuning trial that reports its objective after every epoch, and stops when its study's pruner says so.

A trial run (``RunSpec.role == "trial"``) of a suite whose ``tuning:`` block names a ``pruner`` opens its
study in the suite's Optuna journal (``harness.tune.driver.journal_path``, beside its results, so a worker
of any executor on a shared filesystem reaches it), reports the objective after each epoch (the step is
the epoch; ``best_val_acc``: the best so far) and asks the pruner, which compares it with the other
trials of the study at that epoch. A pruned run ends ``pruned``, its row and history written like any
other, and the run itself tells its trial how it ended (``COMPLETE`` with the objective, ``PRUNED`` or
``FAIL``), so the pruner of a trial running beside it sees it at once rather than when the driver's round
ends. Optuna is imported only by runs that prune.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from harness.contract.run_spec import RunSpec


class Pruned(Exception):
    """Raised after an epoch whose objective the trial's pruner judged hopeless."""


class TrialPruning:
    """The Optuna trial a pruned run reports to (created by ``for_run``)."""

    def __init__(self, run: RunSpec, results_dir: str | Path) -> None:
        import optuna

        from harness.suite.tuning import build_pruner
        from harness.tune.driver import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(results_dir, run.suite)
        self.study = optuna.load_study(study_name=run.study, storage=storage, pruner=build_pruner(run.pruner))
        study_id = storage.get_study_id_from_name(run.study)
        self.trial = optuna.trial.Trial(
            self.study, storage.get_trial_id_from_study_id_trial_number(study_id, run.trial_number)
        )
        self.run = run
        self.best = -math.inf

    def epoch_ended(self, epoch: int, values: dict[str, Any]) -> None:
        """Report the epoch's objective; raise ``Pruned`` when the pruner stops the trial."""
        value = values.get("val_acc")
        if value is None or not math.isfinite(value):
            return
        self.best = max(self.best, value)
        reported = self.best if self.run.objective == "best_val_acc" else value
        self.trial.report(reported, epoch)
        if self.trial.should_prune():
            raise Pruned(
                f"pruned after epoch {epoch} of {self.run.epochs} by {self.run.pruner} "
                f"({self.run.objective} {reported:.4f} at that epoch)"
            )

    def finished(self, row: dict[str, Any]) -> None:
        """Tell the trial how its run ended (the driver, reading the row later, then has nothing to tell)."""
        import optuna

        value = row.get(self.run.objective)
        if row["status"] == "ok" and value is not None and math.isfinite(float(value)):
            self.study.tell(self.run.trial_number, float(value), skip_if_finished=True)
        else:
            state = optuna.trial.TrialState.PRUNED if row["status"] == "pruned" else optuna.trial.TrialState.FAIL
            self.study.tell(self.run.trial_number, state=state, skip_if_finished=True)


def for_run(run: RunSpec, results_dir: str | Path) -> TrialPruning | None:
    """The pruning of ``run``: None unless it is a trial of a study with a pruner."""
    if run.role != "trial" or not run.pruner or run.trial_number is None:
        return None
    return TrialPruning(run, results_dir)
