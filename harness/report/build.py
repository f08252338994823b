"""``harness report``: results folders -> report.md, report.html, the figures as PNG and PDF, summary.parquet.

The report reads one or more results folders (``harness.report.gather``), refuses to average runs whose
configurations differ in more than the seed, summarizes each condition and method over seeds with
significance tests against a reference method (``harness.report.summary``), lists every failed or
diverged run with its error, and draws the figures (``harness.report.figures``). The Markdown and the
HTML show the same tables (``harness.report.tables``), with what was run (``harness.report.run_settings``) and
where (``harness.report.provenance``); each figure is written as a PNG (linked from the Markdown) and a PDF
beside it, and embedded in the HTML as SVG, so a paper can take it as vector graphics. ``summary.parquet``
holds the numbers
behind them, one tidy row per condition and method, and ``claims.parquet`` the verdict on each paper's
claim the results cover (``harness.report.claims``: one row per claim, condition and kind of runs; a
Parquet file holds one table, so the verdicts have their own beside the summary's).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from harness.errors import UsageError, did_you_mean
from harness.plugins import Registry
from harness.report import claims as claim_verdicts
from harness.report import studies
from harness.report.costs import cost_figure, cost_frame, cost_table
from harness.report.figures import method_colors, suite_figures
from harness.report.gather import REPORT_MARKER, Results, check_averageable, load
from harness.report.html import Picture, page
from harness.report.provenance import provenance_table
from harness.report.run_settings import hyperparameter_table, run_settings_table
from harness.report.summary import SAM, failures, summarize, warnings_for
from harness.report.tables import Table, failures_table, markdown, summary_tables
from harness.report.training_figures import training_figures
from harness.results.read import Skipped
from harness.suite.claims import Claim, all_claims

DPI = 100


@dataclass(frozen=True)
class Report:
    """What ``build`` wrote and the Markdown it printed."""

    markdown: str
    out: Path
    files: tuple[Path, ...]
    summary: pd.DataFrame


def default_out(paths: Sequence[str | Path]) -> Path:
    """``<first results folder>/report``."""
    return Path(paths[0]) / "report"


def build(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    reference: str = SAM,
    on_skip: Callable[[Skipped], None] | None = None,
    claims: Sequence[Claim] | None = None,
) -> Report:
    """Read ``paths``, write the report to ``out`` (default ``default_out(paths)``), return it.

    claims: the claims to judge (default: the shipped ones and those plugins register,
    ``harness.suite.claims.all_claims``).

    Files that cannot be read, or are not run files, are skipped and passed to ``on_skip``
    (``harness.report.gather.load``). ``out`` is refused when results would be read from it (``check_out``).
    """
    results = load(paths, on_skip)
    out = Path(out) if out is not None else default_out(paths)
    check_out(out, paths, results)
    parts = studies.split(results.runs)
    runs = parts.averaged
    check_averageable(runs)
    methods = set(runs["method"].dropna())
    if reference not in methods and f"{reference}{studies.TUNED}" in methods:
        reference = f"{reference}{studies.TUNED}"  # a folder of tuned runs only
    if reference not in methods:
        raise UsageError(
            f"--reference {reference!r}: no run of that method in the results{did_you_mean(reference, methods)}; "
            f"methods: {', '.join(sorted(methods))}"
        )
    summary = summarize(runs, reference)
    failed = failures(results.runs)
    notes = warnings_for(summary)
    out.mkdir(parents=True, exist_ok=True)
    summary_path, markdown_path, html_path = out / "summary.parquet", out / REPORT_MARKER, out / "report.html"
    markdown_path.touch()  # first, so that the folder is never taken for a suite folder (gather.REPORT_MARKER)
    claims = all_claims(Registry.from_plugins()) if claims is None else claims
    verdicts, uncovered = claim_verdicts.judge(runs, claims)
    costs = cost_frame(runs)
    sections = [
        *_run_sections(runs),
        *_claim_sections(verdicts, uncovered),
        *_cost_sections(costs),
        *_tuning_sections(parts, summary),
    ]
    pictures = _draw(summary, results, runs, costs, out)
    if studies.has_studies(parts):
        pictures += _saved(studies.figures(parts, summary, method_colors(runs["method"].dropna())), out)
    markdown = _markdown(results, summary, failed, notes, pictures, reference, sections)
    summary.to_parquet(summary_path, index=False)
    claim_verdicts.verdict_frame(verdicts).to_parquet(out / "claims.parquet", index=False)
    markdown_path.write_text(markdown)
    html_path.write_text(
        page(
            title="SAM harness report",
            intro=[*_intro(results, reference), *_all_suite_notes(summary)],
            summary=summary_tables(summary, with_suite=True),
            warnings=notes,
            failures=failures_table(failed),
            errors=_full_errors(failed),
            pictures=pictures,
            sections=sections,
        )
    )
    figures = [out / name for p in pictures for name in (p.name, p.pdf)]
    files = (markdown_path, html_path, summary_path, out / "claims.parquet", *figures)
    return Report(markdown, out, files, summary)


def check_out(out: Path, paths: Sequence[str | Path], results: Results) -> None:
    """Refuse (``UsageError``) an output folder that results are read from: a ``RESULTS_DIR`` given, a suite
    folder or its ``history/``, or any folder holding ``.parquet`` files that is not a report's. The
    report's ``summary.parquet`` would otherwise be read as a run file later, or mix with runs."""
    target = out.resolve()
    read = {Path(p).resolve(): "a RESULTS_DIR being read" for p in paths}
    for folder in results.folders:
        read.update(
            {
                folder: "a suite folder being read",
                folder / "history": "the history folder of a suite",
                folder / "steps": "the step-trace folder of a suite",
            }
        )
    why = read.get(target)
    if why is None and target.is_dir() and not (target / REPORT_MARKER).exists() and any(target.glob("*.parquet")):
        why = "a folder of .parquet files (results?) that is not a report's"
    if why:
        raise UsageError(
            f"-o {out}: refusing to write the report into {why}: its summary.parquet would be read as results "
            f"later; choose another folder, e.g. {default_out(paths)} (the default)"
        )


