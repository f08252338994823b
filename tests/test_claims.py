"""Claims (``harness.suite.claims``) and their verdicts (``harness.report.claims``): the shipped file is valid
and cites real tables and presets, a malformed claim is an error naming the file, claim and key, and the
verdicts on result tables built here are the ones computed by hand."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest
from scipy import stats

from harness.plugins import Registry
from harness.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, judge, verdict_frame
from harness.results.reference import read_table
from harness.suite.claims import SHIPPED, Claim, all_claims, load_claims

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def claim(**changes) -> Claim:
    fields = dict(
        id="sam-beats-erm",
        paper="003_dc502e6d0d8ca36d",
        table="Table 4",
        statement="SAM beats ERM under label noise.",
        metric="test_acc",
        method="sam",
        against="erm",
        direction="at_least",
        bound=5.0,
        paper_effect=20.0,
        noise_min=0.2,
    )
    return Claim(**{**fields, **changes})


def runs(values: dict[str, list[float]], column="test_acc", noise=0.6, role="", seeds=None) -> pd.DataFrame:
    """Ok rows of one condition: ``values`` maps a preset (its method's name too) to one value per seed."""
    rows = []
    for preset, per_seed in values.items():
        for seed, value in zip(seeds or range(len(per_seed)), per_seed, strict=True):
            rows.append(
                dict(suite="s", dataset="digits", model="mlp", noise_rate=noise, method=preset, preset=preset,
                     seed=seed, status="ok", role=role, **{column: value})
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_a_clear_win_is_reproduced_with_the_paired_interval():
    sam, erm = [0.80, 0.82, 0.81], [0.60, 0.63, 0.60]
    (verdict,), uncovered = judge(runs({"sam": sam, "erm": erm}), [claim()])
    diffs = [100 * (a - b) for a, b in zip(sam, erm, strict=True)]
    half = stats.t.ppf(0.975, 2) * stats.tstd(diffs) / math.sqrt(3)
    assert not uncovered and verdict.paired and verdict.n == 3
    assert verdict.effect == pytest.approx(sum(diffs) / 3)
    assert (verdict.low, verdict.high) == pytest.approx((sum(diffs) / 3 - half, sum(diffs) / 3 + half))
    assert verdict.verdict == REPRODUCED and verdict.judged == "fixed settings"


def test_a_clear_loss_is_not_reproduced():
    (verdict,), _ = judge(runs({"sam": [0.60, 0.61, 0.60], "erm": [0.62, 0.64, 0.63]}), [claim()])
    assert verdict.high < 5.0 and verdict.verdict == NOT_REPRODUCED


def test_a_two_seed_tie_is_inconclusive_and_says_how_many_seeds_would_settle_it():
    (verdict,), _ = judge(runs({"sam": [0.70, 0.64], "erm": [0.66, 0.63]}), [claim()])
    diffs = [4.0, 1.0]
    assert verdict.low < 5.0 < verdict.high and verdict.verdict == INCONCLUSIVE
    spread, gap = stats.tstd(diffs), abs(2.5 - 5.0)
    needed = next(n for n in range(2, 1000) if stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) < gap)
    assert f"about {needed} seeds per method" in verdict.settle


def test_one_seed_has_no_interval_and_unshared_seeds_take_welchs():
    (one,), _ = judge(runs({"sam": [0.9], "erm": [0.5]}), [claim()])
    assert one.verdict == INCONCLUSIVE and "no interval" in one.settle
    rows = pd.concat([runs({"sam": [0.80, 0.82, 0.81]}), runs({"erm": [0.60, 0.63, 0.60]}, seeds=[5, 6, 7])])
    (welch,), _ = judge(rows, [claim()])
    interval = stats.ttest_ind([80, 82, 81], [60, 63, 60], equal_var=False).confidence_interval(0.95)
    assert not welch.paired and (welch.low, welch.high) == pytest.approx((interval.low, interval.high))


def test_fixed_settings_and_tuned_finals_are_judged_apart_and_conditions_outside_when_are_not():
    rows = pd.concat(
        [
            runs({"sam": [0.80, 0.82, 0.81], "erm": [0.60, 0.63, 0.60]}),
            runs({"sam (tuned)": [0.60, 0.61, 0.60], "erm (tuned)": [0.62, 0.64, 0.63]}, role="final"),
            runs({"sam": [0.9, 0.9], "erm": [0.1, 0.1]}, noise=0.0),  # clean: outside the claim's noise range
        ],
        ignore_index=True,
    )
    rows.loc[rows["method"].str.endswith("(tuned)"), "preset"] = rows["method"].str.removesuffix(" (tuned)")
    verdicts, _ = judge(rows, [claim()])
    assert {(v.judged, v.method, v.verdict) for v in verdicts} == {
        ("fixed settings", "sam", REPRODUCED),
        ("tuned", "sam (tuned)", NOT_REPRODUCED),
    }
    frame = verdict_frame(verdicts)
    assert list(frame["noise_rate"]) == [0.6, 0.6] and set(frame["verdict"]) == {REPRODUCED, NOT_REPRODUCED}


def test_cost_ratio_sam_fraction_and_extra_state_and_params():
    cost = claim(metric="cost_ratio", method="looksam", direction="at_most", bound=1.3, params={"p_scheduler_k": 5.0})
    rows = runs({"looksam": [12.0, 12.2, 11.9], "erm": [10.0, 10.1, 9.9]}, column="train_time_s")
    rows["p_scheduler_k"] = 5.0
    (verdict,), _ = judge(rows, [cost])
    logs = [math.log(a / b) for a, b in ((12.0, 10.0), (12.2, 10.1), (11.9, 9.9))]
    assert verdict.effect == pytest.approx(math.exp(sum(logs) / 3)) and verdict.verdict == REPRODUCED
    rows["p_scheduler_k"] = 2.0
    assert (
        judge(rows, [cost]) == ([], judge(rows, [cost])[1])
        and "p_scheduler_k = 5.0" in judge(rows, [cost])[1][0].missing
    )
    fraction = claim(metric="sam_fraction", method="ae-sam", against="", direction="at_most", bound=0.6)
    (verdict,), _ = judge(runs({"ae-sam": [0.50, 0.52, 0.49]}, column="sam_fraction"), [fraction])
    assert verdict.effect == pytest.approx(0.5033333) and verdict.verdict == REPRODUCED
    memory = claim(metric="extra_state_ratio", method="nusam", against="sam", direction="at_most", bound=0.2)
    state = runs({"nusam": [100.0], "sam": [1000.0]}, column="perturbation_state_bytes")
    (verdict,), _ = judge(state, [memory])
    assert verdict.effect == pytest.approx(0.1) and verdict.verdict == REPRODUCED  # exact: one seed decides


def test_a_claim_the_results_cannot_test_says_what_is_missing_and_what_to_run():
    _, (uncovered,) = judge(runs({"sam": [0.8, 0.8]}), [claim(suites=("digits_memorization.yaml",))])
    assert uncovered.missing == "no ok run of preset erm; run suites/digits_memorization.yaml"


def test_the_shipped_claims_are_valid_and_cite_real_tables_and_presets(registry):
    claims = load_claims(SHIPPED, registry)
    tables = {(row["paper"], row["table"]) for row in read_table(ROOT / "suites" / "reference" / "paper_results.csv")}
    papers = {path.stem for path in (ROOT.parent / "shared" / "papers").glob("*.txt")}
    assert len(claims) >= 10
    for item in claims:
        assert (item.paper, item.table) in tables or item.table.startswith(("Sec.", "Fig.")), item.id
        assert not papers or item.paper in papers, item.id
        assert item.method in registry.names("preset") and (
            not item.against or item.against in registry.names("preset")
        )
        assert all((ROOT / "suites" / suite).is_file() for suite in item.suites), item.id
    wanted = {"003": {"test_acc"}, "004": {"test_acc"}, "000": {"test_acc", "cost_ratio"},
              "001": {"test_acc", "sam_fraction"}, "002": {"best_test_acc", "extra_state_ratio"}}  # fmt: skip
    for paper, metrics in wanted.items():
        assert metrics <= {c.metric for c in claims if c.paper.startswith(paper)}, paper


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("metric: test_acc", "metric: test_accuracy"), r"claims\[0\] \(x\)\.metric: 'test_accuracy' is invalid"),
        (("method: sam", "method: smа"), r"claims\[0\] \(x\)\.method: 'smа' is invalid; expected a preset"),
        (("table: Table 4", "table: Table 9"), r"claims\[0\] \(x\)\.table: 'Table 9' is invalid; expected a table"),
        (("direction: at_least", "direction: above"), r"claims\[0\] \(x\)\.direction: 'above' is invalid"),
        (("bound: 5.0", "bound: five"), r"claims\[0\] \(x\)\.bound: 'five' is invalid; expected a number"),
        (("    against: erm\n", ""), r"claims\[0\] \(x\)\.against: missing is invalid; expected a preset to compare"),
        (("    note: n\n", "    notes: n\n"), r"claims\[0\] \(x\)\.notes: unknown key \(did you mean 'note'"),
        (("id: x", "id: X Y"), r"claims\[0\] \(X Y\)\.id: 'X Y' is invalid; expected lowercase"),
    ],
)
def test_a_malformed_claim_is_an_error_naming_the_file_claim_and_key(tmp_path, registry, change, message):
    text = """claims:
  - id: x
    paper: 003_dc502e6d0d8ca36d
    table: Table 4
    statement: s
    metric: test_acc
    method: sam
    against: erm
    direction: at_least
    bound: 5.0
    paper_effect: 20.0
    note: n
"""
    path = tmp_path / "claims.yaml"
    path.write_text(text.replace(*change))
    with pytest.raises(Exception) as error:
        load_claims(path, registry)
    assert str(path) in str(error.value) and re.search(message, str(error.value)), str(error.value)


