"""The scripts in ``benchmarks/`` compare like with like and check what they record (no figure is asserted)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch

from harness.plugins import Registry

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sam_update_cost_steps_both_optimizers_to_the_same_weights():
    """Both timed updates restore the weights exactly and take the same base step (the gradients are fixed,
    so the perturbation does not change them): after three steps the weights agree to rounding."""
    pytest.importorskip("pytorch_optimizer")
    script = _script("sam_update_cost")
    registry = Registry.from_plugins()
    template = registry.create("model", "small-cnn", num_classes=10, input_shape=(1, 8, 8))
    ours, theirs = copy.deepcopy(template), copy.deepcopy(template)
    step_ours, step_theirs = script.harness_sam(registry, ours), script.pytorch_optimizer_sam(theirs)
    for _ in range(3):
        step_ours()
        step_theirs()
    moved = False
    for (name, a), b, start in zip(ours.named_parameters(), theirs.parameters(), template.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved = moved or not torch.equal(a, start)
    assert moved


def test_sam_update_cost_records_medians_and_the_paired_ratio():
    pytest.importorskip("pytorch_optimizer")
    threads = torch.get_num_threads()
    record = _script("sam_update_cost").measure("small-cnn", threads=1, repeats=3, steps=1, warmup=1)
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    for key in ("harness_ms_q1_median_q3", "pytorch_optimizer_ms_q1_median_q3"):
        q1, median, q3 = record[key]
        assert 0 < q1 <= median <= q3
    assert record["ratio_median"] > 0 and record["threads"] == 1 and record["parameters"] > 0


def _row(method, **values):
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


def test_step_cost_checks_the_performance_issues_targets_on_rows():
    rows = [
        _row("erm", ratio_to_erm=1.0),
        _row("sam", ratio_to_erm=2.01, ratio_to_sam=1.0, extra_state_bytes=1000),
        _row("ae-sam", ratio_to_erm=1.6, sam_fraction=0.5, excess_over_theory=0.1),
        _row("nusam", ratio_to_sam=1.07, extra_state_bytes=5),
        _row("po-sam", counterpart_ratio=0.97),
    ]
    checks = {what.split(" (")[0]: (value, limit) for what, value, limit in _script("step_cost").targets(rows)}
    assert checks["sam / erm"] == (2.01, 2.05)
    assert checks["ae-sam / erm -"] == (0.1, 0.05)
    assert checks["nusam / sam"] == (1.07, 1.05)
    assert checks["sam / pytorch-optimizer SAM"] == (0.97, 1.0)
    assert checks["nusam extra optimizer state / sam's"] == (0.005, 0.01)
    cuda = _script("step_cost").targets([_row("sam", device="cuda:0", ratio_to_erm=2.04)])
    assert cuda == [("sam / erm", 2.04, 2.03)]


def test_step_cost_reads_back_the_rows_each_bench_wrote_and_tables_their_targets(tmp_path):
    script = _script("step_cost")
    tiny = ["--model", "mlp", "--input-shape", "1,8,8", "--batch", "8", "--threads", "1"]
    tiny += ["--repeats", "1", "--steps", "1", "--warmup", "0"]
    first = script.bench([*tiny, "--methods", "erm,sam", "--references", "bare-sam"], str(tmp_path))
    second = script.bench([*tiny, "--methods", "erm", "--references", "none"], str(tmp_path))
    assert first[0] == second[0] == 0
    assert [row["method"] for row in first[1]] == ["erm", "sam", "bare-sam"]
    assert [row["method"] for row in second[1]] == ["erm"]  # only what that bench wrote
    text = script.target_tables(first[1])
    assert "## mlp (cpu, 1 thread)" in text and "| sam / erm |" in text
    assert "| harness sam / bare SAM loop (overhead) |" in text


def test_cli_latency_times_both_commands_as_subprocesses_and_records_the_machine():
    record = _script("cli_latency").measure("suites/quickstart.yaml", repeats=2, label="test")
    assert list(record["commands"]) == ["harness plugins", "harness validate suites/quickstart.yaml"]
    for timed in record["commands"].values():
        assert timed["exit_codes"] == [0] and len(timed["seconds"]) == 2
        assert min(timed["seconds"]) <= timed["median_s"] <= max(timed["seconds"])
    assert record["cores"] and record["cpu"] and record["load_before"] is not None
    assert "| test | `harness plugins` |" in _script("cli_latency").markdown([record])
