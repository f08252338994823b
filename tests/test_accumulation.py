"""Gradient accumulation (the run setting ``micro_batch_size``, ``BatchClosure(micro_batch_size=...)``).

Without BatchNorm, every built-in preset's step on micro-batches equals its step on the whole batch (to
1e-6 on CPU: the accumulated gradient is the batch gradient up to rounding), in both passes, so the
perturbation is computed from the whole batch's gradient. With BatchNorm, each micro-batch normalizes with
its own statistics (the step differs, as with a smaller batch) and the running statistics are updated once
per step. The activation memory a pass holds falls to that of one micro-batch.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.cli import main
from harness.plugins import Registry
from harness.results.read import read_runs

from .conftest import write_suite

BATCH, MICRO = 48, 16
REGISTRY = Registry.from_plugins()
PRESETS = sorted(REGISTRY.names("preset"))


def mlp(seed: int = 0, *, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    norm = [nn.BatchNorm1d(32)] if batchnorm else []
    return nn.Sequential(nn.Linear(20, 32), *norm, nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))


def batches(steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 20, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator))
        for _ in range(steps)
    ]


def trajectory(preset: str, micro: int, *, batchnorm: bool = False, steps: int = 4) -> nn.Module:
    model = mlp(batchnorm=batchnorm)
    optimizer = harness.create_optimizer(
        preset, model, total_steps=steps
    )  # the preset's base optimizer (LayerSAM: LAMB)
    modules = harness.batchnorm_modules(model)
    for inputs, targets in batches(steps):
        closure = harness.BatchClosure(model, F.cross_entropy, inputs, targets, modules, micro_batch_size=micro)
        optimizer.step(closure)
        closure.finish()
    return model


def _sign_based(preset: str) -> bool:
    """Whether the preset perturbs along sign(g) (the l-infinity form: SAM-pinf, LayerSAM, Look-LayerSAM)."""
    return REGISTRY.get("preset", preset).optimizer_params.get("norm") == "linf"


@pytest.mark.parametrize("preset", PRESETS)
def test_micro_batches_take_the_whole_batch_step_for_every_preset(preset):
    # sign(g) of a gradient component that only rounding makes nonzero flips with the order of summation, and
    # Look-LayerSAM's g_v (rho = 1) amplifies the flip to 1e-3 in float32: sign-based presets are checked in
    # float64, where micro-batches and the whole batch agree to 1e-12; the others in float32, to 1e-6.
    dtype, tolerance = (torch.float64, 1e-10) if _sign_based(preset) else (torch.float32, 1e-6)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        start, whole, split = mlp(), trajectory(preset, 0), trajectory(preset, MICRO)
    finally:
        torch.set_default_dtype(default)
    for (name, expected), actual in zip(whole.named_parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=tolerance, msg=f"{preset}: {name}")
    assert any(not torch.equal(a, b) for a, b in zip(whole.parameters(), start.parameters(), strict=True))


def test_with_batchnorm_each_micro_batch_normalizes_itself_and_the_statistics_update_once_per_step():
    whole, split = trajectory("sam", 0, batchnorm=True), trajectory("sam", MICRO, batchnorm=True)
    assert max((a - b).abs().max().item() for a, b in zip(whole.parameters(), split.parameters(), strict=True)) > 1e-4
    norm = harness.batchnorm_modules(split)[0]
    assert int(norm.num_batches_tracked) == 4  # one update per step, not one per micro-batch

    model = mlp(batchnorm=True)  # one step: running mean = (1 - m) start + m (mean of the micro-batch means)
    norm = harness.batchnorm_modules(model)[0]
    inputs, targets = batches(1)[0]
    with torch.no_grad():
        features = model[0](inputs)
    expected = (1 - norm.momentum) * norm.running_mean + norm.momentum * features.mean(0)
    optimizer = harness.create_optimizer("sam", model, base={"name": "momentum", "lr": 0.0, "momentum": 0.9})
    optimizer.step(harness.BatchClosure(model, F.cross_entropy, inputs, targets, [norm], micro_batch_size=MICRO))
    torch.testing.assert_close(norm.running_mean, expected, rtol=0, atol=1e-6)
    assert int(norm.num_batches_tracked) == 1


class SavedActivations:
    """The bytes of the activations autograd holds for backward, live (``saved_tensors_hooks``), and their peak.

    Tensors that are parameters (a linear layer saves its weight) are not activations and are left out."""

    def __init__(self, params) -> None:
        self.params = {p.data_ptr() for p in params}
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> _Saved:
        return _Saved(tensor, self, 0 if tensor.data_ptr() in self.params else tensor.numel() * tensor.element_size())

    @staticmethod
    def unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor


class _Saved:
    def __init__(self, tensor: torch.Tensor, counter: SavedActivations, size: int) -> None:
        self.tensor, self.counter, self.size = tensor, counter, size
        counter.live += size
        counter.peak = max(counter.peak, counter.live)

    def __del__(self) -> None:  # autograd frees what it saved once backward has used it
        self.counter.live -= self.size


def _peak_saved_bytes(micro: int) -> int:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 5))
    inputs, targets = torch.randn(256, 20), torch.randint(0, 5, (256,))
    optimizer = harness.create_optimizer("sam", model, base={"name": "momentum", "lr": 0.1, "momentum": 0.9})
    saved = SavedActivations(model.parameters())
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
        optimizer.step(harness.BatchClosure(model, F.cross_entropy, inputs, targets, micro_batch_size=micro))
    assert saved.live == 0
    return saved.peak


def test_the_activation_memory_of_a_pass_falls_to_one_micro_batch():
    whole, split = _peak_saved_bytes(0), _peak_saved_bytes(64)
    print(f"peak saved-activation bytes per pass: whole batch of 256 {whole}, micro-batches of 64 {split}")
    assert split < 0.4 * whole


def test_the_run_setting_reaches_the_closure_and_the_run_id(tmp_path):
    text = """
        name: accumulate
        defaults: {epochs: 1, batch_size: 64, micro_batch_size: %d}
        methods: [sam]
        models: [{name: mlp, hidden: 32}]
        datasets: [{name: digits, limit_train: 256, limit_test: 128}]
    """
    rows = {}
    for micro in (0, 16):
        suite = write_suite(tmp_path / f"s{micro}.yaml", text % micro)
        assert main(["run", str(suite), "--results-dir", str(tmp_path / f"out{micro}"), "--set", "seeds=[0]"]) == 0
        rows[micro] = read_runs(tmp_path / f"out{micro}" / "accumulate").iloc[0]
    assert rows[0]["run_id"] != rows[16]["run_id"]
    assert rows[16]["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=1e-5)
    assert rows[16]["grad_evals"] == rows[0]["grad_evals"]
