"""The sharpness-aware step protocol (shared/DESIGN.md section 4).

Every optimizer plugin is a ``torch.optim.Optimizer`` whose ``step(closure)`` runs all the
forward/backward passes it needs through the closure (the PyTorch LBFGS convention). The closure is
built by the runner (``harness.run.closure.BatchClosure``): it zeroes gradients, runs forward and
backward on the same batch, returns the loss, counts its calls, replays the RNG state and freezes
BatchNorm running statistics after the first pass.

A perturbation scheduler decides, after the first (clean) pass, whether this step perturbs and with
which radius: ``decide(ctx) -> (perturb, rho)``.

``SharpnessAwareOptimizer`` is the base class of the built-in variants. Its ``step`` is a template:

1. pass 1 at ``w`` gives ``g``; the scheduler decides ``(perturb, rho)`` from a ``StepContext``;
2. perturbed step: ``ascend`` saves ``w`` into persistent buffers and moves to ``w + e`` (e from
   ``perturbation``), pass 2 at ``w + e`` gives ``g_s``, ``descend`` restores ``w`` *exactly* by
   copying the buffers back (every perturbed parameter, whether or not it received a gradient in
   pass 2: the restore never depends on pass-2 gradients, unlike davda54/sam);
3. unperturbed step: ``reuse`` may rewrite the gradient from earlier steps (LookSAM);
4. the base optimizer steps on whatever is in ``p.grad``.

All work on parameter lists uses ``torch._foreach_*`` kernels on persistent buffers (no per-step
allocation of parameter-sized tensors, no Python loop over parameters on the hot path); the only host
synchronization is in schedulers whose decision needs one (AE-SAM reads the gradient norm), and with
fp16 loss scaling, where each pass checks for overflow (``harness.run.precision``).

Overflow (fp16): a closure with ``overflowed()`` (``BatchClosure`` with an fp16 ``Precision``) that
reports a non-finite gradient makes the step a skipped one: after pass 1, nothing else runs; after
pass 2, ``descend`` still restores the weights (``self.step_overflowed`` tells variants not to
update their own state) and the base optimizer does not step. ``StepInfo.extras["skipped"]`` is then
true, and the closure's ``finish()`` lowers the loss scale once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from harness.errors import ProtocolError

Closure = Callable[[], torch.Tensor]


@dataclass(frozen=True)
class StepContext:
    """What a perturbation scheduler sees when it decides.

    step: the optimizer step about to be taken, counted from 0.
    total_steps: the number of steps the run will take (0 when unknown).
    lr: the base optimizer's current learning rate (first parameter group).
    grad_sq_norm: ``||g||^2`` of the clean gradient, a 0-dim tensor on the device; converting it
        to a Python float synchronizes the host, so only schedulers that need it should.
    lr_max, lr_min: the peak and the floor of the learning-rate schedule (GSAM ties rho to where
        ``lr`` sits between them).
    """

    step: int
    total_steps: int
    lr: float
    grad_sq_norm: torch.Tensor
    lr_max: float = 0.0
    lr_min: float = 0.0


@dataclass
class StepInfo:
    """What an optimizer reports about the step it just took (``optimizer.last_step``).

    perturbed: whether this step computed a sharpness-aware gradient (a second pass at ``w + e``).
    rho: the perturbation radius the scheduler chose (0.0 for ERM).
    extras: cheap diagnostics (``grad_norm``, ``perturbation_norm``, ``surrogate_gap``, ...); values
        may be device tensors.
    """

    perturbed: bool
    rho: float
    extras: dict[str, Any] = field(default_factory=dict)


class PerturbationScheduler:
    """Decides, after the clean pass of every step, whether to perturb and with which rho.

    Subclasses implement ``decide``; stateful ones also override ``state_dict`` and
    ``load_state_dict`` so an interrupted run resumes on the same trajectory. A scheduler also says
    what it will do before it runs (``warmup_steps``, ``expected_perturbed_fraction``), from its
    parameters alone: ``harness bench`` asks a fresh instance, to time steady-state steps only and to
    compare a method's cost with ERM's against ``1 +`` that share, rather than knowing scheduler classes.
    """

    def decide(self, ctx: StepContext) -> tuple[bool, float]:
        """Return ``(perturb, rho)`` for the step described by ``ctx``."""
        raise NotImplementedError

    def warmup_steps(self, total_steps: int) -> int:
        """How many steps at the start of a run of ``total_steps`` steps precede the schedule's steady state.

        Default 0. A perturbation delay (``delayed``) returns its length: the steps it spends as ERM are
        not representative of a step of the method, so the bench spends them untimed.
        """
        return 0

    def expected_perturbed_fraction(self, total_steps: int) -> float | None:
        """The share of the steps from ``warmup_steps(total_steps)`` on that perturb, known before the run.

        Default None: only a measurement can tell, because the decisions depend on the gradients
        (AE-SAM) or on random draws (SS-SAM); the bench then uses the measured share. A deterministic
        schedule returns its long-run share (SAM 1, ERM 0, every k-th step 1/k); the contract kit checks
        it against ``decide``'s decisions over a run, to within one step.
        """
        return None

    def diagnostics(self) -> dict[str, float]:
        """What the last ``decide`` computed, by name, as host floats (e.g. AE-SAM's ``grad_sq_norm`` and the
        ``threshold`` it was compared with); default none.

        The runner records them with the step's ``StepInfo.extras`` every ``trace_every`` steps (the run's step
        trace, ``steps/<run_id>.parquet``), and the report draws the ones it knows (``threshold``). Return only
        values ``decide`` already has on the host: the call must not synchronize a device.
        """
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (empty for stateless schedulers)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def _clean_pass(closure: Closure | None) -> torch.Tensor:
    if closure is None:
        raise ProtocolError(
            "sharpness-aware optimizers need a closure: optimizer.step(closure), where closure() zeroes "
            "gradients, runs forward and backward on the current batch and returns the loss"
        )
    with torch.enable_grad():
        return closure()


def _overflowed(closure: Closure) -> bool:
    """Whether the closure reports a non-finite gradient in this step (False for plain callables)."""
    check = getattr(closure, "overflowed", None)
    return bool(check()) if check is not None else False


def _finish(closure: Closure) -> None:
    """Let the closure end the step (fp16: one loss-scale update); plain callables have nothing to do."""
    finish = getattr(closure, "finish", None)
    if finish is not None:
        finish()


def _split_names(params: Iterable[Any]) -> tuple[list[Any], dict[int, str]]:
    """Separate ``(name, tensor)`` pairs into tensors and an ``id(tensor) -> name`` map."""
    items = list(params)
    names: dict[int, str] = {}
    plain: list[Any] = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            names[id(item[1])] = item[0]
            plain.append(item[1])
        else:
            plain.append(item)
    return plain, names


class SharpnessAwareOptimizer(torch.optim.Optimizer):
    """Base class of sharpness-aware optimizers (see the module docstring for the step template).

    params: the parameters, the same ones the base optimizer updates; ``(name, tensor)`` pairs (as
        from ``model.named_parameters()``) make the names available to variants in ``param_names``.
    base_optimizer: a ``torch.optim.Optimizer`` over those parameters (SGD, AdamW, LAMB, ...); its
        ``param_groups`` are shared with this optimizer, so a learning-rate scheduler attached to
        either one drives both.
    scheduler: a ``PerturbationScheduler``.
    hparams: the variant's hyperparameters, kept in ``self.hparams`` and in ``defaults``.

    Subclasses implement ``perturbation`` (and may override ``ascend``, ``descend`` and ``reuse``, and
    the passes themselves, ``clean_pass`` and ``perturbed_pass``, as ESAM does).
    The runner sets ``total_steps`` and ``lr_range = (lr_min, lr_max)`` before the first step.
    """

    #: The largest weight difference a restore may leave (the contract kit checks it): 0, bit for bit, for variants
    #: that restore from a copy; one that subtracts its perturbation declares its rounding allowance (nuSAM: 1e-6).
    restore_tolerance: float = 0.0
    #: Whether a step the scheduler perturbs runs a second pass (False for one-pass variants such as Momentum-SAM,
    #: whose %SAM and second-pass cost are then 0 whatever the scheduler says: ``harness bench``'s theory reads it).
    second_pass: bool = True

    #: Set by the runner under DDP's ``perturbation_scope: local`` (``harness.run.distributed.mean_over_ranks_``):
    #: the clean gradient of pass 1 is then this rank's own (the perturbation is computed from it), and
    #: ``synced_clean_gradients`` averages it over ranks in place wherever it is used beyond the
    #: perturbation (an unperturbed step's update, GSAM's and LookSAM's decompositions), so every rank
    #: applies the same update. None outside a process group or under the global scope.
    rank_mean: Callable[[list[torch.Tensor]], None] | None = None

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler: PerturbationScheduler,
        **hparams: Any,
    ) -> None:
        params, self.param_names = _split_names(params)
        super().__init__(params, dict(hparams))
        own = {id(p) for group in self.param_groups for p in group["params"]}
        base = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
        if own != base:
            raise ValueError(
                f"{type(self).__name__}: the base optimizer must update exactly the same parameters "
                f"({len(base)} given to the base optimizer, {len(own)} to the sharpness-aware optimizer)"
            )
        self.param_groups = base_optimizer.param_groups
        self.base_optimizer = base_optimizer
        self.scheduler = scheduler
        self.hparams = dict(hparams)
        self.total_steps = 0
        self.lr_range = (0.0, float(self.param_groups[0].get("initial_lr", self.param_groups[0]["lr"])))
        self.steps_taken = 0
        self.last_step: StepInfo | None = None
        self._params = [p for group in self.param_groups for p in group["params"] if p.requires_grad]
        self._backup: list[torch.Tensor] | None = None
        self.step_overflowed = False

    def params_with_grads(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The trainable parameters that hold a gradient, and those gradients.

        When every parameter has a gradient (the usual case) the parameter list is the optimizer's
        own, not a copy: callers must not modify the list.
        """
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            params = [p for p in self._params if p.grad is not None]
            return params, [p.grad for p in params]
        return self._params, grads

    @staticmethod
    def global_norm(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The L2 norm of the concatenation of ``tensors``, as a 0-dim tensor (no host sync)."""
        if not tensors:
            return torch.zeros(())
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))

    def _backup_buffers(self) -> list[torch.Tensor]:
        """The persistent copy of the weights (one buffer per trainable parameter, allocated once)."""
        if self._backup is None:
            self._backup = [torch.empty_like(p) for p in self._params]
        return self._backup

    def synced_clean_gradients(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], grad_norm: torch.Tensor
    ) -> torch.Tensor:
        """Average the clean gradients ``grads`` (of ``params``) over ranks in place under the local scope;
        return their norm.

        Outside that scope a no-op that returns ``grad_norm``. Called after the perturbation was computed
        from this rank's gradient: on every unperturbed step (by ``step``) and by variants that keep the
        clean gradient past pass 2 (GSAM, LookSAM), on their stored copy. Every rank reduces one tensor per
        trainable parameter (zeros for a parameter without a gradient here), so the collective matches
        across ranks whichever parameters each one's pass reached.
        """
        if self.rank_mean is None:
            return grad_norm
        self.average_over_ranks(params, grads)
        return self.global_norm(grads)

    def average_over_ranks(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """``rank_mean`` over one tensor per trainable parameter: ``grads`` (of ``params``), zeros for the rest."""
        given = {id(p): g for p, g in zip(params, grads, strict=True)}
        self.rank_mean([given[id(p)] if id(p) in given else torch.zeros_like(p) for p in self._params])

    def context(self, grad_norm: torch.Tensor) -> StepContext:
        """The ``StepContext`` of the step about to be taken."""
        return StepContext(
            step=self.steps_taken,
            total_steps=self.total_steps,
            lr=float(self.param_groups[0]["lr"]),
            grad_sq_norm=grad_norm * grad_norm,
            lr_min=self.lr_range[0],
            lr_max=self.lr_range[1],
        )

    @torch.no_grad()
    def step(self, closure: Closure | None = None) -> torch.Tensor:  # type: ignore[override]
        """Take one step; ``closure`` is called once or more (see the module docstring)."""
        loss = self.clean_pass(closure)
        self.step_overflowed = _overflowed(closure)
        if self.step_overflowed:  # fp16: pass 1 overflowed; skip the whole step
            return self._skipped(closure, loss)
        params, grads = self.params_with_grads()
        grad_norm = self.global_norm(grads)
        perturb, rho = self.scheduler.decide(self.context(grad_norm))
        if perturb:
            extras = self.ascend(params, grads, float(rho), grad_norm)
            surrogate_gap = self.perturbed_pass(closure, loss)
            self.step_overflowed = _overflowed(closure)
            extras.update(self.descend(params, float(rho)))
            extras["surrogate_gap"] = surrogate_gap
        else:
            grad_norm = self.synced_clean_gradients(params, grads, grad_norm)
            extras = self.reuse(params, grads, grad_norm)
        extras.setdefault("grad_norm", grad_norm)
        if self.step_overflowed:
            extras["skipped"] = True
        else:
            self.base_optimizer.step()
        self.steps_taken += 1
        self.last_step = StepInfo(perturbed=bool(perturb), rho=float(rho) if perturb else 0.0, extras=extras)
        _finish(closure)
        return loss

    def clean_pass(self, closure: Closure | None) -> torch.Tensor:
        """Pass 1 at ``w``: the clean gradient in ``p.grad``; returns the loss. ESAM also keeps each example's loss."""
        return _clean_pass(closure)

    def perturbed_pass(self, closure: Closure, loss: torch.Tensor) -> torch.Tensor:
        """Pass 2 at ``w + e``: the gradient to descend with in ``p.grad``; returns the surrogate gap
        f(w + e) - f(w) (GSAM's h, 004 eq. 4). ESAM runs it on the examples it selects."""
        with torch.enable_grad():
            return closure() - loss

    def _skipped(self, closure: Closure, loss: torch.Tensor) -> torch.Tensor:
        """End a step whose clean pass overflowed: no scheduler call, no second pass, no update."""
        self.steps_taken += 1
        self.last_step = StepInfo(perturbed=False, rho=0.0, extras={"skipped": True})
        _finish(closure)
        return loss

    def perturbation(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], rho: float, grad_norm: torch.Tensor
    ) -> list[torch.Tensor]:
        """The perturbation ``e`` (one tensor per parameter in ``params``) to add to the weights."""
        raise NotImplementedError

    def ascend(
        self, params: list[torch.Tensor], grads: list[torch.Tensor], rho: float, grad_norm: torch.Tensor
    ) -> dict[str, Any]:
        """Save the weights and move them to ``w + e``. Returns extras for ``StepInfo``.

        Overrides may overwrite ``grads`` in place (pass 2 replaces the gradients anyway).
        """
        torch._foreach_copy_(self._backup_buffers(), self._params)
        perturbation = self.perturbation(params, grads, rho, grad_norm)
        torch._foreach_add_(params, perturbation)
        return {"perturbation_norm": self.global_norm(perturbation)}

    def descend(self, params: list[torch.Tensor], rho: float) -> dict[str, Any]:
        """Restore the weights saved by ``ascend``; ``p.grad`` now holds the perturbed gradient.

        Every trainable parameter is copied back, so the restore is exact and independent of which
        parameters received a gradient in the second pass. Subclasses that combine gradients (GSAM)
        do so here, after calling this.
        """
        torch._foreach_copy_(self._params, self._backup)
        return {}

    def reuse(self, params: list[torch.Tensor], grads: list[torch.Tensor], grad_norm: torch.Tensor) -> dict[str, Any]:
        """On an unperturbed step, optionally rewrite ``p.grad`` (LookSAM). Default: plain gradient."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Base optimizer, scheduler and variant state, so a run resumes on the same trajectory."""
        return {
            "base_optimizer": self.base_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "steps_taken": self.steps_taken,
            "variant": self.variant_state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.base_optimizer.load_state_dict(state_dict["base_optimizer"])
        # torch replaces the base's param_groups list: share it again (else a stale lr: GSAM's rho_t follows it)
        self.param_groups = self.base_optimizer.param_groups
        self.scheduler.load_state_dict(state_dict["scheduler"])
        self.steps_taken = int(state_dict["steps_taken"])
        self.load_variant_state_dict(state_dict["variant"])

    def variant_state_dict(self) -> dict[str, Any]:
        """The variant's own state (LookSAM's g_v, nuSAM's vectors, ...). Default: none."""
        return {}

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``variant_state_dict`` returned."""
