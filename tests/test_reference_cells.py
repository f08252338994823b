"""Published cells (``harness.suite.references``, ``harness.report.published``): every matching cell of every
reference block is attached to a run, carries what the paper reports (final or best) and where its setting
differs, reaches the result row, and is compared in the report with the measured column it reports."""

from __future__ import annotations

import csv
import dataclasses
import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.listing import print_runs
from harness.contract.run_spec import ReferenceCell, run_from_payload, run_payload
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.report.summary import summarize
from harness.report.tables import summary_table
from harness.results.columns import crash_row, identity
from harness.suite import load_suite

from .conftest import write_suite

#: A reference table of two papers that both report erm and sam on digits/mlp: paper p1 the final test
#: accuracy, paper p2 the best iterate's test error (so its sam cell is 100 - 4.0 = 96.0% accuracy).
TABLE = """\
paper,table,dataset,model,label_noise,method,metric,value,reported,pct_sam,note
p1,Table 1,digits,mlp_paper,0.0,sgd,test_acc,90.0,final,0,
p1,Table 1,digits,mlp_paper,0.0,sam,test_acc,92.5,final,100,
p2,Table 3,digits,mlp_paper,0.0,erm,test_error,8.0,best,0,
p2,Table 3,digits,mlp_paper,0.0,sam,test_error,4.0,best,100,
"""
SUITE = """
name: cells
defaults: {epochs: 1}
methods: [erm, sam, sam-k]
models: [mlp]
datasets: [digits]
seeds: [0, 1]
reference:
  - paper: p1
    table: Table 1
    methods: {erm: sgd, sam: sam}
    models: {mlp: mlp_paper}
    differs: "p1 trains with batch 256"
  - paper: p2
    table: Table 3
    methods: {erm: erm, sam: sam}
    models: {mlp: mlp_paper}
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def _suite(tmp_path: Path, registry: Registry, text: str = SUITE, table: str = TABLE):
    (tmp_path / "reference").mkdir(exist_ok=True)
    (tmp_path / "reference" / "paper_results.csv").write_text(table)
    return load_suite(write_suite(tmp_path / "cells.yaml", text), registry)


def test_a_run_two_papers_report_gets_both_cells_in_block_order(tmp_path, registry):
    runs = {(run.method, run.seed): run for run in _suite(tmp_path, registry).runs}
    assert runs["sam", 0].references == (
        ReferenceCell("p1", "Table 1", "sam", "test_acc", 0.925, "final", "p1 trains with batch 256"),
        ReferenceCell("p2", "Table 3", "sam", "test_error", pytest.approx(0.96), "best", ""),
    )
    assert [cell.source for cell in runs["erm", 1].references] == ["p1 Table 1 (sgd)", "p2 Table 3 (erm)"]
    assert [cell.measured_column for cell in runs["erm", 1].references] == ["test_acc", "best_test_acc"]
    assert runs["sam-k", 0].references == ()  # neither block maps sam-k


def test_cells_change_no_run_id_and_survive_the_payload_and_the_result_row(tmp_path, registry):
    with_cells = _suite(tmp_path, registry).runs
    without = _suite(tmp_path, registry, SUITE.split("reference:")[0]).runs
    assert [run.run_id for run in with_cells] == [run.run_id for run in without]
    run = with_cells[1]  # sam, seed 0
    assert run_from_payload(run_payload(run)) == run
    for row in (identity(run), crash_row(run, "boom", None)):
        assert [ReferenceCell(**cell) for cell in json.loads(row["references"])] == list(run.references)


@pytest.mark.parametrize(
    ("text", "table", "message"),
    [
        (
            SUITE.replace('differs: "p1 trains with batch 256"', "differs: [256]"),
            TABLE,
            r"cells\.yaml: reference\[0\]\.differs: \[256\] is invalid; expected a text",
        ),
        (
            SUITE,
            TABLE.replace("4.0,best", "4.0,last"),
            r"paper_results\.csv: p2 Table 3 \(sam, mlp_paper, noise 0\.0\): reported 'last' is invalid; "
            r"expected final or best",
        ),
    ],
)
def test_a_bad_differs_or_reported_names_the_file_key_and_value(tmp_path, registry, text, table, message):
    with pytest.raises(SuiteError, match=message):
        _suite(tmp_path, registry, text, table)


def test_a_table_without_the_reported_column_reads_final(tmp_path, registry):
    lines = [line.split(",") for line in TABLE.splitlines()]
    column = lines[0].index("reported")
    table = "".join(",".join(f for i, f in enumerate(fields) if i != column) + "\n" for fields in lines)
    assert "reported" not in table and "best" not in table
    runs = _suite(tmp_path, registry, table=table).runs
    assert {cell.reported for run in runs for cell in run.references} == {"final"}


def test_validate_lists_each_runs_cells_with_what_they_report(tmp_path, registry, capsys):
    suite = _suite(tmp_path, registry)
    print_runs(suite, every=False)
    out = capsys.readouterr().out
    sam = next(run for run in suite.runs if run.method == "sam")
    assert (
        f"{sam.run_id}: p1 Table 1 (sam) final 92.50% [differs: p1 trains with batch 256]; "
        "p2 Table 3 (sam) best 96.00% (published as test error)"
    ) in out
    assert "extensions: none" in out


def test_validate_summarised_counts_the_runs_with_cells_per_paper_and_table(tmp_path, registry, capsys, monkeypatch):
    monkeypatch.setattr("harness.cli.listing.SUMMARY_OVER", 0)
    print_runs(_suite(tmp_path, registry), every=False)
    out = capsys.readouterr().out
    # erm and sam, two seeds each, are in both papers; sam-k in neither
    assert "  4 runs: p1 Table 1 final [differs: p1 trains with batch 256]\n  4 runs: p2 Table 3 best\n" in out


def _row(method: str, seed: int, final: float, best: float, cells: list[dict]) -> dict:
    return {
        "run_id": f"{method}-s{seed}",
        "suite": "cells",
        "method": method,
        "model": "mlp",
        "dataset": "digits",
        "noise_rate": 0.0,
        "seed": seed,
        "status": "ok",
        "test_acc": final,
        "best_test_acc": best,
        "train_time_s": 1.0,
        "references": json.dumps(cells),
        "extension": "",
    }


def test_the_report_compares_a_final_cell_with_test_acc_and_a_best_cell_with_best_test_acc(tmp_path, registry):
    sam = next(run for run in _suite(tmp_path, registry).runs if run.method == "sam")
    cells = [dataclasses.asdict(cell) for cell in sam.references]
    final, best = [0.90, 0.94], [0.93, 0.97]  # best over training is above the final accuracy
    runs = pd.DataFrame([_row("sam", seed, final[seed], best[seed], cells) for seed in (0, 1)])
    (summary,) = summarize(runs).to_dict("records")
    first, second = json.loads(summary["paper_cells"])
    assert (first["measured_column"], first["measured_mean"]) == ("test_acc", pytest.approx(0.92))
    assert (second["measured_column"], second["measured_mean"]) == ("best_test_acc", pytest.approx(0.95))
    assert summary["paper_diff"] == pytest.approx(0.92 - 0.925)
    (row,) = summary_table(summarize(runs)).rows
    shown = next(text for text in row if text.startswith("p1 Table 1"))
    std_final, std_best = 100 * statistics.stdev(final), 100 * statistics.stdev(best)
    assert shown == (
        f"p1 Table 1 (sam), final (test_acc): paper 92.50 / measured 92.00 +- {std_final:.2f} (n=2), diff -0.50 "
        "[differs: p1 trains with batch 256]; "
        f"p2 Table 3 (sam), best (best_test_acc): paper 96.00 / measured 95.00 +- {std_best:.2f} (n=2), "
        "diff -1.00 (published as test error)"
    )


def test_the_report_reads_a_folder_written_before_the_references_column():
    rows = [_row("sam", seed, 0.9 + seed / 100, 0.95, []) for seed in (0, 1)]
    old = pd.DataFrame(rows).drop(columns=["references", "extension"])
    old["reference_test_acc"], old["reference_source"] = 0.92, "p1 Table 1 (sam)"
    (summary,) = summarize(old).to_dict("records")
    (cell,) = json.loads(summary["paper_cells"])
    assert (cell["source"], cell["reported"], cell["measured_column"]) == ("p1 Table 1 (sam)", "final", "test_acc")
    assert cell["measured_mean"] == pytest.approx(0.905) and summary["extension"] == ""


SHIPPED = Path(__file__).resolve().parents[1] / "suites"


def test_every_row_of_the_shipped_table_says_final_or_best():
    """nuSAM's Tables 2-3 report the best iterate (002 Sec. 5.1, seed_nusam.md 6.1); the other tables, final."""
    with open(SHIPPED / "reference" / "paper_results.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert rows and {row["reported"] for row in rows} <= {"final", "best"}
    best = {(row["paper"][:3], row["table"]) for row in rows if row["reported"] == "best"}
    assert best == {("002", "Table 2"), ("002", "Table 3")}


@pytest.mark.parametrize("name", sorted(path.name for path in SHIPPED.glob("*.yaml")))
def test_the_cells_of_a_shipped_suite_change_no_run_id(name, registry):
    for run in load_suite(SHIPPED / name, registry).runs:
        assert "references" not in run.config()
        assert dataclasses.replace(run, references=()).run_id == run.run_id


@pytest.mark.parametrize(("name", "table"), [("cifar10.yaml", "Table 1"), ("cifar_noise.yaml", "Table 4")])
def test_a_shipped_run_that_sam_reports_carries_the_ae_sam_and_the_sam_cell(name, table, registry):
    """AE-SAM's block comes first in these suites; SAM's cell (with its ``differs``) is attached beside it."""
    runs = load_suite(SHIPPED / name, registry).runs
    run = next(run for run in runs if run.method == "sam" and len(run.references) == 2)
    ae_sam, sam = run.references
    assert (ae_sam.paper[:3], sam.paper[:3], sam.table) == ("001", "003", table)
    assert sam.differs.startswith("SAM (003 Sec. 3.")
