"""``harness report`` on synthetic Parquet results with known numbers: every table cell, the
statistics against scipy, the paper column, failed runs, the figures, summary.parquet, refusals."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.cli import main
from harness.results.store import write_run

SUITE = "synth"
DATASET, MODEL = "cifar10", "resnet18-cifar"
SEEDS = (0, 1, 2, 3, 4)
MIB, GIB = 2**20, 2**30
#: test accuracy per (noise rate, method): one value per seed, None where the run failed or diverged
ACCURACY = {
    (0.0, "erm"): [0.930, 0.935, 0.928, 0.940, 0.932],
    (0.0, "sam"): [0.945, 0.950, 0.941, 0.948, 0.946],
    (0.0, "asam"): [0.951, 0.955, 0.949, None],  # seed 3 failed, seed 4 never ran
    (0.4, "erm"): [0.800, 0.820, 0.810, 0.790, 0.830],
    (0.4, "sam"): [0.860, 0.870, 0.855, 0.865, 0.875],
    (0.4, "asam"): [0.880, None, None, None, None],  # seeds 1-4 diverged
}
TIME = {"erm": 10.0, "sam": 20.0, "asam": 25.0}  # mean train time; per seed +- (seed - 1) * 0.5
GRAD_EVALS = {"erm": 1000, "sam": 2000, "asam": 2000}
STATE_BYTES = {"erm": 1 * MIB, "sam": 2 * MIB, "asam": 3 * MIB}
DEVICE_BYTES = {"erm": 3 * GIB, "sam": 3.5 * GIB, "asam": 3.5 * GIB}
EIGENVALUE = {"erm": 50.0, "sam": 20.0, "asam": 15.0}  # hessian_max_eig = this + seed
PAPER = {(0.0, "sam"): 0.9480, (0.4, "sam"): 0.8900}
OOM = "RuntimeError: CUDA out of memory | tried to allocate 2 GiB\nTraceback (most recent call last):\n  File x"


def config(method: str, noise: float, seed: int, **changes) -> dict:
    return {
        "suite": SUITE,
        "method": method,
        "optimizer": {"name": method, "rho": 0.05 if method != "erm" else None},
        "model": {"name": MODEL},
        "dataset": {"name": DATASET},
        "noise_rate": noise,
        "seed": seed,
        "epochs": 200,
        **changes,
    }


def run_row(method: str, noise: float, seed: int, acc: float | None, status: str = "ok", **extra) -> dict:
    resolved = config(method, noise, seed, **extra.pop("config_changes", {}))
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()[:12]
    return {
        "run_id": f"{method}-s{seed}-{digest}",
        "suite": SUITE,
        "method": method,
        "model": MODEL,
        "dataset": DATASET,
        "noise_rate": noise,
        "seed": seed,
        "epochs": 200,
        "status": status,
        "error": "" if status == "ok" else (OOM if status == "failed" else "non-finite training loss at step 12"),
        "test_acc": acc,
        "best_test_acc": acc + 0.001 if acc is not None else None,
        "train_time_s": TIME[method] + (seed - 1) * 0.5 if status == "ok" else 3.0,
        "sam_fraction": 0.0 if method == "erm" else 1.0,
        "grad_evals": GRAD_EVALS[method],
        "optimizer_state_bytes": STATE_BYTES[method],
        "peak_device_bytes": int(DEVICE_BYTES[method]),
        "reference_test_acc": PAPER.get((noise, method)),
        "reference_source": "AE-SAM Table 3" if (noise, method) in PAPER else "",
        "config": json.dumps(resolved, sort_keys=True),
        "hessian_max_eig": EIGENVALUE[method] + seed if status == "ok" else None,
        "hessian_max_eig_iterations": 100,
        "host": f"machine-{seed}",
        **extra,
    }


def history_rows(acc: float | None, noise: float) -> list[dict]:
    if acc is None:
        return []
    return [
        {
            "epoch": epoch,
            "test_acc": acc * epoch / 3,
            "train_acc_noisy_given": 0.1 * epoch if noise else None,
            "train_acc_noisy_true": 0.5 + 0.1 * epoch if noise else None,
        }
        for epoch in (1, 2, 3)
    ]


def write_synthetic(root: Path) -> Path:
    """The synthetic suite under ``root/synth``; returns that folder."""
    for (noise, method), values in ACCURACY.items():
        for seed, acc in zip(SEEDS, values, strict=False):
            status = "ok"
            if acc is None:
                status = "failed" if noise == 0.0 else "diverged"
            write_run(root, SUITE, run_row(method, noise, seed, acc, status), history_rows(acc, noise))
    return root / SUITE


def ok_values(noise: float, method: str) -> np.ndarray:
    return np.array([v for v in ACCURACY[noise, method] if v is not None])


def holm_by_hand(pvalues: list[float]) -> list[float]:
    """Holm's step-down procedure written as a plain loop (independent of harness.report.seed_statistics.holm)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def fmt_p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def markdown_rows(markdown: str, header_start: str, after: str = "") -> list[dict[str, str]]:
    """The rows of the first pipe table whose header starts with ``header_start`` (after the line ``after``, when
    given), as dicts."""
    return markdown_tables(markdown, header_start, after)[0]