def test_a_plugin_registers_claims_and_cannot_take_a_shipped_id(tmp_path):
    from harness.contract.hookspecs import hookimpl

    own = tmp_path / "own.yaml"
    own.write_text(
        "claims:\n  - {id: my-variant-beats-sam, paper: my paper, table: Table 2, statement: s, metric: test_acc,\n"
        "     method: sam-k, against: sam, direction: at_least, bound: 0.0, paper_effect: 0.4}\n"
    )

    class Plugin:
        @hookimpl
        def register_claims(self):
            return [str(own)]

    registry = Registry.from_plugins()
    registry.manager.register(Plugin())
    assert "my-variant-beats-sam" in {c.id for c in all_claims(registry)}
    first = load_claims(SHIPPED, registry)[0].id
    own.write_text(own.read_text().replace("my-variant-beats-sam", first))
    with pytest.raises(Exception, match=rf"claim '{first}' is already claimed by .*claims.yaml"):
        all_claims(registry)


def test_harness_validate_checks_a_claims_file(capsys, tmp_path):
    from harness.cli import main

    assert main(["validate", str(SHIPPED)]) == 0
    out = capsys.readouterr().out
    assert f"{SHIPPED}: valid, " in out and "sam-beats-erm-under-label-noise: sam vs erm, test_acc >= 5 points" in out
    bad = tmp_path / "claims.yaml"
    bad.write_text(SHIPPED.read_text().replace("metric: cost_ratio", "metric: cost"))
    assert main(["validate", str(bad)]) == 2
    assert re.search(r"claims\[4\] \(looksam-cost\)\.metric: 'cost' is invalid", capsys.readouterr().err)


