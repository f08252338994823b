"""Stochastic components derive their streams from the run seed unless a suite pins one
(``harness.component_seed``; issue: every SS-SAM seed took the same perturbed steps)."""

from __future__ import annotations

import pytest
import torch

from harness import component_seed
from harness.contract.optim import StepContext
from harness.contract.seeding import building_with
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.run.build import build
from harness.suite import load_suite

from .conftest import write_suite

SUITE = """
name: seeds
defaults: {epochs: 1, batch_size: 64, device: cpu}
methods:
  - ss-sam
  - {name: ss-sam-pinned, preset: ss-sam, scheduler: {seed: 11}}
  - nusam
  - {name: nusam-pinned, preset: nusam, optimizer: {seed: 11}}
  - random-sam
  - {name: random-sam-pinned, preset: random-sam, optimizer: {seed: 11}}
models: [mlp]
datasets: [{name: digits, limit_train: 128}]
seeds: [0, 1]
"""


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    """``harness.run.build.build`` of every run, keyed by (method, run seed)."""
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path_factory.mktemp("s") / "seeds.yaml", SUITE), registry)
    return {(run.method, run.seed): build(run, registry) for run in suite.runs}


def _decisions(setup, steps: int = 64) -> list[bool]:
    scheduler = setup.optimizer.scheduler
    context = StepContext(step=0, total_steps=steps, lr=0.1, grad_sq_norm=torch.tensor(1.0))
    return [scheduler.decide(context)[0] for _ in range(steps)]


def test_ss_sam_decisions_differ_between_run_seeds_and_agree_for_one(setups, tmp_path):
    first, second = _decisions(setups[("ss-sam", 0)]), _decisions(setups[("ss-sam", 1)])
    assert first != second
    registry = Registry.from_plugins()
    again = load_suite(write_suite(tmp_path / "again.yaml", SUITE), registry).runs[0]
    assert (again.method, again.seed) == ("ss-sam", 0)
    assert _decisions(build(again, registry)) == first


def test_an_explicit_seed_pins_the_stream_whatever_the_run_seed(setups):
    assert _decisions(setups[("ss-sam-pinned", 0)]) == _decisions(setups[("ss-sam-pinned", 1)])


def _initial_u(setup) -> list[torch.Tensor]:
    return setup.optimizer.variant_state_dict()["u"]


def test_nusam_initial_vectors_follow_the_run_seed_unless_pinned(setups):
    unpinned = [_initial_u(setups[("nusam", seed)]) for seed in (0, 1)]
    pinned = [_initial_u(setups[("nusam-pinned", seed)]) for seed in (0, 1)]
    assert unpinned[0] and not all(torch.equal(a, b) for a, b in zip(*unpinned, strict=True))
    assert pinned[0] and all(torch.equal(a, b) for a, b in zip(*pinned, strict=True))


def _random_direction(setup) -> list[torch.Tensor]:
    """The first random direction the optimizer would perturb along (drawn from its private generator)."""
    return setup.optimizer._random_direction(setup.params)


def test_random_sam_directions_follow_the_run_seed_unless_pinned(setups):
    unpinned = [_random_direction(setups[("random-sam", seed)]) for seed in (0, 1)]
    pinned = [_random_direction(setups[("random-sam-pinned", seed)]) for seed in (0, 1)]
    assert not all(torch.equal(a, b) for a, b in zip(*unpinned, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(*pinned, strict=True))


def test_component_seed_separates_components_and_run_seeds():
    assert component_seed(5, "bernoulli") == 5
    with building_with(0):
        zero = {salt: component_seed(None, salt) for salt in ("bernoulli", "nusam")}
    with building_with(1):
        one = component_seed(None, "bernoulli")
    assert zero["bernoulli"] != zero["nusam"] and zero["bernoulli"] != one
    assert all(0 <= value < 2**63 for value in (*zero.values(), one))
    with building_with(0):
        assert component_seed(None, "bernoulli") == zero["bernoulli"]  # deterministic


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_component_seed_refuses_what_is_not_a_seed(bad):
    with pytest.raises(ValueError, match="seed must be an integer >= 0 or null"):
        component_seed(bad, "bernoulli")


def test_a_null_seed_validates_for_any_component_and_a_string_does_not(tmp_path):
    registry = Registry.from_plugins()
    null = SUITE.replace("{seed: 11}}\n  - nusam", "{seed: null}}\n  - nusam")
    runs = load_suite(write_suite(tmp_path / "null.yaml", null), registry).runs
    assert [run.scheduler_params["seed"] for run in runs if run.method == "ss-sam-pinned"] == [None, None]
    bad = SUITE.replace("optimizer: {seed: 11}}\n  - random-sam", 'optimizer: {seed: "11"}}\n  - random-sam')
    with pytest.raises(SuiteError, match=r"methods\[3\]\.optimizer\.seed: '11' is invalid"):
        load_suite(write_suite(tmp_path / "bad.yaml", bad), registry)