def markdown_tables(markdown: str, header_start: str, after: str = "") -> list[list[dict[str, str]]]:
    """The rows of every pipe table whose header starts with ``header_start`` (after the line ``after``)."""
    lines = markdown.splitlines()
    first = lines.index(after) if after else 0
    tables = []
    for start in (i for i, line in enumerate(lines) if i >= first and line.startswith(header_start)):
        split = [c.strip() for c in lines[start].strip("|").split(" | ")]
        rows = []
        for line in lines[start + 2 :]:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows.append(dict(zip(split, cells, strict=True)))
        tables.append(rows)
    return tables


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("results")
    folder = write_synthetic(root)
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(folder), "-o", str(out)]) == 0
    return folder, out, (out / "report.md").read_text()


@pytest.fixture(scope="module")
def rows(report) -> dict[tuple[float, str], dict[str, str]]:
    """Each condition and method's cells of the summary's tables (accuracy, cost, sharpness) together."""
    merged: dict[tuple[float, str], dict[str, str]] = {}
    tables = markdown_tables(report[2], "| dataset ")
    assert [len(table) for table in tables] == [6, 6, 6]  # one row per condition and method in each
    for table in tables:
        for r in table:
            merged.setdefault((float(r["noise"]), r["method"]), {}).update(r)
    return merged


def expected_ci(values: np.ndarray) -> str:
    n = len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return f"[{100 * (values.mean() - half):.2f}, {100 * (values.mean() + half):.2f}]"


def test_accuracy_statistics_and_seed_counts_in_every_row(rows):
    assert set(rows) == set(ACCURACY)
    for (noise, method), row in rows.items():
        values = ok_values(noise, method)
        mean = f"{100 * values.mean():.2f}"
        cell = f"{mean} +- {100 * values.std(ddof=1):.2f}" if len(values) > 1 else mean
        best = max((ok_values(noise, m).mean(), m) for m in ("erm", "sam", "asam"))[1] == method
        assert row["test acc % (mean +- std)"] == (f"**{cell}**" if best else cell), (noise, method)
        assert row["95% CI %"] == (expected_ci(values) if len(values) > 1 else "n too small")
        assert row["dataset"] == DATASET and row["model"] == MODEL
    assert rows[0.0, "erm"]["seeds"] == "5" and rows[0.0, "asam"]["seeds"] == "3 of 5"
    assert rows[0.4, "asam"]["seeds"] == "1 of 5"
    assert (
        rows[0.0, "asam"]["not ok"] == "1" and rows[0.4, "asam"]["not ok"] == "4" and rows[0.0, "sam"]["not ok"] == "0"
    )


def test_best_per_condition_is_marked_once(rows):
    bold = {key for key, row in rows.items() if row["test acc % (mean +- std)"].startswith("**")}
    assert bold == {(0.0, "asam"), (0.4, "asam")}