def test_compare_gates_on_a_claim(tmp_path, capsys):
    """The synthetic folder has SAM 1.3 points ahead of ERM on clean data on 5 shared seeds; a NEW folder where
    SAM falls 1.5 points behind no longer reproduces sam-beats-erm-clean."""
    from harness.cli import main
    from harness.results.store import write_run

    from .test_report import ACCURACY, SEEDS, SUITE, history_rows, run_row, write_synthetic

    base = write_synthetic(tmp_path / "base")
    new = tmp_path / "new"
    for (noise, method), values in ACCURACY.items():
        for seed, acc in zip(SEEDS, values, strict=False):
            if acc is not None:
                acc = acc - 0.028 if (noise, method) == (0.0, "sam") else acc
                write_run(new, SUITE, run_row(method, noise, seed, acc), history_rows(acc, noise))
    assert main(["compare", str(base), str(base), "--fail-on", "claim:sam-beats-erm-clean"]) == 0
    assert main(["compare", str(base), str(new / SUITE), "--fail-on", "claim:sam-beats-erm-clean"]) == 1
    out = capsys.readouterr().out
    assert "claim:sam-beats-erm-clean: fixed settings, synth" in out and "not reproduced in NEW_DIR" in out
    assert main(["compare", str(base), str(base), "--fail-on", "claim:sam-beats-erm-clen"]) == 2
    assert "did you mean 'sam-beats-erm-clean'" in capsys.readouterr().err
