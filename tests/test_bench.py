"""``harness bench``: tiny settings, checked for the files, the columns and sane values (no timing targets:
those are ``benchmarks/step_cost.py``'s, measured on a quiet machine), and for what it measures: the
runner's own build and step, and what each scheduler states about itself."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from harness.bench import BENCH_SCHEMA, Bench, BenchConfig, excess_over_theory, markdown, run_bench, time_rounds
from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.errors import ProtocolError
from harness.plugins import Registry

TINY = ["--model", "mlp", "--input-shape", "1,8,8", "--batch", "16", "--threads", "1"]
#: A scheduler the bench knows nothing of but what it states: ERM for 4 steps, then every third step.
EVERY_THIRD = """
    from harness import PerturbationScheduler, PresetSpec, SchedulerSpec, hookimpl


    class EveryThird(PerturbationScheduler):
        def decide(self, ctx):
            return (True, 0.05) if ctx.step >= 4 and ctx.step % 3 == 0 else (False, 0.0)

        def warmup_steps(self, total_steps):
            return 4

        def expected_perturbed_fraction(self, total_steps):
            return 1 / 3


    @hookimpl
    def register_schedulers():
        return [SchedulerSpec("every-third", EveryThird)]


    @hookimpl
    def register_presets():
        return [PresetSpec("every-third", optimizer="sam", scheduler="every-third")]
"""
#: The contract kit's broken plugins: ``broken-one-pass`` reports a perturbed step after one gradient evaluation.
BROKEN = (Path(__file__).parent / "contract_fixtures" / "broken_plugin.py").read_text()
ONE_PASS = """
    from harness import PresetSpec, hookimpl


    @hookimpl
    def register_presets():
        return [PresetSpec("one-pass", optimizer="broken-one-pass")]