def test_p_values_match_scipy_with_holm_across_the_conditions_comparisons(rows):
    sam0, erm0, asam0 = ok_values(0.0, "sam"), ok_values(0.0, "erm"), ok_values(0.0, "asam")
    welch = [stats.ttest_ind(x, sam0, equal_var=False).pvalue for x in (erm0, asam0)]
    mwu = [stats.mannwhitneyu(x, sam0, alternative="two-sided").pvalue for x in (erm0, asam0)]
    for column, raw in (("p Welch vs sam (Holm)", welch), ("p MWU vs sam (Holm)", mwu)):
        adjusted = holm_by_hand(raw)
        assert rows[0.0, "erm"][column] == fmt_p(adjusted[0])
        assert rows[0.0, "asam"][column] == fmt_p(adjusted[1])
        assert rows[0.0, "sam"][column] == "reference"
        # at noise 0.4 asam has one ok seed: the family is erm alone, so Holm leaves its p-value as it is
        assert rows[0.4, "asam"][column] == "n too small"
    sam4, erm4 = ok_values(0.4, "sam"), ok_values(0.4, "erm")
    assert rows[0.4, "erm"]["p Welch vs sam (Holm)"] == fmt_p(stats.ttest_ind(erm4, sam4, equal_var=False).pvalue)
    assert rows[0.4, "erm"]["p MWU vs sam (Holm)"] == fmt_p(stats.mannwhitneyu(erm4, sam4).pvalue)


def test_paper_beside_measured_with_the_difference(rows):
    sam = ok_values(0.0, "sam")
    # rows of a folder written before the ``references`` column: their one reference, read as final
    prefix = "AE-SAM Table 3, final (test_acc): "
    assert rows[0.0, "sam"]["paper / measured %"] == prefix + (
        f"paper 94.80 / measured {100 * sam.mean():.2f} +- {100 * sam.std(ddof=1):.2f} (n=5), "
        f"diff {100 * (sam.mean() - 0.948):+.2f}"
    )
    assert rows[0.0, "sam"]["paper / measured %"] == prefix + "paper 94.80 / measured 94.60 +- 0.34 (n=5), diff -0.20"
    assert rows[0.4, "sam"]["paper / measured %"].startswith(prefix + "paper 89.00 / measured 86.50 +- ")
    assert rows[0.0, "erm"]["paper / measured %"] == ""


def test_cost_columns_ratios_and_memory(rows):
    for (_, method), row in rows.items():
        assert row["%SAM"] == ("0.0" if method == "erm" else "100.0")
        assert row["grad evals"] == str(GRAD_EVALS[method])
        assert row["optimizer state"] == f"{STATE_BYTES[method] / MIB:.2f} MiB"
        assert row["peak device mem"] == f"{DEVICE_BYTES[method] / GIB:.2f} GiB"
    # train time per seed: TIME + (seed - 1) * 0.5 over the ok seeds
    assert rows[0.0, "erm"]["train time s"] == "10.50" and rows[0.0, "sam"]["train time s"] == "20.50"
    assert rows[0.0, "asam"]["train time s"] == "25.00"  # seeds 0-2: 24.5, 25.0, 25.5
    assert rows[0.0, "asam"]["x ERM"] == f"{25.0 / 10.5:.2f}" and rows[0.0, "asam"]["x SAM"] == f"{25.0 / 20.5:.2f}"
    assert rows[0.0, "erm"]["x ERM"] == "1.00" and rows[0.0, "sam"]["x SAM"] == "1.00"
    assert rows[0.4, "asam"]["train time s"] == "24.50"


def test_sharpness_metric_columns_without_their_budgets(rows):
    for (noise, method), row in rows.items():
        values = EIGENVALUE[method] + np.array(
            [s for s, v in zip(SEEDS, ACCURACY[noise, method], strict=False) if v is not None]
        )
        expected = f"{values.mean():.4g} +- {values.std(ddof=1):.2g}" if len(values) > 1 else f"{values.mean():.4g}"
        assert row["hessian_max_eig"] == expected
        assert "hessian_max_eig_iterations" not in row


def test_failed_and_diverged_runs_are_listed_with_their_errors(report):
    markdown = report[2]
    assert "## Failed and diverged runs (5)" in markdown
    failed = markdown_rows(markdown, "| suite ", after="## Failed and diverged runs (5)")
    assert sorted((r["method"], float(r["noise"]), int(r["seed"]), r["status"]) for r in failed) == [
        ("asam", 0.0, 3, "failed"),
        *(("asam", 0.4, seed, "diverged") for seed in (1, 2, 3, 4)),
    ]
    oom = next(r for r in failed if r["status"] == "failed")
    assert oom["error"] == "RuntimeError: CUDA out of memory \\| tried to allocate 2 GiB"
    assert OOM.strip() in markdown  # the whole traceback, in a code block
    assert all(r["error"] == "non-finite training loss at step 12" for r in failed if r["status"] == "diverged")


