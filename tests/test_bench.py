"""``harness bench``: tiny settings, checked for the files, the columns and sane values (no timing targets:
those are the README's, measured on a quiet machine)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness.bench import BENCH_SCHEMA, Bench, BenchConfig, _excess, _expected_fraction, markdown, targets
from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.plugins import Registry

TINY = ["--model", "mlp", "--input-shape", "1,8,8", "--batch", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_plugins()


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
    assert "| method | step ms" in text and "| bare-sam |" in text and "| sam / erm |" in text
    assert "1 thread" in text
    assert text in capsys.readouterr().out


def test_theoretical_ratios_of_the_presets(registry):
    expected = {"erm": 0.0, "sam": 1.0, "gsam": 1.0, "nusam": 1.0, "looksam": 0.2, "sam-k": 0.2}
    for preset, fraction in expected.items():
        spec = registry.get("preset", preset)
        scheduler = registry.create("scheduler", spec.scheduler, **spec.scheduler_params)
        assert _expected_fraction(scheduler) == pytest.approx(fraction), preset
    for stochastic in ("ae-sam", "ss-sam"):  # 1 + the measured %SAM
        spec = registry.get("preset", stochastic)
        assert _expected_fraction(registry.create("scheduler", spec.scheduler, **spec.scheduler_params)) is None


def test_periodic_and_stochastic_rows_use_whole_periods_and_measured_fractions(registry):
    config = BenchConfig(
        model="mlp",
        input_shape=(1, 8, 8),
        batch=8,
        methods=("erm", "looksam", "ss-sam", "nusam"),
        references=(),
        repeats=2,
        steps=5,
        warmup=1,
    )
    bench = Bench(config, registry)
    candidates = [bench.build(name) for name in config.methods]
    nusam = candidates[-1]
    assert nusam.warmup >= nusam.optimizer.scheduler.first_step(bench.total_steps)  # the delay is spent untimed
    times = bench.time(candidates)
    assert all(len(values) == 2 and min(values) > 0 for values in times.values())
    looksam, ss_sam = candidates[1].counters, candidates[2].counters
    assert looksam.steps == 10 and looksam.perturbed == 2 and looksam.evaluations == 12.0
    assert nusam.counters.perturbed == nusam.counters.steps == 10
    assert ss_sam.evaluations == ss_sam.steps + ss_sam.perturbed


def test_targets_and_markdown_from_rows():
    def row(method, **values):
        base = {
            "method": method,
            "device": "cpu",
            "ratio_to_erm": None,
            "ratio_to_sam": None,
            "sam_fraction": None,
            "counterpart_ratio": None,
            "extra_state_bytes": 0,
        }
        return {**base, **values}

    rows = [
        row("erm", ratio_to_erm=1.0),
        row("sam", ratio_to_erm=2.01, ratio_to_sam=1.0, extra_state_bytes=1000),
        row("ae-sam", ratio_to_erm=1.6, sam_fraction=0.5, excess_over_theory=0.1),
        row("nusam", ratio_to_sam=1.07, extra_state_bytes=5),
        row("po-sam", counterpart_ratio=0.97),
    ]
    checks = {what.split(" (")[0]: (value, limit) for what, value, limit in targets(rows)}
    assert checks["sam / erm"] == (2.01, 2.05)
    assert checks["ae-sam / erm -"] == (0.1, 0.05)
    assert checks["nusam / sam"] == (1.07, 1.05)
    assert checks["sam / pytorch-optimizer SAM"] == (0.97, 1.0)
    assert checks["nusam extra optimizer state / sam's"] == (0.005, 0.01)
    assert "Nothing was measured" in markdown([], BenchConfig())


def test_excess_over_theory_uses_each_rounds_own_fraction():
    times = {"erm": [1.0, 2.0, 1.0], "ae-sam": [1.3, 3.2, 1.9]}
    # rounds perturbed 20%, 50%, 100% of their steps: excesses 0.1, 0.1, -0.1
    assert _excess(times, "ae-sam", "erm", None, [0.2, 0.5, 1.0]) == pytest.approx(0.1)
    assert _excess(times, "ae-sam", "erm", 1.0, []) == pytest.approx(-0.4)  # a fixed theory of 2.0
    assert _excess(times, "sam", "erm", 1.0, []) is None


def test_pytorch_optimizer_references_step(registry):
    pytest.importorskip("pytorch_optimizer")
    config = BenchConfig(model="mlp", input_shape=(1, 8, 8), batch=8, methods=("sam",), repeats=1, steps=1)
    bench = Bench(config, registry)
    for name in ("po-sam", "po-gsam"):
        candidate = bench.build(name)
        before = [p.detach().clone() for p in candidate.model.parameters()]
        candidate.step()
        assert candidate.counters.evaluations == 2
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