def _draw(
    summary: pd.DataFrame, results: Results, averaged: pd.DataFrame, costs: pd.DataFrame, out: Path
) -> list[Picture]:
    """Every suite's figures (over the averaged runs: no tuning trial), saved in ``out`` (``_saved``)."""
    colors = method_colors(averaged["method"].dropna())
    plots = []
    for suite, rows in summary.groupby("suite", sort=True):
        runs = averaged[averaged["suite"] == suite]
        ids = set(runs["run_id"])
        history = results.history[results.history["run_id"].isin(ids)]
        steps = results.steps[results.steps["run_id"].isin(ids)] if not results.steps.empty else results.steps
        plots += suite_figures(rows, runs, history, colors)
        plots += training_figures(suite, runs, history, steps, colors)
    plots += cost_figure(costs, colors)
    return _saved(plots, out)


def _saved(plots, out: Path) -> list[Picture]:
    """``plots`` saved in ``out`` as PNG and as PDF beside it; returned with their SVG for the HTML."""
    pictures = []
    for plot in plots:
        svg = io.BytesIO()
        plot.figure.savefig(svg, format="svg")
        picture = Picture(plot.name, plot.caption, svg.getvalue())
        plot.figure.savefig(out / picture.name, format="png", dpi=DPI)
        plot.figure.savefig(out / picture.pdf, format="pdf")
        plt.close(plot.figure)
        pictures.append(picture)
    return pictures