def test_missing_seeds_and_groups_without_statistics_are_said(report):
    markdown = report[2]
    assert (
        f"{SUITE}: {DATASET} / {MODEL} / noise 0 / asam: 3 of 5 seeds; seeds 3, 4 missing "
        "(1 failed, 0 diverged, 1 not run)"
    ) in markdown
    assert f"{SUITE}: {DATASET} / {MODEL} / noise 0.4 / asam: 1 of 5 seeds; seeds 1, 2, 3, 4 missing" in markdown


def test_summary_parquet_is_one_tidy_row_per_condition_and_method(report):
    _, out, _ = report
    summary = pd.read_parquet(out / "summary.parquet").set_index(["noise_rate", "method"])
    assert len(summary) == 6 and summary.index.is_unique
    for key in ACCURACY:
        values = ok_values(*key)
        row = summary.loc[key]
        assert row["n"] == len(values) and row["test_acc_mean"] == pytest.approx(values.mean())
        if len(values) > 1:
            assert row["test_acc_std"] == pytest.approx(values.std(ddof=1))
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            assert row["test_acc_ci95"] == pytest.approx(half)
        else:
            assert math.isnan(row["test_acc_std"]) and math.isnan(row["test_acc_ci95"])
    sam = ok_values(0.0, "sam")
    erm = ok_values(0.0, "erm")
    assert summary.loc[(0.0, "erm"), "welch_p"] == pytest.approx(stats.ttest_ind(erm, sam, equal_var=False).pvalue)
    assert summary.loc[(0.0, "sam"), "paper_diff"] == pytest.approx(sam.mean() - 0.948)
    assert summary.loc[(0.0, "asam"), "missing_seeds"] == "3,4" and summary.loc[(0.0, "asam"), "failed"] == 1
    assert summary.loc[(0.4, "asam"), "diverged"] == 4 and summary.loc[(0.4, "asam"), "test_note"] == "n too small"
    assert summary["best"].sum() == 2 and summary.loc[(0.0, "asam"), "best"]
    assert summary.loc[(0.0, "asam"), "hessian_max_eig_mean"] == pytest.approx(16.0)


def test_figures_are_written_as_png_and_pdf_linked_and_embedded_as_svg(report):
    _, out, markdown = report
    names = sorted(p.name for p in out.glob("*.png"))
    expected = [
        f"accuracy_vs_noise-{SUITE}.png",
        f"accuracy_vs_time-{SUITE}.png",
        f"learning_curves-{SUITE}-{DATASET}-{MODEL}-0.4.png",
        f"learning_curves-{SUITE}-{DATASET}-{MODEL}-0.png",
        f"memory-{SUITE}.png",
        f"sam_fraction_vs_accuracy-{SUITE}.png",
    ]
    assert names == sorted(expected)
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 300 and height > 200
        assert f"]({name})" in markdown
        pdf = (out / name.replace(".png", ".pdf")).read_bytes()  # vector, beside the PNG
        assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 2000
    assert sorted(p.name for p in out.glob("*.pdf")) == sorted(name.replace(".png", ".pdf") for name in expected)
    html = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', html)
    assert len(embedded) == len(expected) and "data:image/png" not in html
    assert all(base64.b64decode(data).lstrip().startswith(b"<?xml") and b"<svg" in base64.b64decode(data)
               for data in embedded)  # fmt: skip
    assert all(f'<a href="{name.replace(".png", ".pdf")}">PDF</a>' in html for name in expected)
    assert '<table id="summary-accuracy" class="summary">' in html and 'id="summary-cost"' in html


