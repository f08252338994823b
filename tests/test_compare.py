"""``harness compare``: runs matched by configuration (provenance ignored), deltas, significance, gates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from harness.cli import main
from harness.report.compare import Gate
from harness.results.store import write_run

from .test_report import ACCURACY, SUITE, TIME, markdown_rows, run_row

SAM = np.array(ACCURACY[0.0, "sam"])


def write_side(root: Path, *, sam_shift: float = 0.0, time_factor: float = 1.0, provenance: str = "a", overrides=None):
    """erm and sam at noise 0, five seeds each; sam's accuracies shifted and every train time scaled."""
    for method in ("erm", "sam"):
        shift = sam_shift if method == "sam" else 0.0
        for seed, acc in enumerate(ACCURACY[0.0, method]):
            row = run_row(method, 0.0, seed, acc + shift, config_changes={"harness_version": provenance})
            row.update(train_time_s=row["train_time_s"] * time_factor, host=f"host-{provenance}")
            row.update(harness_version=provenance, **(overrides or {}).get((method, seed), {}))
            write_run(root, SUITE, row, [])
    return root / SUITE


@pytest.fixture
def sides(tmp_path) -> tuple[Path, Path]:
    base = write_side(tmp_path / "base")
    new = write_side(tmp_path / "new", sam_shift=-0.01, time_factor=1.2, provenance="b")
    return base, new


def compare_rows(out: str) -> dict[tuple[str, str], dict[str, str]]:
    """The table's rows by (method, metric); an accuracy's metric cell says its unit: ``test_acc (%)``."""
    return {(r["method"], r["metric"].removesuffix(" (%)")): r for r in markdown_rows(out, "| suite ")}


def test_runs_match_across_provenance_and_the_table_shows_both_sides(sides, capsys):
    base, new = sides
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "10 matched by configuration" in out and "compare: ok" in out
    rows = compare_rows(out)
    sam = rows["sam", "test_acc"]
    assert sam["metric"] == "test_acc (%)" and sam["seeds"] == "5"
    assert sam["base"] == f"{100 * SAM.mean():.2f}" and sam["new"] == f"{100 * (SAM - 0.01).mean():.2f}"
    assert sam["delta"] == "-1.00" and sam["delta %"] == f"{-0.01 / SAM.mean() * 100:+.2f}%"  # points, then relative
    assert sam["p Welch"] == f"{stats.ttest_ind(SAM - 0.01, SAM, equal_var=False).pvalue:.4f}"
    erm = rows["erm", "test_acc"]
    assert erm["delta"] == "+0.00" and erm["p Welch"] == "1.0000"  # the same accuracies on both sides
    fraction = rows["sam", "sam_fraction"]
    assert fraction["metric"] == "sam_fraction (%)" and fraction["base"] == "100.00"  # %SAM in percent, as the report
    time = rows["sam", "train_time_s"]
    assert time["base"] == f"{TIME['sam'] + 0.5:.6g}" and time["delta %"] == "+20.00%"
    assert ("sam", "grad_evals") in rows and ("sam", "optimizer_state_bytes") in rows


@pytest.mark.parametrize(
    ("gates", "code", "failing"),
    [
        (["test_acc:-0.005"], 1, ["test_acc:-0.005: suite synth, cifar10 / resnet18-cifar / noise 0, method sam"]),
        (["test_acc:-0.02"], 0, []),
        (["train_time_s:+10%"], 1, ["method erm: train_time_s", "method sam: train_time_s"]),
        (["train_time_s:+25%"], 0, []),
        (["test_acc:-0.02", "train_time_s:+15%"], 1, ["train_time_s:+15%"]),
        (["grad_evals:0"], 0, []),
        (["test_acc:0.005"], 1, ["method sam: test_acc"]),
    ],
)
def test_gates_pass_and_fail(sides, capsys, gates, code, failing):
    base, new = sides
    args = ["compare", str(base), str(new)]
    for gate in gates:
        args += ["--fail-on", gate]
    assert main(args) == code
    out = capsys.readouterr().out
    if code:
        assert "## FAILED" in out
        for text in failing:
            assert text in out
    else:
        assert "compare: ok, every gate passed" in out


def test_failure_message_says_the_change_and_the_limit(sides, capsys):
    base, new = sides
    assert main(["compare", str(base), str(new), "--fail-on", "train_time_s:+10%"]) == 1
    out = capsys.readouterr().out
    assert "train_time_s 20.5 -> 24.6, change +20% (fails above +10%)" in out
    assert main(["compare", str(base), str(new), "--fail-on", "test_acc:-0.005"]) == 1
    assert "test_acc 94.60% -> 93.60%, change -1 pt (fails below -0.5 pt)" in capsys.readouterr().out


