"""The Lightning adapter (``harness.integrations.lightning``) takes the harness's own steps.

A ``SharpnessAwareModule`` trained by Lightning's ``Trainer`` on CPU ends with the weights and BatchNorm
statistics of the plain loop (``create_optimizer`` + ``BatchClosure``, itself tested equal to the runner in
``test_create_optimizer.py``) on the same batches from the same initial weights, for SAM and LookSAM, the lr
schedule stepped alike; fp16 through Lightning's ``GradScaler`` matches the harness's fp16 closure; later passes
log nothing and draw the first pass's random numbers; without lightning the import names the extra.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import harness
from harness.run.precision import Precision, fp16_autocast_available

pl = pytest.importorskip("lightning.pytorch")
from harness.integrations.lightning import SharpnessAwareModule  # noqa: E402

STEPS = 6
BATCH = 32
BASE = {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4}


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 8, generator=generator), torch.randint(0, 3, (BATCH,), generator=generator))
        for _ in range(STEPS)
    ]


class Classifier(SharpnessAwareModule):
    def __init__(self, method: str, net: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.net = net
        self.clean_losses: list[float] = []

    def training_step(self, batch, batch_idx):
        inputs, targets = batch
        loss = F.cross_entropy(self.net(inputs), targets)
        self.log("train_loss", loss)
        if self._sharpness_aware_pass == 0:
            self.clean_losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        optimizer = harness.create_optimizer(self.method, self, base=dict(BASE), total_steps=STEPS)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _fit(module: pl.LightningModule, datamodule: pl.LightningDataModule | None = None, **options) -> pl.Trainer:
    """``STEPS`` steps of a quiet CPU Trainer on ``_batches()`` (or on ``datamodule``'s loader)."""
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=STEPS,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
    if datamodule is not None:
        trainer.fit(module, datamodule=datamodule)
    else:
        trainer.fit(module, torch.utils.data.DataLoader(_batches(), batch_size=None))
    return trainer


def _plain_loop(
    method: str, net: nn.Module, precision: Precision | None = None, micro_batch_size: int = 0
) -> torch.optim.Optimizer:
    optimizer = harness.create_optimizer(method, net, base=dict(BASE), total_steps=STEPS)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    bn_modules = harness.batchnorm_modules(net)
    for inputs, targets in _batches():
        closure = harness.BatchClosure(
            net, F.cross_entropy, inputs, targets, bn_modules, precision=precision, micro_batch_size=micro_batch_size
        )
        optimizer.step(closure)
        closure.finish()
        schedule.step()
    return optimizer


def _assert_same_state(actual: nn.Module, expected: nn.Module) -> None:
    expected_state = expected.state_dict()
    for name, value in actual.state_dict().items():
        torch.testing.assert_close(value, expected_state[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("method", ["sam", "looksam"])
def test_the_trainer_takes_the_plain_loops_steps(method):
    module = Classifier(method, _network())
    reference = copy.deepcopy(module.net)
    trainer = _fit(module)
    optimizer = _plain_loop(method, reference)
    assert trainer.global_step == STEPS and not module.automatic_optimization
    _assert_same_state(module.net, reference)
    assert module.net[1].num_batches_tracked.item() == STEPS  # BatchNorm: the clean pass of each step only
    lightning_optimizer = trainer.optimizers[0]
    assert lightning_optimizer.steps_taken == optimizer.steps_taken == STEPS
    assert lightning_optimizer.last_step.perturbed == optimizer.last_step.perturbed
    assert lightning_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-12)
    assert trainer.callback_metrics["train_loss"].item() == pytest.approx(module.clean_losses[-1], abs=1e-7)


@pytest.mark.parametrize("method", ["sam", "looksam"])
def test_micro_batches_take_the_plain_loops_accumulated_steps_and_log_the_first_micro_batch(method):
    """micro_batch_size = 8 on batches of 32: four micro-batches per pass, as ``BatchClosure(micro_batch_size=8)``
    (itself equal to the unsplit step without BatchNorm, ``test_accumulation.py``), BatchNorm included: one
    running-statistics update per step, to the micro-batches' mean."""
    module = Classifier(method, _network())
    module.micro_batch_size = 8
    reference = copy.deepcopy(module.net)
    unsplit = copy.deepcopy(module.net)
    trainer = _fit(module)
    _plain_loop(method, reference, micro_batch_size=8)
    _assert_same_state(module.net, reference)
    assert module.net[1].num_batches_tracked.item() == STEPS
    _plain_loop(method, unsplit)  # BatchNorm normalizes each micro-batch alone: the step is not the unsplit one
    assert not torch.allclose(module.net[0].weight, unsplit[0].weight, atol=1e-4)
    assert len(module.clean_losses) == 4 * STEPS  # every micro-batch of every first pass
    # logged: the last step's first micro-batch, at the weights before the step
    assert trainer.callback_metrics["train_loss"].item() == pytest.approx(module.clean_losses[-4], abs=1e-7)


@pytest.mark.skipif(not fp16_autocast_available("cpu"), reason="this torch build has no float16 autocast on CPU")
def test_fp16_scales_every_pass_with_lightnings_scaler_as_the_harness_does():
    from lightning.pytorch.plugins.precision import MixedPrecision

    module = Classifier("sam", _network())
    reference = copy.deepcopy(module.net)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))
    _fit(module, plugins=[plugin])
    precision = Precision("fp16", "cpu")
    _plain_loop("sam", reference, precision)
    _assert_same_state(module.net, reference)
    assert plugin.scaler.get_scale() == precision.scaler.get_scale()