def test_stdout_prints_the_markdown_and_a_parent_folder_finds_its_suites(report, tmp_path, capsys):
    folder, _, _ = report
    capsys.readouterr()
    assert main(["report", str(folder.parent), "-o", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "## Suite synth" in out and "| erm " in out and "%SAM" in out
    assert f"wrote 16 files to {tmp_path / 'r'}" in out  # 4, and 6 figures as PNG and PDF


def test_default_output_folder_is_skipped_when_reading_the_parent(tmp_path):
    folder = write_synthetic(tmp_path / "results")
    assert main(["report", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "report" / "report.html").exists()
    assert main(["report", str(tmp_path / "results")]) == 0  # results/report is an output, not a suite
    assert len(pd.read_parquet(tmp_path / "results" / "report" / "summary.parquet")) == 6
    assert folder.exists()


def test_several_directories_and_suites_at_once(tmp_path, capsys):
    a = write_synthetic(tmp_path / "a")
    b = tmp_path / "b"
    write_run(b, "other", {**run_row("sam", 0.0, 0, 0.5), "suite": "other"}, [])
    write_run(b, "other", {**run_row("sam", 0.0, 1, 0.6), "suite": "other"}, [])
    capsys.readouterr()
    assert main(["report", str(a), str(b), "-o", str(tmp_path / "out")]) == 0
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet")
    assert sorted(summary["suite"].unique()) == ["other", "synth"]
    other = summary[summary["suite"] == "other"].iloc[0]
    assert other["n"] == 2 and other["test_acc_mean"] == pytest.approx(0.55)
    assert "## Suite other" in capsys.readouterr().out


def test_seeds_split_across_folders_are_averaged_together(tmp_path):
    for seed, folder in ((0, "a"), (1, "b"), (2, "b")):
        write_run(tmp_path / folder, SUITE, run_row("sam", 0.0, seed, 0.9 + seed / 100), [])
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out")]) == 0
    summary = pd.read_parquet(tmp_path / "out" / "summary.parquet")
    assert summary["n"].tolist() == [3] and summary["test_acc_mean"].iloc[0] == pytest.approx(0.91)


def test_runs_differing_in_more_than_the_seed_are_refused_naming_the_keys(tmp_path, capsys):
    write_run(tmp_path, SUITE, run_row("sam", 0.0, 0, 0.9), [])
    changed = run_row("sam", 0.0, 1, 0.9, config_changes={"optimizer": {"name": "sam", "rho": 0.1}, "epochs": 100})
    write_run(tmp_path, SUITE, changed, [])
    capsys.readouterr()
    assert main(["report", str(tmp_path / SUITE), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "suite synth, cifar10 / resnet18-cifar / noise 0, method sam" in err
    assert "optimizer.rho (0.05 in sam-s0-" in err and "0.1 in sam-s1-" in err and "epochs (200 in" in err
    assert "cannot be averaged" in err
    assert f"They are all in {tmp_path / SUITE}: move the runs of one configuration" in err  # one folder: say how
    assert not (tmp_path / "out" / "report.md").exists()


def test_the_same_seed_from_two_folders_is_refused(tmp_path, capsys):
    for folder in ("a", "b"):
        write_run(tmp_path / folder, SUITE, run_row("sam", 0.0, 0, 0.9), [])
    capsys.readouterr()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out")]) == 2
    assert "seed 0 appears more than once" in capsys.readouterr().err


def test_reference_method_option_and_unknown_reference(report, tmp_path, capsys):
    folder, _, _ = report
    assert main(["report", str(folder), "-o", str(tmp_path / "r"), "--reference", "erm"]) == 0
    rows = {
        (float(r["noise"]), r["method"]): r
        for r in markdown_rows((tmp_path / "r" / "report.md").read_text(), "| dataset ")
    }
    assert rows[0.0, "erm"]["p Welch vs erm (Holm)"] == "reference"
    sam, erm = ok_values(0.0, "sam"), ok_values(0.0, "erm")
    raw = [stats.ttest_ind(ok_values(0.0, m), erm, equal_var=False).pvalue for m in ("asam", "sam")]
    assert rows[0.0, "sam"]["p Welch vs erm (Holm)"] == fmt_p(holm_by_hand(raw)[1])
    assert sam.size == 5
    capsys.readouterr()
    assert main(["report", str(folder), "-o", str(tmp_path / "r2"), "--reference", "samm"]) == 2
    assert "did you mean 'sam'" in capsys.readouterr().err


def test_no_results_is_a_usage_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no result files" in capsys.readouterr().err