def test_a_run_that_now_fails_fails_the_comparison(tmp_path, capsys):
    base = write_side(tmp_path / "base")
    broken = {("sam", 2): {"status": "failed", "error": "RuntimeError: boom\ntraceback", "test_acc": None}}
    new = write_side(tmp_path / "new", provenance="b", overrides=broken)
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert "ok in BASE_DIR, failed in NEW_DIR: RuntimeError: boom" in out
    assert compare_rows(out)["sam", "test_acc"]["seeds"] == "4"  # seeds ok on both sides


def test_bad_gates_and_missing_metrics_are_usage_errors(sides, capsys):
    base, new = sides
    for gate, message in [
        ("test_acc", "expected METRIC:THRESHOLD"),
        ("test_acc:fast", "expected METRIC:THRESHOLD"),
        (":-1", "expected METRIC:THRESHOLD"),
        ("test_ac:-0.01", "has no column 'test_ac' (did you mean 'test_acc'?)"),
        ("peak_rss_bytes:+10%", "no condition has values of that metric on both sides"),
    ]:
        assert main(["compare", str(base), str(new), "--fail-on", gate]) == 2, gate
        assert message in capsys.readouterr().err


def test_nothing_matching_is_a_usage_error_naming_the_settings_that_differ(tmp_path, capsys):
    base = write_side(tmp_path / "base")
    changed = {"epochs": 1, "optimizer": {"name": "sam", "rho": 0.1}}
    write_run(tmp_path / "new", SUITE, run_row("sam", 0.0, 0, 0.9, config_changes=changed), [])
    assert main(["compare", str(base), str(tmp_path / "new" / SUITE)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "matches a run of" in err
    assert "settings that differ: epochs: 200 in BASE_DIR, 1 in NEW_DIR; method: " in err
    assert '"erm", "sam" in BASE_DIR, "sam" in NEW_DIR' in err  # BASE ran erm too: a value set, not one run
    assert "optimizer.rho: 0.05, null in BASE_DIR, 0.1 in NEW_DIR" in err
    assert "noise_rate" not in err and "seed" not in err  # settings alike on both sides are not named


def test_nothing_matching_with_the_same_settings_names_the_seeds(tmp_path, capsys):
    write_run(tmp_path / "base", SUITE, run_row("sam", 0.0, 0, 0.9), [])
    write_run(tmp_path / "new", SUITE, run_row("sam", 0.0, 3, 0.9), [])
    assert main(["compare", str(tmp_path / "base" / SUITE), str(tmp_path / "new" / SUITE)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "the same settings, but no seed in common (seeds 0 in BASE_DIR, 3 in NEW_DIR)" in err


def test_compare_and_report_show_an_accuracy_the_same_way(sides, tmp_path, capsys):
    base, new = sides
    assert main(["report", str(base), "-o", str(tmp_path / "report")]) == 0
    (report,) = [r for r in markdown_rows((tmp_path / "report" / "report.md").read_text(), "| dataset ")
                 if r["method"] == "sam"]  # fmt: skip
    capsys.readouterr()
    assert main(["compare", str(base), str(new)]) == 0
    compared = compare_rows(capsys.readouterr().out)["sam", "test_acc"]
    shown = report["test acc % (mean +- std)"].strip("*").split(" +- ")[0]  # sam is the best here: bold
    assert shown == compared["base"] == f"{100 * SAM.mean():.2f}"


def test_gate_parsing():
    assert Gate.parse("test_acc:-0.005") == Gate("test_acc:-0.005", "test_acc", -0.005, False, -1)
    assert Gate.parse("train_time_s:+10%") == Gate("train_time_s:+10%", "train_time_s", 0.1, True, 1)
    assert Gate.parse("grad_evals:0").direction == 0
    relative = Gate.parse("train_time_s:+10%")
    assert relative.fails(10.0, 11.5) and not relative.fails(10.0, 10.9) and relative.fails(0.0, 1.0)
    absolute = Gate.parse("test_acc:-0.005")
    assert absolute.fails(0.95, 0.944) and not absolute.fails(0.95, 0.946) and not absolute.fails(0.95, 0.99)
    either = Gate.parse("x:0.1")
    assert either.fails(1.0, 1.2) and either.fails(1.0, 0.8) and not either.fails(1.0, 1.05)
    assert math.isclose(Gate.parse("x:-5%").threshold, -0.05)
