"""Measurement rules (shared/DESIGN.md section 7): train-only time, optimizer-state bytes, quantiles."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.contract.held import held_tensors, optimizer_state_bytes, perturbation_state_bytes, storage_bytes
from harness.results.read import read_history, read_runs
from harness.run.row import _step_quantiles

from .conftest import write_suite

SLOW_PLUGIN = """
import time

from harness import DatasetSpec, MetricSpec, hookimpl
from harness_vision.digits import load_digits


def slow_digits(*, device, delay=0.0):
    data = load_digits(device=device)
    def augment(batch, generator):   # training batches: fast
        return batch
    def normalize(batch):            # evaluation batches: slow when delay > 0
        time.sleep(delay)
        return batch
    data.augment, data.normalize = augment, normalize
    return data


def sleepy_metric(seconds=0.0):
    def metric(model, batches, loss_fn):
        time.sleep(seconds)
        return {"sleepy": seconds}
    return metric


@hookimpl
def register_datasets():
    return [DatasetSpec("slow-digits", slow_digits, defaults={"delay": 0.0})]


@hookimpl
def register_metrics():
    return [MetricSpec("sleepy", sleepy_metric, defaults={"seconds": 0.0})]
"""


def test_slow_evaluation_and_metrics_do_not_count_as_train_time(tmp_path, add_entry_points):
    add_entry_points({"slow": SLOW_PLUGIN})
    suite = write_suite(
        tmp_path / "slow.yaml",
        """
        name: slow
        defaults: {epochs: 3, batch_size: 64, eval_batch_size: 64}
        methods: [sam]
        models: [{name: mlp, hidden: 32}]
        datasets: [{name: slow-digits, delay: 0.0}, {name: slow-digits, delay: 0.05}]
        metrics: [{name: sleepy, seconds: 0.5}]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 0
    runs = read_runs(tmp_path / "out" / "slow")
    runs["delay"] = runs["dataset_params"].str.extract(r'"delay": ([0-9.]+)').astype(float)
    fast, slow = runs.sort_values("delay").itertuples()
    # 3 epochs x 6 test batches + 23 training-set batches at the end, x 0.05 s: about 2 s more evaluation
    assert slow.eval_time_s >= 41 * 0.05  # the sleeps alone, whatever else the machine is doing
    # The clocks do not overlap: if evaluation or metrics ran inside the train clock, train + eval + metric
    # time would exceed the run's wall-clock by the >= 2 s of slow evaluation. (Comparing the two runs'
    # train times directly is at the mercy of the machine's load.)
    for run in (fast, slow):
        wall = (run.finished_at - run.started_at).total_seconds()
        assert run.train_time_s + run.eval_time_s + run.metric_time_s <= wall + 0.05
    assert fast.metric_time_s >= 0.5 and slow.metric_time_s >= 0.5
    assert fast.sleepy == 0.5
    history = read_history(tmp_path / "out" / "slow")
    assert history.groupby("run_id")["sleepy"].count().tolist() == [1, 1]  # metrics at the end only


def linear_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))  # 2 matrices, 2 biases


SHAPES = [(16, 8), (16,), (4, 16), (4,)]
NUMEL = sum(torch.Size(s).numel() for s in SHAPES)  # 128 + 16 + 64 + 4 = 212


@pytest.mark.parametrize(
    ("optimizer", "extra_floats"),
    [
        ("erm", 0),
        ("sam", NUMEL),  # the weight backup
        ("gsam", 2 * NUMEL + 1),  # backup + clean gradient + its norm (a scalar kept from ascend to descend)
        ("looksam", 3 * NUMEL + 2),  # backup + clean gradient + g_v, and the norms of g and g_v (scalars)
        ("nusam", (16 + 8) + (4 + 16)),  # one u and one v per 2-D matrix, nothing else
    ],
)
def test_optimizer_state_bytes_equal_the_hand_count(registry, optimizer, extra_floats):
    model = linear_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = registry.create("scheduler", "constant" if optimizer != "erm" else "never")
    opt = registry.create(
        "optimizer", optimizer, list(model.named_parameters()), base_optimizer=base, scheduler=scheduler
    )
    opt.total_steps = 4
    from harness.run.closure import BatchClosure

    for _ in range(2):  # buffers are allocated lazily, on the first perturbed step
        inputs, targets = torch.randn(5, 8), torch.randint(0, 4, (5,))
        opt.step(BatchClosure(model, nn.functional.cross_entropy, inputs, targets))
    momentum = NUMEL  # SGD momentum buffers, one float per parameter
    assert optimizer_state_bytes(opt) == 4 * (momentum + extra_floats)


