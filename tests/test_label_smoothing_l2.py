"""``label_smoothing`` and ``l2_in_loss``: the training loss the closure differentiates
(``harness.run.build.training_loss``), checked against closed forms and a hand-written SAM step."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from harness.errors import SuiteError
from harness.plugins import Registry
from harness.run import runner
from harness.run.build import build, training_loss
from harness.run.row import RunState
from harness.run.runner import train_step
from harness.suite import load_suite

from .conftest import write_suite

SUITE = """
name: loss
defaults:
  epochs: 1
  batch_size: 32
  device: cpu
  base_optimizer: {{name: momentum, lr: 0.1, momentum: 0.9, weight_decay: 0.0}}
  lr_schedule: {{name: constant}}
  {extra}
methods: [{{preset: sam, scheduler: {{rho: 0.05}}}}]
models: [mlp]
datasets: [digits]
"""


def test_label_smoothing_is_the_closed_form_mixture_of_the_target_and_the_uniform_loss():
    generator = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(16, 10, generator=generator, dtype=torch.float64), torch.arange(16) % 10
    eps = 0.2
    log_p = logits.log_softmax(dim=1)
    expected = ((1 - eps) * -log_p[torch.arange(16), targets] + eps * -log_p.mean(dim=1)).mean()
    assert training_loss(eps, 0.0, [])(logits, targets) == pytest.approx(float(expected), rel=1e-12)
    assert training_loss(0.0, 0.0, [])(logits, targets) == F.cross_entropy(logits, targets)


def test_l2_in_loss_adds_half_l2_times_the_squared_norm_of_every_trained_parameter():
    params = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0]])]
    logits, targets = torch.zeros(2, 3), torch.tensor([0, 1])
    plain = F.cross_entropy(logits, targets)
    assert training_loss(0.0, 0.1, params)(logits, targets) == pytest.approx(float(plain) + 0.05 * 26.0)


def _setup(tmp_path, extra: str):
    registry = Registry.from_plugins()
    run = load_suite(write_suite(tmp_path / "s.yaml", SUITE.format(extra=extra)), registry).runs[0]
    setup = build(run, registry)
    inputs, targets = next(iter(setup.data.train_batches(run.batch_size, setup.shuffle, setup.augment)))
    return run, setup, inputs, targets


def test_sam_with_l2_in_the_loss_equals_a_hand_written_step(tmp_path):
    l2, rho, lr = 0.01, 0.05, 0.1
    run, setup, inputs, targets = _setup(tmp_path, f"l2_in_loss: {l2}")
    assert run.l2_in_loss == l2 and run.config()["l2_in_loss"] == l2
    model = setup.model
    before = [p.detach().clone() for p in model.parameters()]

    def loss_at(weights):
        logits = torch.func.functional_call(
            model, dict(zip(dict(model.named_parameters()), weights, strict=True)), inputs
        )
        return F.cross_entropy(logits, targets) + 0.5 * l2 * sum(w.square().sum() for w in weights)

    weights = [b.clone().requires_grad_() for b in before]
    grads = torch.autograd.grad(loss_at(weights), weights)
    norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
    perturbed = [(b + rho * g / (norm + 1e-12)).requires_grad_() for b, g in zip(before, grads, strict=True)]
    sam_grads = torch.autograd.grad(loss_at(perturbed), perturbed)
    expected = [b - lr * g for b, g in zip(before, sam_grads, strict=True)]  # first momentum step: buffer = g
    train_step(run, setup, RunState(), inputs, targets)
    for got, want in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-6)


def _train(setup, run, steps: int = 3) -> list[torch.Tensor]:
    batches = setup.data.train_batches(run.batch_size, setup.shuffle, setup.augment)
    state = RunState()
    for inputs, targets in itertools.islice(batches, steps):
        train_step(run, setup, state, inputs, targets)
    return [p.detach().clone() for p in setup.model.parameters()]


def test_the_defaults_train_exactly_as_before(tmp_path):
    run, setup, _, _ = _setup(tmp_path, "")
    assert "label_smoothing" not in run.config() and "l2_in_loss" not in run.config()  # earlier run ids kept
    _, before, _, _ = _setup(tmp_path, "")
    before.loss_fn = F.cross_entropy  # the loss the closure differentiated before these settings
    for got, want in zip(_train(setup, run), _train(before, run), strict=True):
        assert torch.equal(got, want)


def test_the_run_trains_on_its_loss_and_the_metrics_see_it_without_the_l2_term(tmp_path, monkeypatch):
    eps, l2 = 0.3, 0.5
    run, setup, inputs, targets = _setup(tmp_path, f"label_smoothing: {eps}\n  l2_in_loss: {l2}\nmetrics: [grad_stats]")
    with torch.no_grad():
        logits = setup.model(inputs)
        log_p = logits.log_softmax(dim=1)
        smoothed = ((1 - eps) * -log_p.gather(1, targets[:, None])[:, 0] + eps * -log_p.mean(dim=1)).mean()
        squared = sum(p.square().sum() for p in setup.model.parameters())
        training, metric = setup.loss_fn(logits, targets), setup.metric_loss(logits, targets)
    assert float(training) == pytest.approx(float(smoothed + 0.5 * l2 * squared), rel=1e-5)
    assert float(metric) == pytest.approx(float(smoothed), rel=1e-5)
    seen = []
    monkeypatch.setattr(runner, "run_metrics", lambda model, metrics, batches, loss_fn: seen.append(loss_fn) or {})
    runner._evaluate_epoch(run, setup, RunState(), epoch=run.epochs)
    assert seen == [setup.metric_loss]


@pytest.mark.parametrize(("key", "value"), [("label_smoothing", 1.0), ("label_smoothing", -0.1), ("l2_in_loss", -1)])
def test_a_bad_value_is_refused_naming_the_key(tmp_path, key, value):
    with pytest.raises(SuiteError, match=rf"defaults\.{key}: {value} is invalid"):
        load_suite(write_suite(tmp_path / "bad.yaml", SUITE.format(extra=f"{key}: {value}")), Registry.from_plugins())