def _run_sections(runs: pd.DataFrame) -> list[tuple[str, Table, str]]:
    """(title, table, explanation) of what was run and where: hyperparameters, run settings, provenance."""
    hyperparameters, settings = hyperparameter_table(runs), run_settings_table(runs)
    sections = []
    if hyperparameters is not None:
        sections.append(
            (
                "Hyperparameters",
                hyperparameters,
                "Each method's resolved hyperparameters, read from its runs' configurations (what ran, defaults "
                "included): the perturbation radius (rho; GSAM's rho_max and rho_min), alpha, k (a perturbed step "
                "every k steps), the base optimizer and its learning rate, epochs and batch size, then every other "
                "entry of its optimizer, scheduler, base optimizer and lr schedule. Values that differ between a "
                "method's conditions are each listed, ' | '-separated.",
            )
        )
    if settings is not None:
        sections.append(
            ("Run settings", settings, "Every other setting of each suite's runs (dataset, model, evaluation, ...).")
        )
    explanation = (
        "Where and with what the runs were made, per suite and results folder: the first start and the last "
        "finish, hosts, devices, and the torch, harness and plugin distributions' versions the run files record."
    )
    return [*sections, ("Provenance", provenance_table(runs), explanation)]


def _claim_sections(verdicts, uncovered) -> list[tuple[str, Table, str]]:
    """(title, table, explanation) of the claims the results cover, and of those they do not."""
    sections = []
    if verdicts:
        sections.append(
            (
                "Claims",
                claim_verdicts.verdict_table(verdicts),
                "Each paper's headline claim (suites/reference/claims.yaml and the plugins' claims files) judged "
                "per condition, on the fixed-setting runs and on the tuned finals separately: the measured effect "
                "with its 95% confidence interval over seeds (paired by seed where both methods ran the same "
                "seeds), the bound the paper's claim implies and the paper's own effect. Reproduced: the interval "
                "lies on the claimed side of the bound; not reproduced: it excludes the claimed margin; "
                "inconclusive: one seed, or it straddles the bound.",
            )
        )
    if uncovered:
        sections.append(
            (
                "Claims not covered",
                claim_verdicts.uncovered_table(uncovered),
                "Claims these results cannot test, what they lack, and the shipped suites that test them.",
            )
        )
    return sections


def _cost_sections(costs: pd.DataFrame) -> list[tuple[str, Table, str]]:
    """The cost per k of the periodic methods (LookSAM, SAM-k), when the results have them and ERM."""
    table = cost_table(costs)
    if table is None:
        return []
    explanation = (
        "Mean train seconds per epoch of each method with a periodic schedule (k), over its ok seeds, and its "
        "ratio to ERM's in the same condition, beside 1 + 1/k (one extra pass every k steps); as 000 Table 1."
    )
    return [("Cost per k", table, explanation)]


def _tuning_sections(parts: studies.Split, summary: pd.DataFrame) -> list[tuple[str, Table, str]]:
    """(title, table, explanation) of the tuning section: the studies and the performance profiles."""
    if not studies.has_studies(parts):
        return []
    accuracy, cost = studies.profiles(summary)
    untuned = studies.untuned_table(summary)
    against = [
        (
            "Tuned against untuned",
            untuned,
            "Mean test accuracy +- the 95% CI half-width (%) of each method at its fixed settings and tuned, and "
            "tuned minus untuned in percentage points: how much of a gap was hyperparameters.",
        )
    ]
    return [
        *(against if untuned is not None else []),
        (
            "Tuning studies",
            studies.studies_table(parts),
            "Each study (method x condition) with the setting it chose on the validation objective, the budget "
            "its trials spent and every trial's objective (%); the finals are that setting on the final seeds, "
            "scored on the test set, and appear in the summary as '<method> (tuned)' beside the method's "
            "fixed-setting runs when the folder has them.",
        ),
        (
            "Performance profile: accuracy",
            studies.profile_table(accuracy, " pt"),
            "Fraction of conditions in which each tuned method's mean test accuracy is within tau percentage "
            "points of the best tuned method's (Dolan and More 2002; AlgoPerf's scoring).",
        ),
        (
            "Performance profile: cost",
            studies.profile_table(cost, "x"),
            "Fraction of conditions in which each tuned method's mean train time is within a factor tau of the "
            "cheapest tuned method's.",
        ),
    ]


