"""Run settings added after the first release: ``grad_clip_norm`` (the gradient the base optimizer applies is
clipped, whichever variant built it) and ``bn_stats_pass`` (which passes update BatchNorm's statistics)."""

from __future__ import annotations

import pytest
import torch
from harness_sam.sam import SAM
from harness_schedules.basic import Constant
from torch import nn

from harness.cli import EXIT_USAGE, main
from harness.plugins import Registry
from harness.run.build import build, clip_before_each_step
from harness.run.closure import BatchClosure
from harness.suite import load_suite

from .conftest import write_suite

LR, RHO = 0.1, 0.05


def sam_step(max_norm: float | None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """One SAM step on a fixed problem: (start weights, the gradient handed to the base step, end weights)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    inputs, targets = torch.randn(16, 5), torch.randint(0, 3, (16,))
    base = torch.optim.SGD(model.parameters(), lr=LR)
    seen: list[torch.Tensor] = []
    base.register_step_pre_hook(lambda *_: seen.extend(p.grad.clone() for p in model.parameters()))
    if max_norm is not None:
        clip_before_each_step(base, max_norm)  # registered after the recorder: it records the unclipped gradient
    start = [p.detach().clone() for p in model.parameters()]
    SAM(list(model.parameters()), base_optimizer=base, scheduler=Constant(RHO)).step(
        BatchClosure(model, nn.functional.cross_entropy, inputs, targets)
    )
    return start, seen, [p.detach().clone() for p in model.parameters()]


def test_the_sam_gradient_is_clipped_to_the_norm_before_the_base_step():
    start, sam_gradient, end = sam_step(max_norm=None)
    norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in sam_gradient])))
    limit = norm / 4
    _, clipped_input, clipped_end = sam_step(max_norm=limit)
    for before, after_free, g in zip(start, end, sam_gradient, strict=True):
        torch.testing.assert_close(after_free, before - LR * g)  # unclipped: plain SGD on the SAM gradient
    for g, g_seen in zip(sam_gradient, clipped_input, strict=True):
        torch.testing.assert_close(g_seen, g)  # the same SAM gradient reached the base optimizer ...
    for before, after, g in zip(start, clipped_end, sam_gradient, strict=True):
        torch.testing.assert_close(after, before - LR * g * (limit / norm), rtol=1e-5, atol=1e-7)  # ... scaled
    _, _, loose_end = sam_step(max_norm=10 * norm)
    for after_free, after_loose in zip(end, loose_end, strict=True):
        assert torch.equal(after_free, after_loose)  # a norm above the gradient's changes nothing


SUITE = """
name: clipped
defaults: {{epochs: 1, batch_size: 64{extra}}}
methods: [sam]
models: [small-cnn]
datasets: [digits]
seeds: [0]
"""


def test_the_setting_enters_the_run_id_only_when_set_and_the_runner_installs_it(tmp_path):
    registry = Registry.from_plugins()
    plain = load_suite(str(write_suite(tmp_path / "a.yaml", SUITE.format(extra=""))), registry).runs[0]
    same = load_suite(str(write_suite(tmp_path / "b.yaml", SUITE.format(extra=", grad_clip_norm: null"))), registry)
    clipped = load_suite(str(write_suite(tmp_path / "c.yaml", SUITE.format(extra=", grad_clip_norm: 1"))), registry)
    assert same.runs[0].run_id == plain.run_id and "grad_clip_norm" not in plain.config()  # earlier ids kept
    assert clipped.runs[0].grad_clip_norm == 1.0 and clipped.runs[0].config()["grad_clip_norm"] == 1.0
    assert not build(plain, registry).base_optimizer._optimizer_step_pre_hooks
    assert len(build(clipped.runs[0], registry).base_optimizer._optimizer_step_pre_hooks) == 1


@pytest.mark.parametrize("value", ["0", "-1", "big"])
def test_a_bad_norm_is_refused_naming_the_key(tmp_path, capsys, value):
    suite = write_suite(tmp_path / "bad.yaml", SUITE.format(extra=f", grad_clip_norm: {value}"))
    assert main(["validate", str(suite)]) == EXIT_USAGE
    assert "defaults.grad_clip_norm" in capsys.readouterr().err


@pytest.mark.parametrize(("setting", "updates"), [("first", 1), ("every", 2)])
def test_bn_stats_pass_says_how_often_a_sam_step_updates_the_running_statistics(tmp_path, setting, updates):
    registry = Registry.from_plugins()
    extra = "" if setting == "first" else f", bn_stats_pass: {setting}"
    run = load_suite(str(write_suite(tmp_path / "s.yaml", SUITE.format(extra=extra))), registry).runs[0]
    assert ("bn_stats_pass" in run.config()) == (setting != "first")  # the default keeps earlier run ids
    setup = build(run, registry)
    norms = [m for m in setup.model.modules() if isinstance(m, nn.BatchNorm2d)]
    inputs, targets = next(iter(setup.data.train_batches(run.batch_size, setup.shuffle, setup.augment)))
    setup.optimizer.step(
        BatchClosure(setup.train_model, nn.functional.cross_entropy, inputs, targets, setup.bn_modules)
    )
    assert setup.optimizer.last_step.perturbed and norms
    assert all(int(m.num_batches_tracked) == updates for m in norms)


def test_a_bad_bn_stats_pass_is_refused_naming_the_choices(tmp_path, capsys):
    suite = write_suite(tmp_path / "bad.yaml", SUITE.format(extra=", bn_stats_pass: second"))
    assert main(["validate", str(suite)]) == EXIT_USAGE
    assert "defaults.bn_stats_pass: 'second' is invalid; expected first" in capsys.readouterr().err
