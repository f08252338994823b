"""``harness.create_optimizer``: a registered variant in a plain PyTorch loop takes the harness runner's steps.

The runner's path (``harness.run.build.build`` and ``harness.run.runner.train_step``: its ``BatchClosure``,
timm's lr schedule stepped per update) and a user's loop (``create_optimizer`` on a copy of the same model,
a hand-written closure, the same timm schedule) step the same batches; the weights must agree.
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.scheduler import create_scheduler_v2

import harness
from harness.errors import UsageError
from harness.plugins import Registry
from harness.run.build import build
from harness.run.row import RunState
from harness.run.runner import train_step
from harness.suite import load_suite

from .conftest import write_suite

STEPS = 12
SUITE = """
name: plain
defaults:
  epochs: 1
  batch_size: 64
  device: cpu
  base_optimizer: {name: momentum, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}
  lr_schedule: {name: cosine, warmup_epochs: 1}
methods: [sam, looksam]
models: [{name: mlp, hidden: 32}]
datasets: [{name: digits, limit_train: 768}]
seeds: [0]
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path_factory.mktemp("plain") / "plain.yaml", SUITE), registry)
    return {run.method: run for run in suite.runs}


def _batches(shape: tuple[int, ...], seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(64, *shape, generator=generator), torch.randint(0, 10, (64,), generator=generator))
        for _ in range(STEPS)
    ]


@pytest.mark.parametrize("method", ["sam", "looksam"])
def test_the_plain_loop_takes_the_runners_steps(runs, method):
    run = runs[method]
    setup = build(run, Registry.from_plugins())
    model = copy.deepcopy(setup.model)
    steps_per_epoch = setup.steps_per_epoch
    optimizer = harness.create_optimizer(
        method, model, base=dict(run.base_optimizer), total_steps=run.epochs * steps_per_epoch
    )
    schedule, _ = create_scheduler_v2(
        optimizer.base_optimizer,
        sched="cosine",
        warmup_epochs=1,
        num_epochs=1,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    state = RunState()
    for step, (inputs, targets) in enumerate(_batches(setup.data.input_shape)):
        train_step(run, setup, state, inputs, targets)

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(inputs), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        schedule.step_update(num_updates=step + 1)
        assert optimizer.last_step.perturbed == setup.optimizer.last_step.perturbed, step
    for (name, expected), actual in zip(setup.model.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6, msg=name)
    assert type(optimizer) is type(setup.optimizer)
    if method == "looksam":  # LookSAM's preset: a perturbed step every k = 5, the reuse steps in between
        assert [optimizer.scheduler.k, state.perturbed_steps] == [5, 3]


def test_settings_go_to_the_component_that_declares_them_and_an_unknown_one_is_named():
    model = torch.nn.Linear(4, 2)
    optimizer = harness.create_optimizer("gsam", model, rho_max=0.1, alpha=0.2)
    assert optimizer.alpha == 0.2 and optimizer.scheduler.rho_max == 0.1
    with pytest.raises(UsageError, match=r"rho_maxx=0.1 is a setting of neither .* \(did you mean 'rho_max'\?\)"):
        harness.create_optimizer("gsam", model, rho_maxx=0.1)
    with pytest.raises(UsageError, match=r"'lookasm' is neither a preset nor an optimizer \(did you mean 'looksam'"):
        harness.create_optimizer("lookasm", model)


def test_a_base_optimizer_object_is_used_as_it_is():
    model = torch.nn.Linear(4, 2)
    base = torch.optim.AdamW(model.parameters(), lr=1e-3)
    optimizer = harness.create_optimizer("sam", model, base=base, rho=0.1)
    assert optimizer.base_optimizer is base and optimizer.param_groups is base.param_groups
    assert optimizer.scheduler.rho == 0.1


def test_the_readme_example_runs_and_learns(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Use a variant in your own training loop", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    epochs = re.findall(r"epoch (\d): (\d+) perturbed steps, train accuracy ([0-9.]+)", result.stdout)
    assert [int(epoch) for epoch, _, _ in epochs] == [0, 1, 2, 3, 4]
    assert all(int(perturbed) in (5, 6) for _, perturbed, _ in epochs)  # every 5th of 28 steps an epoch
    assert float(epochs[-1][2]) > 0.8
