"""The benchmark scripts in ``benchmarks/`` compare like with like (they record figures; nothing here is timed)."""

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
