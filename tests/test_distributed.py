"""One run across processes (DDP, gloo on CPU): the perturbation scopes against single-process SAM."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from harness_sam.erm import ERM
from harness_sam.gsam import GSAM
from harness_sam.looksam import LookSAM
from harness_sam.sam import SAM
from harness_schedules.basic import Constant, Never, Periodic
from torch import nn

from harness.cli import main
from harness.results.read import read_runs
from harness.run import distributed
from harness.run.closure import BatchClosure

from .conftest import write_suite

STEPS, BATCH, RHO = 10, 16, 0.1


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + step)
    return torch.randn(BATCH, 6, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator)


def train(net: nn.Module, optimizer: ERM | SAM, wrapped: nn.Module, scope: str) -> None:
    for step in range(STEPS):
        inputs, targets = distributed.local_slice(*batch(step))
        first_pass = distributed.first_pass_context(wrapped, scope)
        optimizer.step(BatchClosure(wrapped, nn.functional.cross_entropy, inputs, targets, (), first_pass))


def sam(net: nn.Module, m: int = 0) -> SAM:
    base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    return SAM(list(net.parameters()), base_optimizer=base, scheduler=Constant(RHO), m=m)


def rank_main(rank: int, world: int, port: int, scope: str, out: str) -> None:
    distributed.init(rank, world, port, torch.device("cpu"))
    try:
        torch.set_num_threads(1)
        net = model()
        wrapped = distributed.wrap(net, torch.device("cpu"))
        train(net, sam(net), wrapped, scope)
        if rank == 0:
            torch.save(net.state_dict(), out)
    finally:
        distributed.shutdown()


def distributed_weights(scope: str, tmp_path) -> dict[str, torch.Tensor]:
    out = str(tmp_path / f"{scope}.pt")
    mp.start_processes(rank_main, args=(2, distributed.free_port(), scope, out), nprocs=2, start_method="spawn")
    return torch.load(out)


def single_process_weights(m: int) -> dict[str, torch.Tensor]:
    net = model()
    train(net, sam(net, m=m), net, "global")
    return net.state_dict()


def assert_close(expected: dict, actual: dict) -> None:
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-5, msg=name)


def test_global_scope_is_single_process_sam_on_the_full_batch(tmp_path):
    assert_close(single_process_weights(m=0), distributed_weights("global", tmp_path))


def test_local_scope_is_m_sharpness_with_the_per_rank_batch(tmp_path):
    expected = single_process_weights(m=BATCH // 2)
    actual = distributed_weights("local", tmp_path)
    assert_close(expected, actual)
    differs = any(not torch.allclose(actual[n], single_process_weights(m=0)[n], atol=1e-5) for n in actual)
    assert differs  # local really differs from global SAM


def test_harness_run_with_nproc_trains_one_run_over_two_processes(tmp_path):
    suite = write_suite(
        tmp_path / "ddp.yaml",
        """
        name: ddp
        defaults: {epochs: 1, batch_size: 128, perturbation_scope: local}
        methods: [sam]
        models: [{name: mlp, hidden: 16}]
        datasets: [digits]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out"), "--nproc", "2"]) == 0
    runs = read_runs(tmp_path / "out" / "ddp")
    assert runs["status"].tolist() == ["ok"] and runs["steps"].tolist() == [1437 // 128]
    assert '"nproc": 2' in runs["config"].iloc[0] and '"perturbation_scope": "local"' in runs["config"].iloc[0]
    assert runs["sam_fraction"].tolist() == [1.0] and runs["grad_evals"].tolist() == [2 * (1437 // 128)]


# --- local scope: every variant keeps the replicas identical -------------------------------------------------

VARIANTS = {
    "erm": lambda params, base: ERM(params, base_optimizer=base, scheduler=Never()),
    "sam-k": lambda params, base: SAM(params, base_optimizer=base, scheduler=Periodic(RHO, k=3)),
    "looksam": lambda params, base: LookSAM(params, base_optimizer=base, scheduler=Periodic(RHO, k=3), alpha=0.7),
    "gsam": lambda params, base: GSAM(params, base_optimizer=base, scheduler=Constant(RHO), alpha=0.3),
}


def variant(name: str, net: nn.Module, rank_mean=None) -> ERM | SAM:
    base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    optimizer = VARIANTS[name](list(net.parameters()), base)
    optimizer.rank_mean = rank_mean
    return optimizer


def variants_rank_main(rank: int, world: int, port: int, out: str) -> None:
    distributed.init(rank, world, port, torch.device("cpu"))
    try:
        torch.set_num_threads(1)
        weights = {}
        for name in VARIANTS:
            net = model()
            wrapped = distributed.wrap(net, torch.device("cpu"))
            train(net, variant(name, net, distributed.mean_over_ranks_), wrapped, "local")
            weights[name] = net.state_dict()
        torch.save(weights, f"{out}.{rank}")
    finally:
        distributed.shutdown()


def test_local_scope_keeps_every_variants_replicas_identical(tmp_path):
    """Only the perturbation is per rank: unperturbed steps (ERM, SAM-k, LookSAM's reuse) and GSAM's and
    LookSAM's decompositions use the clean gradient averaged over ranks, so both ranks apply one update.
    ERM, whose only pass runs under no_sync, must then equal single-process ERM on the global batch."""
    out = str(tmp_path / "variants")
    mp.start_processes(variants_rank_main, args=(2, distributed.free_port(), out), nprocs=2, start_method="spawn")
    first, second = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    for name in VARIANTS:
        for key in first[name]:
            torch.testing.assert_close(second[name][key], first[name][key], rtol=0, atol=1e-6, msg=f"{name} {key}")
    net = model()
    train(net, variant("erm", net), net, "global")
    assert_close(net.state_dict(), first["erm"])
    assert any(not torch.allclose(first["sam-k"][k], first["erm"][k]) for k in first["erm"])  # SAM-k did perturb


def test_the_rank_synced_scheduler_states_its_inners_warm_up_and_share(registry):
    from harness.run.distributed import SyncedScheduler

    inner = registry.create("scheduler", "delayed", inner="periodic", inner_params={"k": 4}, fraction=0.1)
    synced = SyncedScheduler(inner)
    assert synced.warmup_steps(200) == inner.warmup_steps(200) > 0
    assert synced.expected_perturbed_fraction(200) == inner.expected_perturbed_fraction(200) == 0.25
