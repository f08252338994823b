"""Plugins that break the contract on purpose, one fault each: the contract kit must report every one.

Installed by tests/test_contract_kit.py through the real entry-point path (and, for the pytest-plugin run,
as a distribution named ``contract-broken-fixtures``). Each component's docstring names the rule it breaks.
"""

import random

import torch

from harness import (
    MetricSpec,
    ModelSpec,
    OptimizerSpec,
    PerturbationScheduler,
    SchedulerSpec,
    SharpnessAwareOptimizer,
    StepInfo,
    hookimpl,
)


class PlainSAM(SharpnessAwareOptimizer):
    """SAM's l2 perturbation e = rho g / ||g||, on the base class (which keeps the contract)."""

    def perturbation(self, params, grads, rho, grad_norm):
        return [g * (rho / (grad_norm + 1e-12)) for g in grads]


class NoRestore(PlainSAM):
    """exact_restore: never restores, so the base optimizer steps from w + e."""

    def descend(self, params, rho):
        return {}


class GradientRestore(PlainSAM):
    """exact_restore: davda54/sam's bug, restoring only the parameters that got a gradient in the second pass."""

    def descend(self, params, rho):
        for p, saved in zip(self._params, self._backup, strict=True):
            if p.grad is not None:
                p.copy_(saved)
        return {}


class ThirdPass(PlainSAM):
    """gradient_evaluations: recomputes the loss after the update (a third pass) and still says two."""

    @torch.no_grad()
    def step(self, closure=None):
        loss = super().step(closure)
        with torch.enable_grad():
            closure()
        return loss


class OnePass(PlainSAM):
    """gradient_evaluations: takes the base optimizer's step on one pass but reports a perturbed step."""

    @torch.no_grad()
    def step(self, closure=None):
        with torch.enable_grad():
            loss = closure()
        self.base_optimizer.step()
        self.last_step = StepInfo(perturbed=True, rho=0.05)
        return loss


class Forgetful(PlainSAM):
    """state_dict: ascends along a moving average of gradients that its state_dict does not save."""

    def __init__(self, params, *, base_optimizer, scheduler):
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler)
        self.average = None

    def perturbation(self, params, grads, rho, grad_norm):
        if self.average is None:
            self.average = [g.clone() for g in grads]
        else:
            for average, g in zip(self.average, grads, strict=True):
                average.mul_(0.5).add_(g, alpha=0.5)
        norm = self.global_norm(self.average)
        return [a * (rho / (norm + 1e-12)) for a in self.average]


_HIDDEN = []  # HiddenBuffer's averages, one slot per instance, kept out of the optimizer object


class HiddenBuffer(PlainSAM):
    """memory_counted: keeps its gradient average in a module-level list, out of the memory count's reach."""

    def __init__(self, params, *, base_optimizer, scheduler):
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler)
        self.slot = len(_HIDDEN)
        _HIDDEN.append(None)

    def perturbation(self, params, grads, rho, grad_norm):
        if _HIDDEN[self.slot] is None:
            _HIDDEN[self.slot] = [torch.zeros_like(g) for g in grads]
        average = _HIDDEN[self.slot]
        for a, g in zip(average, grads, strict=True):
            a.mul_(0.5).add_(g, alpha=0.5)
        norm = self.global_norm(average)
        return [a * (rho / (norm + 1e-12)) for a in average]

    def variant_state_dict(self):
        return {"average": _HIDDEN[self.slot] or []}

    def load_variant_state_dict(self, state):
        _HIDDEN[self.slot] = list(state["average"]) or None


class StaleGroups(PlainSAM):
    """state_dict: its load_state_dict leaves param_groups on the list torch's load_state_dict replaced."""

    def load_state_dict(self, state_dict):
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        self.scheduler.load_state_dict(state_dict["scheduler"])
        self.steps_taken = int(state_dict["steps_taken"])


class NegativeRho(PerturbationScheduler):
    """decide: returns a negative radius."""

    def decide(self, ctx):
        return True, -0.05


class IntegerPerturb(PerturbationScheduler):
    """decide: returns 1 instead of True."""

    def decide(self, ctx):
        return 1, 0.05


class Amnesiac(PerturbationScheduler):
    """state_dict: draws from a seeded stream but does not save the stream's state."""

    def __init__(self, seed=0):
        self.random = random.Random(seed)

    def decide(self, ctx):
        return (True, 0.05) if self.random.random() < 0.5 else (False, 0.0)


class TensorDiagnostics(PerturbationScheduler):
    """diagnostics: reports a device tensor (reading it would synchronize the device)."""

    def decide(self, ctx):
        self.seen = ctx.grad_sq_norm
        return True, 0.05

    def diagnostics(self):
        return {"grad_sq_norm": torch.as_tensor(self.seen)}


def weight_nudger():
    """model_unchanged: moves every weight and does not put it back."""

    def metric(model, batches, loss_fn):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01)
        return {"broken_weights": 1.0, "broken_weights_batches": len(batches)}

    return metric


def train_mode_leaver():
    """model_unchanged: switches the model to train mode and leaves it there."""

    def metric(model, batches, loss_fn):
        model.train()
        return {"broken_mode": 1.0, "broken_mode_batches": len(batches)}

    return metric


def wide_model(*, num_classes, input_shape):
    """output_shape: one logit too many."""
    import math

    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(input_shape), num_classes + 1))


@hookimpl
def register_optimizers():
    return [
        OptimizerSpec("broken-no-restore", NoRestore),
        OptimizerSpec("broken-gradient-restore", GradientRestore),
        OptimizerSpec("broken-third-pass", ThirdPass),
        OptimizerSpec("broken-one-pass", OnePass),
        OptimizerSpec("broken-forgetful", Forgetful),
        OptimizerSpec("broken-hidden-buffer", HiddenBuffer),
        OptimizerSpec("broken-stale-groups", StaleGroups),
    ]


@hookimpl
def register_schedulers():
    return [
        SchedulerSpec("broken-negative-rho", NegativeRho),
        SchedulerSpec("broken-integer-perturb", IntegerPerturb),
        SchedulerSpec("broken-amnesiac", Amnesiac, defaults={"seed": 0}),
        SchedulerSpec("broken-tensor-diagnostics", TensorDiagnostics),
    ]


@hookimpl
def register_metrics():
    return [MetricSpec("broken_weights", weight_nudger), MetricSpec("broken_mode", train_mode_leaver)]


@hookimpl
def register_models():
    return [ModelSpec("broken-wide", wide_model)]
