"""ESAM, Efficient SAM (Du, Yan, Feng, Zhou, Zhen, Goh, Tan, ICLR 2022, arXiv 2110.03141), Alg. 1.

The paper is not in shared/papers; this follows its Sec. 3 (SWP, Sec. 3.1; SDS, Sec. 3.2) and the
authors' reference code (github.com/dydjw9/Efficient_SAM, ``utils/esam.py``). ESAM is the baseline of
every table of shared/papers/001_543051aac35e9f16.txt (AE-SAM, Tables 1-3), which states none of its
settings (shared/papers/seed_looksam_aesam.md, "ESAM settings ... are not given in P2"). Two changes to
SAM's step, each with its own knob:

- Stochastic weight perturbation (SWP), ``beta``: each parameter tensor is perturbed with probability
  ``beta`` (a fresh draw every step), by e_i = (rho / beta) g_i / ||g_S||, g_S the clean gradient of the
  chosen tensors (the reference code scales by 1 / beta so that the expected perturbation keeps SAM's
  size); the others stay at w. The reference code also skips the chosen-out tensors' gradients in the
  clean backward pass (``requires_grad`` off), which saves time but changes nothing in the arithmetic;
  here every clean gradient is computed, so ESAM's measured wall-clock is its cost without that saving.
- Sharpness-sensitive data selection (SDS), ``gamma``: after moving to w + e, a forward pass alone gives
  each example's loss; the examples whose loss rose most, l(w + e) - l(w), form B+ of
  ``int(gamma * |B|)`` examples (at least one), and the second (backward) pass runs on B+ only, so a step
  costs 1 + gamma gradient evaluations plus one forward pass. The paper keeps the gamma |B| examples with
  the largest rise; the reference code keeps those strictly above the k-th largest rise (k - 1 examples,
  fewer with ties): this follows the paper. ``gamma`` 1 selects the whole batch (no forward pass), and
  so does rho = 0, where no example's loss can rise (every rise ties at 0): ESAM with rho = 0 is then its
  base optimizer, the reduction identity every SAM variant keeps (the contract kit checks it).

The per-example losses come from the harness closure (``with_sample_losses``, ``sample_losses``,
``subset``: ``harness.run.closure.BatchClosure``); they are the training loss without its L2 term,
which is the same for every example. The chosen tensors come from a private generator seeded with
``harness.component_seed(seed, "esam")`` (``seed`` None: from the run seed), saved in ``state_dict``.
The preset's beta = 0.6 and gamma = 0.5 are the reference code's CIFAR commands (its README, ResNet-18
on CIFAR-10/100); rho comes from the perturbation scheduler, every step in the paper.
"""

from __future__ import annotations

from typing import Any

import torch

from harness import ProtocolError, SharpnessAwareOptimizer, component_seed


class ESAM(SharpnessAwareOptimizer):
    """SAM with stochastic weight perturbation and sharpness-sensitive data selection (see the module docstring)."""

    def __init__(
        self,
        params,
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler,
        beta: float = 0.6,
        gamma: float = 0.5,
        seed: int | None = None,
        eps: float = 1e-12,
    ) -> None:
        for name, value in (("beta", beta), ("gamma", gamma)):
            if not 0.0 < float(value) <= 1.0:
                raise ValueError(f"esam: {name} {value!r} is invalid: expected a fraction in (0, 1]")
        super().__init__(
            params, base_optimizer=base_optimizer, scheduler=scheduler, beta=beta, gamma=gamma, seed=seed, eps=eps
        )
        self.beta, self.gamma, self.eps = float(beta), float(gamma), float(eps)
        self._generator = torch.Generator().manual_seed(component_seed(seed, "esam"))
        self._clean_losses: torch.Tensor | None = None
        self._rho, self._evaluations = 0.0, 2.0

    def clean_pass(self, closure) -> torch.Tensor:
        """Pass 1, keeping each example's loss at w for the data selection."""
        if self.gamma >= 1.0:
            return super().clean_pass(closure)
        if not hasattr(closure, "with_sample_losses"):
            raise ProtocolError(
                "esam with gamma < 1 needs the harness closure (harness.run.closure.BatchClosure: "
                "with_sample_losses, sample_losses, subset) to select examples; got a plain callable"
            )
        with torch.enable_grad():
            loss, self._clean_losses = closure.with_sample_losses()
        return loss

    def chosen(self, count: int) -> list[bool]:
        """SWP: which of ``count`` parameter tensors this step perturbs, each with probability beta."""
        return (torch.rand(count, generator=self._generator) < self.beta).tolist()

    def ascend(self, params, grads, rho, grad_norm) -> dict[str, Any]:
        """Save w and move the chosen tensors by (rho / beta) g_i / ||g_S|| (their gradients scaled in place)."""
        torch._foreach_copy_(self._backup_buffers(), self._params)
        keep = self.chosen(len(params))
        moved = [p for p, k in zip(params, keep, strict=True) if k]
        directions = [g for g, k in zip(grads, keep, strict=True) if k]
        norm = self.global_norm(directions).to(params[0].device)
        self._rho = rho
        if moved:
            torch._foreach_mul_(directions, (rho / self.beta) / (norm + self.eps))
            torch._foreach_add_(moved, directions)
        return {"perturbation_norm": (rho / self.beta) * norm / (norm + self.eps), "perturbed_tensors": len(moved)}

    def perturbed_pass(self, closure, loss: torch.Tensor) -> torch.Tensor:
        """SDS: pass 2 on the int(gamma |B|) examples whose loss rose most from w to w + e."""
        clean, self._clean_losses = self._clean_losses, None
        if self.gamma >= 1.0 or self._rho == 0.0:
            self._evaluations = 2.0
            return super().perturbed_pass(closure, loss)
        perturbed = closure.sample_losses()
        rise = perturbed - clean
        selected = torch.topk(rise, max(1, int(self.gamma * rise.numel()))).indices
        self._evaluations = 1.0 + selected.numel() / rise.numel()
        with torch.enable_grad():
            closure.subset(selected)()
        return perturbed.mean() - clean.mean()

    def descend(self, params, rho) -> dict[str, Any]:
        """Restore w; report the step's gradient evaluations (1 + |B+| / |B|)."""
        return {**super().descend(params, rho), "gradient_evaluations": self._evaluations}

    def variant_state_dict(self) -> dict[str, Any]:
        """The SWP generator's state, so a resumed run perturbs the same tensors."""
        return {"generator": self._generator.get_state()}

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("generator") is not None:
            self._generator.set_state(state["generator"])
