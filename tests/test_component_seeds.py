"""Stochastic components derive their streams from the run seed unless a suite pins one
(``harness.component_seed``; issue: every SS-SAM seed took the same perturbed steps)."""

from __future__ import annotations

import hashlib
import random

import pytest
import torch
import torch.multiprocessing as mp

from harness import component_seed
from harness.contract.optim import StepContext
from harness.contract.run_spec import run_from_payload, run_payload
from harness.contract.seeding import building_with
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.run import distributed
from harness.run.build import build
from harness.suite import load_suite

from .conftest import write_suite

SUITE = """
name: seeds
defaults: {epochs: 1, batch_size: 64, device: cpu}
methods:
  - ss-sam
  - {name: ss-sam-pinned, preset: ss-sam, scheduler: {seed: 11}}
  - {preset: nusam, extension: "nuSAM on an MLP (002 trains ViTs and Mixers)"}
  - {name: nusam-pinned, preset: nusam, optimizer: {seed: 11}, extension: "nuSAM on an MLP"}
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


def test_a_null_seed_validates_for_an_optimizer_or_scheduler_and_a_string_does_not(tmp_path):
    registry = Registry.from_plugins()
    null = SUITE.replace("{seed: 11}}\n  - {preset: nusam", "{seed: null}}\n  - {preset: nusam")
    runs = load_suite(write_suite(tmp_path / "null.yaml", null), registry).runs
    assert [run.scheduler_params["seed"] for run in runs if run.method == "ss-sam-pinned"] == [None, None]
    bad = SUITE.replace("optimizer: {seed: 11}, extension", 'optimizer: {seed: "11"}, extension')
    with pytest.raises(SuiteError, match=r"methods\[3\]\.optimizer\.seed: '11' is invalid"):
        load_suite(write_suite(tmp_path / "bad.yaml", bad), registry)


@pytest.mark.parametrize(
    "blocks",
    ["datasets: [{name: synthetic, seed: null}]", "datasets: [digits]\nmetrics: [{name: hessian_trace, seed: null}]"],
)
def test_a_null_seed_is_refused_where_the_component_does_not_derive_one(tmp_path, blocks):
    """A dataset's or metric's ``seed`` is an integer: null would reach code that cannot take it."""
    text = f"name: s\nmethods: [erm]\nmodels: [mlp]\n{blocks}\n"
    with pytest.raises(SuiteError, match=r"\.seed: None is invalid; expected an integer"):
        load_suite(write_suite(tmp_path / "s.yaml", text), Registry.from_plugins())


def test_the_derived_seed_is_sha256_of_run_seed_and_salt_whatever_the_global_generators():
    """The documented derivation (``harness.contract.seeding``): a change would silently change the results
    of runs whose ids stay the same. Reseeding torch or ``random`` (a model factory may) changes nothing;
    outside a run the run seed is 0."""

    def expected(run_seed: int, salt: str) -> int:
        return int.from_bytes(hashlib.sha256(f"{run_seed}:{salt}".encode()).digest()[:8], "big") >> 1

    with building_with(3):
        torch.manual_seed(99)
        random.seed(99)
        assert component_seed(None, "bernoulli") == expected(3, "bernoulli")
        with building_with(4):
            assert component_seed(None, "nusam") == expected(4, "nusam")
        assert component_seed(None, "nusam") == expected(3, "nusam")
    assert component_seed(None, "sam") == expected(0, "sam")


def _rank_build(rank: int, world: int, port: int, payload: dict, out: str) -> None:
    distributed.init(rank, world, port, torch.device("cpu"))
    try:
        torch.save(_decisions(build(run_from_payload(payload), Registry.from_plugins())), f"{out}.{rank}")
    finally:
        distributed.shutdown()


def test_every_ddp_rank_builds_the_same_decisions(tmp_path):
    """Every rank rebuilds the run from its payload (``harness.execution.worker``) under the same run seed."""
    registry = Registry.from_plugins()
    suite = load_suite(write_suite(tmp_path / "seeds.yaml", SUITE), registry)
    run = next(run for run in suite.runs if (run.method, run.seed) == ("ss-sam", 1))
    out = str(tmp_path / "decisions")
    args = (2, distributed.free_port(), run_payload(run), out)
    mp.start_processes(_rank_build, args=args, nprocs=2, start_method="spawn")
    assert torch.load(f"{out}.0") == torch.load(f"{out}.1") == _decisions(build(run, registry))