def own_buffer_sam(registry, where: str):
    """SAM with Friendly SAM's kind of state: a gradient EMA it keeps itself, in an attribute or in
    ``self.state``, declared nowhere; and a reference to the model, whose weights are not its memory."""
    from harness import SharpnessAwareOptimizer

    class OwnBuffer(SharpnessAwareOptimizer):
        def perturbation(self, params, grads, rho, grad_norm):
            if where == "attribute":
                if not hasattr(self, "ema"):
                    self.ema = [torch.zeros_like(g) for g in grads]
                ema = self.ema
            else:
                ema = [self.state[p].setdefault("ema", torch.zeros_like(g)) for p, g in zip(params, grads, strict=True)]
            torch._foreach_lerp_(ema, grads, 0.1)
            direction = torch._foreach_sub(grads, ema)
            return torch._foreach_mul(direction, rho / (self.global_norm(direction) + 1e-12))

    model = linear_model()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = registry.create("scheduler", "constant")
    optimizer = OwnBuffer(list(model.named_parameters()), base_optimizer=base, scheduler=scheduler)
    optimizer.model = model
    return model, optimizer


@pytest.mark.parametrize("where", ["attribute", "state"])
def test_a_variant_s_own_undeclared_buffer_is_counted(registry, where):
    from harness.run.closure import BatchClosure

    model, optimizer = own_buffer_sam(registry, where)
    for _ in range(2):
        inputs, targets = torch.randn(5, 8), torch.randint(0, 4, (5,))
        optimizer.step(BatchClosure(model, nn.functional.cross_entropy, inputs, targets))
    momentum, backup, ema = NUMEL, NUMEL, NUMEL
    assert optimizer_state_bytes(optimizer) == 4 * (momentum + backup + ema)
    assert perturbation_state_bytes(optimizer) == 4 * (backup + ema)


def test_views_of_one_buffer_count_once_and_parameters_never():
    model = linear_model()
    flat = torch.zeros(NUMEL)
    holder = types.SimpleNamespace(views=[flat[:10], flat[10:]], again=flat, weights=list(model.parameters()))
    held = held_tensors(holder, params=model.parameters())
    assert storage_bytes(held) == 4 * NUMEL and len(held) == 1


def test_step_quantiles_match_numpy():
    numpy = pytest.importorskip("numpy")
    times = [0.5, 0.1, 0.3, 0.2, 0.9, 0.4, 0.7, 0.8, 0.6, 1.0, 0.05]
    p10, median, p90 = _step_quantiles(times)
    assert median == pytest.approx(numpy.median(times))
    assert p10 == pytest.approx(numpy.percentile(times, 10)) and p90 == pytest.approx(numpy.percentile(times, 90))
    assert _step_quantiles([]) == (None, None, None)


def test_time_to_target_is_the_train_time_of_the_first_epoch_reaching_it(tmp_path):
    suite = write_suite(
        tmp_path / "t.yaml",
        """
        name: target
        defaults: {epochs: 4, target_acc: 0.5}
        methods: [erm]
        models: [{name: mlp, hidden: 32}]
        datasets: [digits]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out"), "--set", "seeds=[0]"]) == 0
    run = read_runs(tmp_path / "out" / "target").iloc[0]
    history = read_history(tmp_path / "out" / "target").sort_values("epoch")
    first = history[history["test_acc"] >= 0.5].iloc[0]
    assert run["time_to_target_s"] == pytest.approx(first["train_time_s"])
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out"), "--set", "target_acc=1.0"]) == 0
    never = read_runs(tmp_path / "out" / "target").query("target_acc == 1.0").iloc[0]
    assert never["time_to_target_s"] is None or never["time_to_target_s"] != never["time_to_target_s"]
