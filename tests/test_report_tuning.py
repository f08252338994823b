"""The report of a tuning study's folder (``harness.report.studies``): trials stay out of the main table,
finals appear as ``<method> (tuned)`` beside the fixed-setting runs, and the tuning section's numbers
(chosen setting, budget, confidence interval, performance profile) are the ones computed here by hand."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from scipy import stats

from harness.cli import main
from harness.plugins import Registry
from harness.results.columns import identity
from harness.results.store import write_run
from harness.suite import load_suite
from harness.tune.driver import run_studies

from .conftest import write_suite
from .test_tuning import SUITE


def accuracy(rho: float, seed: int) -> float:
    """The fake test accuracy: lower with rho, a point per seed (erm's rho counts as 0)."""
    return 0.5 - rho / 2 + seed / 100


def row(run) -> dict:
    """A trained-looking row: validation prefers a larger rho, the test set a smaller one."""
    rho = run.scheduler_params.get("rho", 0.0)
    return {
        **identity(run),
        "status": "ok",
        "error": "",
        "val_acc": rho,
        "test_acc": accuracy(rho, run.seed),
        "grad_evals": 2.0,
        "train_time_s": 1.0 + rho,
    }


def _folder(tmp_path, with_untuned=True):
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE), registry)
    results = tmp_path / "results"

    def execute(runs):
        for run in runs:
            write_run(results, suite.name, row(run), [])

    run_studies(suite, registry, results, execute)
    if with_untuned:
        execute(suite.runs)  # the fixed settings, as `harness run --no-tuning` writes them
    return results


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tuned")
    results = _folder(tmp)
    out = tmp / "report"
    assert main(["report", str(results), "-o", str(out)]) == 0
    return out, (out / "report.md").read_text()


