"""nuSAM (Pethick et al., TMLR 2025): SAM over a nuclear-norm ball, a rank-1 perturbation per weight matrix.

Sources: shared/papers/002_aa5e854e0246be55.txt (Algorithm 1, Algorithm 2, eq. 7-8, Appendix C.1) and the
extraction notes shared/papers/seed_nusam.md, sections 2-4 and 9. The step protocol is
shared/DESIGN.md section 4 (``harness.contract.optim``).

For every perturbed matrix ``W_i`` with clean gradient ``G_i`` (Algorithm 1, step 2):

- warm-started power iteration (Algorithm 2, ``power_iterations`` = T rounds from the previous step's
  ``u_i``): ``v = G^T u / (||G^T u|| + tau)``, then ``u = G v / (||G v|| + tau)``;
- ``W_i += rho u_i v_i^T`` in place (``addr_``): no copy of the weights and no dense perturbation is
  ever stored (eq. 8a); after the second pass ``W_i -= rho u_i v_i^T`` in place (eq. 8b). Adding and
  subtracting the same rank-1 product restores ``W_i`` only to within floating-point rounding (about
  one ulp of ``|W| + rho |u v^T|`` per entry), not bit for bit as the base class's copy-back restore
  does: that is the price of the memory saving, and what the paper describes.

Each ``rho u_i v_i^T`` has Frobenius (= nuclear = spectral) norm ``rho``, so the global L2 norm of the
perturbation is ``rho * sqrt(l)`` for ``l`` matrices (seed_nusam.md section 2.8): nuSAM's rho is on a
different scale from SAM's. ``normalized=True`` gives nuSAM-Norm (Appendix C.1, eq. 21): ``eps_i = rho
sigma_i u_i v_i^T / sqrt(sum_j sigma_j^2)`` with ``sigma_i = ||G_i v_i||`` from the power iteration, so
the global norm is ``rho``. The power iteration on ``+G`` gives ``u^T G v = ||G v|| >= 0``, so adding
``+rho u v^T`` is an ascent direction with no sign fix (seed_nusam.md section 2.7).

Which parameters are perturbed (paper Sec. 5, "only the weight matrices are perturbed"; seed_nusam.md
section 3.3): 2-D tensors only, so biases and norm layers (1-D), conv kernels (4-D, e.g. the ViT patch
embedding, which the paper skips) and ViT cls/pos tokens (3-D) are not; and no parameter whose name
contains one of the ``exclude`` substrings (embedding tables, which are 2-D; the paper does not say whether
BERT's embedding matrices count, seed_nusam.md section 3.3). Names come from ``param_names`` (the runner
builds the optimizer from ``model.named_parameters()``); a parameter with no known name is filtered by
shape only. ``include_conv=True`` is a harness extension, NOT paper-faithful: Conv2d kernels are viewed as
``(C_out, C_in * kh * kw)`` matrices and perturbed like the others. Parameters that are not perturbed are
still updated by the base optimizer, with their gradient from the second (perturbed-point) pass
(Algorithm 1, footnote 1).

State: one ``u_i`` (rows) and one ``v_i`` (columns) per matrix, ``sum_i (n_i + m_i)`` numbers, the count
of the paper's Table 1 (seed_nusam.md section 3.4); ``v_i`` is kept from one step to the next only so
that the held state does not change size (nuSAM-Norm stores it multiplied by its layer scale
``sigma_i / sqrt(sum_j sigma_j^2)``). ``u_i`` is the warm start and is saved by
``variant_state_dict`` (section 9: resuming without it changes the trajectory). Its initial value is
unspecified in the paper (section 3.2); here it is ``N(0, I)``, normalized, drawn once at construction
from a dedicated CPU generator seeded with ``harness.component_seed(seed, "nusam")`` (``seed`` None, the
default: derived from the run seed, so each run seed starts from its own ``u_i``; an integer pins them),
so building the optimizer does not touch the global RNG. If a matrix's gradient is zero
(``G^T u = 0``), its ``u_i`` is kept rather than collapsing to the zero vector, which would switch the
warm start off for good (Algorithm 2 with ``u = 0`` returns zeros forever); that matrix gets no
perturbation on that step.

On steps where the scheduler says no (the delay period of the paper's preset, Sec. 5.1), the step is a
plain base-optimizer step. Whether the ``u_i`` are refreshed there is unspecified (seed_nusam.md section
3.5, "keep it configurable"): ``refresh_during_delay`` (default false) runs the power iteration on those
steps' clean gradients too, so the first perturbed step starts from a warm ``u_i``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from harness import SharpnessAwareOptimizer, component_seed

DEFAULT_EXCLUDE = ("embed", "pos_embed", "cls_token")


class NuSAM(SharpnessAwareOptimizer):
    """nuSAM: per-matrix rank-1 perturbation ``rho u_i v_i^T`` from a warm-started power iteration.

    power_iterations: T in Algorithm 2 (the paper uses 1, Sec. 5; Table 10 finds more is not better).
    tau: the stabilizer of Algorithm 2, > 0 (1e-12 in the paper).
    normalized: nuSAM-Norm (Appendix C.1) instead of nuSAM.
    exclude: substrings of parameter names never perturbed (embeddings; a string or a list of strings).
    include_conv: also perturb Conv2d kernels viewed as (C_out, C_in*kh*kw) matrices (harness extension).
    seed: seed of the generator that draws the initial ``u_i``; None derives it from the run seed.
    refresh_during_delay: also refresh ``u_i, v_i`` on unperturbed steps (the delay), see the module docstring.
    """

    #: The restore subtracts the rank-1 perturbation it added (no weight copy: the memory nuSAM saves),
    #: so weights come back to within floating-point rounding, not bit for bit (the contract kit's allowance).
    restore_tolerance = 1e-6

    def __init__(
        self,
        params,
        *,
        base_optimizer,
        scheduler,
        power_iterations: int = 1,
        tau: float = 1e-12,
        normalized: bool = False,
        exclude: Sequence[str] | str = DEFAULT_EXCLUDE,
        include_conv: bool = False,
        seed: int | None = None,
        refresh_during_delay: bool = False,
    ) -> None:
        if isinstance(exclude, str):
            exclude = [exclude]
        exclude = [str(pattern) for pattern in exclude]
        if int(power_iterations) != power_iterations or power_iterations < 1:
            raise ValueError(f"nusam: power_iterations must be an integer >= 1, got {power_iterations!r}")
        if not tau > 0:  # Algorithm 2 takes tau in (0, inf): with 0, a zero gradient gives 0/0
            raise ValueError(f"nusam: tau must be > 0, got {tau!r}")
        super().__init__(
            params,
            base_optimizer=base_optimizer,
            scheduler=scheduler,
            power_iterations=int(power_iterations),
            tau=float(tau),
            normalized=bool(normalized),
            exclude=list(exclude),
            include_conv=bool(include_conv),
            seed=seed,
            refresh_during_delay=bool(refresh_during_delay),
        )
        self.refresh_during_delay = bool(refresh_during_delay)
        self.power_iterations = int(power_iterations)
        self.tau = float(tau)
        self.normalized = bool(normalized)
        self.exclude = tuple(exclude)
        self.include_conv = bool(include_conv)
        self.matrices = [p for p in self._params if self.is_perturbed(p)]
        for p in self.matrices:
            if p.ndim == 4 and not p.is_contiguous():
                raise ValueError(
                    f"nusam: include_conv perturbs conv kernels through a (C_out, C_in*kh*kw) view, which "
                    f"needs a contiguous kernel; {self.param_names.get(id(p), 'a parameter')} is not "
                    f"(channels_last?)"
                )
        generator = torch.Generator().manual_seed(component_seed(seed, "nusam"))
        self._u: list[torch.Tensor] = []
        self._v: list[torch.Tensor] = []
        for p in self.matrices:
            u = torch.randn(p.shape[0], generator=generator, dtype=torch.float64)
            self._u.append((u / u.norm()).to(device=p.device, dtype=p.dtype))
            self._v.append(torch.zeros(p[0].numel(), device=p.device, dtype=p.dtype))
        # The matrices perturbed by the last ``ascend``, undone by the next ``descend``.
        self._applied: list[int] = []

    def is_perturbed(self, p: torch.Tensor) -> bool:
        """Whether ``p`` gets a rank-1 perturbation (shape and name filter; see the module docstring)."""
        if not (p.ndim == 2 or (self.include_conv and p.ndim == 4)):
            return False
        name = self.param_names.get(id(p))
        return name is None or not any(pattern in name for pattern in self.exclude)

    @staticmethod
    def _as_matrix(t: torch.Tensor) -> torch.Tensor:
        """Weight ``t`` as a (rows, columns) view (conv kernels: (C_out, C_in*kh*kw)); 2-D tensors as they are."""
        return t if t.ndim == 2 else t.view(t.shape[0], -1)

    def perturbation(self, params, grads, rho, grad_norm):
        raise NotImplementedError("nuSAM applies its rank-1 perturbations in place in ascend(); it has no dense one")

    def power_iteration(self, grads: list[torch.Tensor], us: list[torch.Tensor]):
        """Algorithm 2 on every matrix at once: T rounds from ``us``; returns ``(us, vs, sigmas)``.

        ``sigmas[i] = ||G_i v_i||`` (0-dim tensors) before the last normalization. A matrix whose
        ``G_i v_i`` is zero keeps its previous ``u_i`` (and gets ``v_i = 0``).
        """
        vs: list[torch.Tensor] = []
        sigmas: list[torch.Tensor] = []
        for _ in range(self.power_iterations):
            vs = [torch.mv(g.mT, u) for g, u in zip(grads, us, strict=True)]
            norms = torch._foreach_norm(vs)
            torch._foreach_add_(norms, self.tau)
            torch._foreach_div_(vs, norms)
            gvs = [torch.mv(g, v) for g, v in zip(grads, vs, strict=True)]
            sigmas = torch._foreach_norm(gvs)
            torch._foreach_div_(gvs, torch._foreach_add(sigmas, self.tau))
            us = [torch.where(s > 0, new, old) for s, new, old in zip(sigmas, gvs, us, strict=True)]
        return us, vs, sigmas

    def _refresh(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Power iteration on the clean gradients of the matrices that have one (their indices in ``_applied``)."""
        self._applied = [i for i, p in enumerate(self.matrices) if p.grad is not None and not p.grad.is_sparse]
        if not self._applied:
            return [], [], []
        gs = [self.matrices[i].grad.reshape(self.matrices[i].shape[0], -1) for i in self._applied]
        return self.power_iteration(gs, [self._u[i] for i in self._applied])

    def reuse(self, params, grads, grad_norm):
        """An unperturbed step: refresh ``u_i, v_i`` when ``refresh_during_delay``; the gradients are left alone."""
        if self.refresh_during_delay:
            us, vs, _ = self._refresh()
            for i, u, v in zip(self._applied, us, vs, strict=True):
                self._u[i], self._v[i] = u, v
            self._applied = []
        return {}

    def ascend(self, params, grads, rho, grad_norm):
        """Refresh ``u_i, v_i`` by power iteration on the clean gradients and add ``rho u_i v_i^T`` in place."""
        us, vs, sigmas = self._refresh()
        if not self._applied:
            return {"perturbation_norm": torch.zeros(()), "perturbed_matrices": 0}
        mats = [self._as_matrix(self.matrices[i]) for i in self._applied]
        if self.normalized:
            # Appendix C.1, eq. 21: layer i scaled by sigma_i / sqrt(sum_j sigma_j^2); folded into v_i.
            total = torch.linalg.vector_norm(torch.stack(sigmas)) + self.tau
            torch._foreach_mul_(vs, torch._foreach_div(sigmas, total))
        for i, u, v in zip(self._applied, us, vs, strict=True):
            self._u[i], self._v[i] = u, v
        for w, u, v in zip(mats, us, vs, strict=True):
            w.addr_(u, v, alpha=rho)
        # ||rho u v^T||_F = rho ||u|| ||v||: the global norm from 2l vector norms, no dense tensor.
        scales = torch.stack(torch._foreach_norm(us)) * torch.stack(torch._foreach_norm(vs))
        return {
            "perturbation_norm": rho * torch.linalg.vector_norm(scales),
            "perturbed_matrices": len(self._applied),
        }

    def descend(self, params, rho):
        """Subtract ``rho u_i v_i^T`` from every matrix ``ascend`` perturbed (restores w up to rounding).

        The set comes from ``ascend``, never from which parameters received a gradient in pass 2.
        """
        for i in self._applied:
            self._as_matrix(self.matrices[i]).addr_(self._u[i], self._v[i], alpha=-rho)
        self._applied = []
        return {}

    def variant_state_dict(self):
        """The warm-start vectors ``u_i`` (``v_i`` is recomputed from ``u_i`` before it is used)."""
        return {"u": [u.clone() for u in self._u]}

    def load_variant_state_dict(self, state):
        saved = list(state.get("u", []))
        if len(saved) != len(self._u) or any(s.shape != u.shape for s, u in zip(saved, self._u, strict=True)):
            raise ValueError(
                f"nusam: the saved state has {len(saved)} warm-start vectors that do not match the "
                f"{len(self._u)} perturbed matrices of this model"
            )
        self._u = [s.to(device=u.device, dtype=u.dtype).clone() for s, u in zip(saved, self._u, strict=True)]