class Noisy(Classifier):
    """Draws a random number in every pass (as dropout does) and keeps them per pass."""

    def __init__(self) -> None:
        super().__init__("sam", _network())
        self.draws: list[tuple[int, float]] = []

    def training_step(self, batch, batch_idx):
        self.draws.append((self._sharpness_aware_pass, torch.rand(()).item()))
        return super().training_step(batch, batch_idx)


def test_every_pass_draws_the_first_passs_random_numbers_and_a_subclass_step_is_wrapped_once():
    module = Noisy()
    _fit(module)
    assert [index for index, _ in module.draws] == [0, 1] * STEPS  # super().training_step is no step of its own
    first, second = module.draws[0::2], module.draws[1::2]
    assert [draw for _, draw in first] == [draw for _, draw in second]
    assert len({draw for _, draw in first}) == STEPS


def test_a_training_step_without_a_loss_is_refused():
    class NoLoss(Classifier):
        def training_step(self, batch, batch_idx):
            return None

    with pytest.raises(harness.errors.UsageError, match=r"training_step must return the loss .* got NoneType"):
        _fit(NoLoss("sam", _network()))


def _mlp() -> nn.Module:
    """No BatchNorm: under DDP each rank normalizes its own half of the batch, which one process cannot repeat."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


def _examples() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(2)
    return torch.utils.data.TensorDataset(
        torch.randn(STEPS * BATCH, 8, generator=generator), torch.randint(0, 3, (STEPS * BATCH,), generator=generator)
    )


class HalvesOfEachBatch(pl.LightningDataModule):
    """Rank r reads the examples r, r + 2, ... in order (Lightning's own sampler would shuffle a training set), so the
    two ranks' batches of ``BATCH // 2`` are the halves of the plain loop's batch of ``BATCH``."""

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        examples = _examples()
        sampler = torch.utils.data.DistributedSampler(examples, shuffle=False)
        return torch.utils.data.DataLoader(examples, batch_size=BATCH // 2, sampler=sampler)


@pytest.mark.slow
def test_ddp_on_two_cpu_ranks_takes_the_single_process_steps_on_the_whole_batch():
    """Each step the two ranks hold the halves of the plain loop's batch, and every pass's gradient is averaged over
    them, so the steps are the single process's on the whole batch (the harness's global perturbation scope). LookSAM
    (k = 5): its SAM steps (0 and 5) and the steps that reuse its stored gradient component in between. Each rank
    runs its half in micro-batches of 4 (all-reduced on the last only), which changes no step without BatchNorm."""
    method = "looksam"
    module = Classifier(method, _mlp())
    module.micro_batch_size = 4
    reference = copy.deepcopy(module.net)
    # rank 0's weights come back to this process
    _fit(module, HalvesOfEachBatch(), devices=2, strategy="ddp_spawn", use_distributed_sampler=False)

    optimizer = harness.create_optimizer(method, reference, base=dict(BASE), total_steps=STEPS)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=STEPS)
    inputs, targets = _examples().tensors
    for step in range(STEPS):
        batch = slice(step * BATCH, (step + 1) * BATCH)
        optimizer.step(harness.BatchClosure(reference, F.cross_entropy, inputs[batch], targets[batch], ()))
        schedule.step()
    untrained = _mlp().parameters()
    assert not any(torch.equal(a, b) for a, b in zip(module.net.parameters(), untrained, strict=True))  # it trained
    _assert_same_state(module.net, reference)