def _row(markdown: str, start: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``start`` (an escaped ``\\|`` stays in its cell)."""
    line = next(line for line in markdown.splitlines() if line.startswith(start))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip("|"))]


def test_each_study_shows_its_choice_budget_trials_and_final_interval(report):
    _, markdown = report
    assert "## Tuning studies" in markdown
    cells = _row(markdown, "| sam \\| mlp digits noise 0.4 batch 32")
    assert cells[1:5] == ["scheduler.rho=0.1", "3", "6", f"{3 * 1.0 + 0.01 + 0.05 + 0.1:.1f}"]
    assert cells[5] == "scheduler.rho=0.01: 1.00; scheduler.rho=0.05: 5.00; scheduler.rho=0.1: 10.00"
    finals = [accuracy(0.1, seed) for seed in (5, 6)]
    mean = sum(finals) / 2
    half = stats.t.ppf(0.975, 1) * stats.tstd(finals) / math.sqrt(2)
    assert cells[6] == f"{100 * mean:.2f}"
    assert cells[7] == f"[{100 * (mean - half):.2f}, {100 * (mean + half):.2f}] (n=2: wide)"  # two final seeds
    assert _row(markdown, "| erm \\| mlp digits noise 0 batch 32")[1:3] == ["preset values", "0"]


def test_the_summary_puts_tuned_finals_beside_the_fixed_settings_and_no_trial(report):
    out, markdown = report
    table = markdown.split("## Suite tuned")[1].split("\n## ")[0]  # its accuracy, cost and sharpness tables
    assert "| sam (tuned) " in table and "| sam " in table and "| looksam (tuned) " in table
    summary = pd.read_parquet(out / "summary.parquet")
    tuned = summary.set_index(["noise_rate", "method"])
    assert tuned.loc[(0.4, "sam (tuned)"), "test_acc_mean"] == pytest.approx(accuracy(0.1, 5.5))
    assert tuned.loc[(0.4, "sam"), "test_acc_mean"] == pytest.approx(accuracy(0.05, 0.5))  # seeds 0, 1 at rho 0.05
    assert tuned.loc[(0.4, "sam (tuned)"), "seeds"] == "5,6"  # the 3 trials (seed 0) did not enter the mean
    assert "missing" not in markdown  # finals and fixed-setting runs are each complete on their own seeds


def test_the_performance_profile_is_the_fraction_of_conditions_within_tau(report):
    """Tuned means: erm 0.555, sam 0.505 (5 points behind), looksam 0.455 (10 behind), in both conditions;
    train time 1.0, 1.1, 1.2 (sam 1.1x, looksam 1.2x the cheapest)."""
    _, markdown = report
    accuracy_part = markdown.split("## Performance profile: accuracy")[1].split("##")[0]
    assert _row(accuracy_part, "| erm (tuned)")[1:] == ["1.00"] * 5
    assert _row(accuracy_part, "| sam (tuned)")[1:] == ["0.00", "0.00", "0.00", "0.00", "1.00"]  # tau 0, .5, 1, 2, 5
    assert _row(accuracy_part, "| looksam (tuned)")[1:] == ["0.00"] * 5
    cost_part = markdown.split("## Performance profile: cost")[1].split("##")[0]
    assert _row(cost_part, "| sam (tuned)")[1:] == ["0.00", "1.00", "1.00", "1.00", "1.00"]  # tau 1, 1.25, ...


def test_the_sensitivity_and_profile_figures_are_written_and_shown(report):
    out, markdown = report
    names = [p.name for p in out.glob("sensitivity-*.png")]
    assert sorted(names) == [
        "sensitivity-tuned-digits-mlp-0-scheduler.rho.png",
        "sensitivity-tuned-digits-mlp-0.4-scheduler.rho.png",
    ]
    assert all(f"]({name})" in markdown for name in [*names, "performance_profiles.png"])
    assert "Tuning studies" in (out / "report.html").read_text()


def test_a_folder_without_studies_has_no_tuning_section(tmp_path):
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path / "s.yaml", SUITE), registry)
    results = tmp_path / "results"
    for run in suite.runs:
        write_run(results, suite.name, row(run), [])
    assert main(["report", str(results), "-o", str(tmp_path / "report")]) == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Tuning" not in markdown and "(tuned)" not in markdown and "sensitivity" not in markdown


def test_tuned_against_untuned_shows_both_and_the_difference(report):
    """sam at noise 0.4: fixed rho 0.05 on seeds 0, 1; tuned rho 0.1 on seeds 5, 6."""
    _, markdown = report
    part = markdown.split("## Tuned against untuned")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in part.splitlines() if line.startswith("| tuned")]
    cells = next(row for row in rows if row[3:5] == ["0.4", "sam"])
    untuned = [accuracy(0.05, seed) for seed in (0, 1)]
    tuned = [accuracy(0.1, seed) for seed in (5, 6)]
    half = stats.t.ppf(0.975, 1) * stats.tstd(untuned) / math.sqrt(2)
    assert cells[5] == f"{100 * sum(untuned) / 2:.2f} +- {100 * half:.2f}"
    assert cells[7] == f"{100 * (sum(tuned) - sum(untuned)) / 2:+.2f}"


def test_a_folder_of_tuned_runs_only_takes_its_cost_ratios_against_the_tuned_erm_and_sam(tmp_path):
    """Train time 1.0 + rho: erm 1.0, sam's finals at rho 0.1 1.1, looksam's at rho 0.2 1.2."""
    results = _folder(tmp_path, with_untuned=False)
    out = tmp_path / "report"
    assert main(["report", str(results), "-o", str(out)]) == 0
    summary = pd.read_parquet(out / "summary.parquet").set_index(["noise_rate", "method"])
    assert summary.loc[(0.4, "looksam (tuned)"), "train_time_vs_erm"] == pytest.approx(1.2)
    assert summary.loc[(0.4, "looksam (tuned)"), "train_time_vs_sam"] == pytest.approx(1.2 / 1.1)