def _intro(results: Results, reference: str) -> list[str]:
    runs = results.runs
    counts = runs.groupby(["source", "suite"], sort=True)["status"].value_counts().unstack(fill_value=0)
    read = "; ".join(
        f"{source} (suite {suite}: {', '.join(f'{n} {status}' for status, n in row.items() if n)})"
        for (source, suite), row in counts.iterrows()
    )
    return [
        f"Results read from {read}.",
        "Statistics over seeds, ok runs only: mean +- sample standard deviation (accuracies in %), and the 95% "
        "confidence interval of the mean (Student's t with n - 1 degrees of freedom), clipped to [0, 100]; "
        '"n=2: wide" marks an interval from two seeds (t = 12.7 standard errors), which says little.',
        f"Significance against {reference}: two-sided Welch's t-test and Mann-Whitney U test on the final test "
        "accuracy; p-values Holm-adjusted within each condition (raw values in summary.parquet); "
        '"n too small" when either side has fewer than 2 ok seeds.',
        "The best mean test accuracy of each condition is in bold (each of equal best means). x ERM and x SAM: mean "
        "train time over that of erm and of sam in the same condition. not ok: failed and diverged runs, listed "
        "below with their errors.",
    ]


def _full_errors(failed: pd.DataFrame) -> list[tuple[str, str]]:
    """(run_id, error) for the errors longer than their first line (tracebacks)."""
    return [
        (run_id, error.strip())
        for run_id, error in zip(failed["run_id"], failed["error"], strict=True)
        if isinstance(error, str) and "\n" in error.strip()
    ]


def _suite_notes(rows: pd.DataFrame) -> list[str]:
    """The lines under a suite's table: the published numbers it is compared with, and its extensions
    (a method applied outside its paper's setting, shown as such and never as the paper's method)."""
    notes = []
    sources = sorted({cell["source"] for text in rows["paper_cells"] for cell in json.loads(text)} - {""})
    if sources:
        notes.append("Published numbers: " + "; ".join(sources) + ".")
    extended = rows.loc[rows["extension"] != "", ["method", "model", "dataset", "extension"]].drop_duplicates()
    if len(extended):
        shown = "; ".join(f"{r.method} on {r.model} ({r.dataset}): {r.extension}" for r in extended.itertuples())
        notes.append(f"Extensions (a method outside its paper's setting, not the paper's method): {shown}.")
    return notes


def _all_suite_notes(summary: pd.DataFrame) -> list[str]:
    """``_suite_notes`` of every suite, each line naming its suite (the HTML page has one table of all suites)."""
    return [
        f"Suite {suite}: {note}" for suite, rows in summary.groupby("suite", sort=True) for note in _suite_notes(rows)
    ]


def _markdown(
    results: Results,
    summary: pd.DataFrame,
    failed: pd.DataFrame,
    notes: list[str],
    pictures: list[Picture],
    reference: str,
    sections: list[tuple[str, Table, str]],
) -> str:
    parts = ["# SAM harness report", *_intro(results, reference)]
    for suite, rows in summary.groupby("suite", sort=True):
        parts.append(f"## Suite {suite}")
        for title, table in summary_tables(rows):
            parts += [f"### {title}", markdown(table)]
        parts += _suite_notes(rows)
    for title, data, explanation in sections:
        parts += [f"## {title}", explanation, markdown(data)]
    if notes:
        parts += ["## Warnings", "\n".join(f"- {note}" for note in notes)]
    parts.append(f"## Failed and diverged runs ({len(failed)})")
    if failed.empty:
        parts.append("None: every run finished ok.")
    else:
        parts.append(markdown(failures_table(failed)))
        parts += [f"`{run_id}`:\n\n```\n{text}\n```" for run_id, text in _full_errors(failed)]
    parts.append("## Figures")
    parts += [f"![{p.caption}]({p.name})" for p in pictures]
    return "\n\n".join(parts) + "\n"