"""


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


def tiny(**settings) -> BenchConfig:
    return BenchConfig(**{"model": "mlp", "input_shape": (1, 8, 8), "batch": 8, "references": (), **settings})


def read(folder) -> pd.DataFrame:
    files = sorted((folder / "bench").glob("*.parquet"))
    assert len(files) == 1
    return pd.read_parquet(files[0])


def test_bench_writes_parquet_and_markdown_with_sane_values(tmp_path, capsys):
    code = main(
        [
            "bench",
            *TINY,
            "--methods",
            "erm,sam",
            "--references",
            "bare-erm,bare-sam",
            "--repeats",
            "2",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--results-dir",
            str(tmp_path),
        ]
    )
    assert code == EXIT_OK
    rows = read(tmp_path)
    assert list(rows.columns) == BENCH_SCHEMA.names
    assert rows["method"].tolist() == ["erm", "sam", "bare-erm", "bare-sam"]
    by = rows.set_index("method")
    assert (rows["step_time_median_s"] > 0).all() and (rows["ratio_to_erm"] > 0).all()
    assert by.loc["erm", "ratio_to_erm"] == 1.0 and by.loc["sam", "ratio_to_sam"] == 1.0
    assert by["theoretical_ratio"].to_dict() == {"erm": 1.0, "sam": 2.0, "bare-erm": 1.0, "bare-sam": 2.0}
    assert by.loc["sam", "sam_fraction"] == 1.0 and by.loc["erm", "sam_fraction"] == 0.0
    assert by.loc["sam", "grad_evals_per_step"] == 2.0 and by.loc["erm", "grad_evals_per_step"] == 1.0
    parameters = int(rows["parameters"].iloc[0])
    # momentum buffers for every parameter; SAM and the bare SAM loop add one weight backup
    assert by.loc["erm", "optimizer_state_bytes"] == 4 * parameters
    assert by.loc["sam", "extra_state_bytes"] == 4 * parameters == by.loc["bare-sam", "extra_state_bytes"]
    assert by.loc["bare-erm", "counterpart"] == "erm" and by.loc["bare-erm", "counterpart_ratio"] > 0
    assert (rows["threads"] == 1).all() and (rows["device"] == "cpu").all()
    assert rows["peak_device_bytes"].isna().all()  # CPU: no device memory
    assert math.isclose(by.loc["erm", "throughput_samples_per_s"], 16 / by.loc["erm", "step_time_median_s"])
    text = (tmp_path / "bench" / "bench.md").read_text()
    assert "| method | step ms" in text and "| bare-sam |" in text and "1 thread" in text
    assert "| target |" not in text  # targets are benchmarks/step_cost.py's, not the core's
    assert text in capsys.readouterr().out
    assert "Nothing was measured" in markdown([], BenchConfig())


def test_each_preset_is_a_run_the_runner_builds_with_what_its_scheduler_states(registry):
    config = tiny(methods=("erm", "sam", "gsam", "nusam", "looksam", "sam-k", "ae-sam", "ss-sam"), warmup=1)
    bench = Bench(config, registry)
    expected = {"erm": 0.0, "sam": 1.0, "gsam": 1.0, "nusam": 1.0, "looksam": 0.2, "sam-k": 0.2}
    for name in config.methods:
        candidate = bench.build(name)
        assert candidate.expected_fraction == pytest.approx(expected.get(name)), name  # None: measured
        assert candidate.optimizer.total_steps == config.total_steps == 1 + 5 * 5  # the runner set the run's length
        assert candidate.optimizer.lr_range == (0.0, 0.05)
        delay = math.ceil(0.1 * config.total_steps) if name == "nusam" else 0  # nusam's 10% perturbation delay
        assert candidate.warmup == max(config.warmup, delay), name


def test_a_third_party_scheduler_tells_the_bench_its_share_and_warmup(add_entry_points, tmp_path):
    add_entry_points({"every-third": EVERY_THIRD})
    registry = Registry.from_plugins()
    config = tiny(methods=("erm", "every-third"), warmup=1, repeats=2, steps=3)
    candidate = Bench(config, registry).build("every-third")
    assert candidate.warmup == 4 and candidate.expected_fraction == pytest.approx(1 / 3)
    rows = {row["method"]: row for row in run_bench(config, tmp_path, registry=registry).rows}
    assert rows["every-third"]["theoretical_ratio"] == pytest.approx(4 / 3)
    assert rows["every-third"]["sam_fraction"] == pytest.approx(1 / 3)  # steps 4-9: two of six perturb
    assert rows["every-third"]["warmup"] == 4


def test_the_bench_takes_the_runners_step_protocol_check_included(add_entry_points):
    add_entry_points({"contract-broken": BROKEN, "one-pass": ONE_PASS})
    candidate = Bench(tiny(methods=("one-pass",)), Registry.from_plugins()).build("one-pass")
    with pytest.raises(ProtocolError, match=r"'broken-one-pass' reported a perturbed step after 1 pass\(es\) through"):
        candidate.step()


def test_periodic_and_stochastic_rows_use_whole_periods_and_measured_fractions(registry):
    config = tiny(methods=("erm", "looksam", "ss-sam", "nusam"), repeats=2, steps=5, warmup=1)
    bench = Bench(config, registry)
    candidates = [bench.build(name) for name in config.methods]
    rounds = time_rounds(candidates, repeats=config.repeats, steps=config.steps, device=bench.device)
    assert all(len(values) == 2 and min(values) > 0 for values in rounds.times.values())
    assert rounds.fractions["looksam"] == [0.2, 0.2] and rounds.evaluations["looksam"] == [1.2, 1.2]
    assert rounds.fractions["nusam"] == [1.0, 1.0]  # its delay was spent in the warm-up
    assert all(e == 1 + f for e, f in zip(rounds.evaluations["ss-sam"], rounds.fractions["ss-sam"], strict=True))
    assert candidates[1].state.steps == 1 + 10  # the warm-up counts in the run, not in the rounds


def test_excess_over_theory_uses_each_rounds_own_fraction():
    times = {"erm": [1.0, 2.0, 1.0], "ae-sam": [1.3, 3.2, 1.9]}
    # rounds perturbed 20%, 50%, 100% of their steps: excesses 0.1, 0.1, -0.1
    assert excess_over_theory(times, "ae-sam", "erm", None, [0.2, 0.5, 1.0]) == pytest.approx(0.1)
    assert excess_over_theory(times, "ae-sam", "erm", 1.0, []) == pytest.approx(-0.4)  # a fixed theory of 2.0
    assert excess_over_theory(times, "sam", "erm", 1.0, []) is None


def test_pytorch_optimizer_references_step(registry):
    pytest.importorskip("pytorch_optimizer")
    bench = Bench(tiny(methods=("sam",), references=("po-sam", "po-gsam"), repeats=1, steps=1), registry)
    for name in ("po-sam", "po-gsam"):
        candidate = bench.build(name)
        before = [p.detach().clone() for p in candidate.model.parameters()]
        candidate.step()
        assert candidate.state.grad_evals == 2
        assert any(not p.detach().equal(b) for p, b in zip(candidate.model.parameters(), before, strict=True))


@pytest.mark.parametrize(
    "arguments",
    [["--methods", "erm,not-a-preset"], ["--references", "po-adam"], ["--repeats", "0"], ["--threads", "two"]],
)
def test_bench_refuses_bad_arguments(tmp_path, arguments, capsys):
    code = main(["bench", *TINY, *arguments, "--results-dir", str(tmp_path)])
    assert code == EXIT_USAGE
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "bench").exists()
