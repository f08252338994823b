"""SAM (Foret et al., ICLR 2021) and its perturbation variants: p=inf, ASAM, layer-wise, random, m.

Source: shared/papers/003_dc502e6d0d8ca36d.txt, Algorithm 1 and eq. 2-3, with the extraction
notes shared/papers/seed_sam_gsam.md A.2-A.3. The first-order solution of the inner maximization
for p=2 is e = rho g / ||g||_2 (footnote 2), ||.||_2 the global norm over all parameters; the
update applies the base optimizer to the gradient at w + e (eq. 3, second-order terms dropped).
``eps`` (1e-12) guards the division when g = 0 (GSAM's w_adv definition, 004 Sec. 3; the JAX
reference divides with no epsilon). rho comes from the perturbation scheduler.

Options (``harness_sam.perturbations`` has the formulas):

- ``norm``: ``l2`` (default, "typically optimal", App. C.5) or ``linf`` (e = rho sign(g), App. C.5).
- ``adaptive``: ASAM (Kwon et al. 2021): T_w = |w| + ``eta`` elementwise,
  e = rho T_w^2 g / ||T_w g||. GSAM's paper runs ASAM with a 10x larger rho (seed B.3). ASAM's formula
  is not in the five papers, and Kwon et al.'s reference code scales only parameters whose name
  contains "weight" (T = 1 for biases): ``adaptive_params`` ``all`` (default) or ``weights``.
- ``layerwise``: LayerSAM's trust-ratio scaling (000_821cd26b06e61c4d.txt, Sec. 3.3 eq. 6-7, Alg. 2-3),
  Lambda = diag(||w_i|| / ||g_i||) per tensor. ``trust_ratio``: ``printed`` multiplies each tensor's e
  by ||w_i|| / ||g_i|| as Alg. 2-3 and eq. 7 print it (rho Lambda sign(g), rho Lambda g / ||g||);
  ``inverse`` is the exact first-order maximiser of eq. 6, max <g, e> subject to ||Lambda e|| <= rho:
  rho Lambda^-1 sign(g) for ``linf`` and rho Lambda^-2 g / ||Lambda^-1 g|| for ``l2`` (not the
  printed l2 form with the ratio inverted; seed_looksam_aesam.md A.3, A.9 item 1). The paper
  contradicts itself and its code is not public; the default is what it prints. (At the paper's
  rho=1.0, the printed form perturbs each weight by ||w_i|| / ||g_i||, which wrecks training on small
  models: see the README.) ``zero_weight_ratio``: the ratio of a tensor whose weights are all 0, where
  the printed ratio is 0 and the inverse one infinite; the paper does not say, the default 1 is LAMB's
  guard (seed A.3 "Trust-ratio guards"), 0 leaves such tensors (zero-initialized biases) unperturbed.
- ``normalize``: false gives the unnormalized e = rho g of AE-SAM's Alg. 1 (001, line 7), which
  contradicts its eq. 2 and experiments; the default follows the experiments (normalized).
- ``direction``: ``random`` replaces g by z ~ N(0, I) drawn from a private generator (the
  random-perturbation control of SAM App. C.5, GaussSAM in 002 Sec. 4) seeded with
  ``harness.component_seed(seed, "sam")``: ``seed`` None derives it from the run seed (what the
  ``random-sam`` preset sets), an integer pins the directions whatever the run seed. The spec's
  default stays 0: it matters only with ``direction: random``, and changing it would change the run
  id of every SAM run ever recorded.
- ``m``: m-sharpness (SAM Sec. 4.1): the batch is split into sub-batches of ``m`` examples, each
  perturbed with its own gradient, and the perturbed gradients are averaged (what SAM's data
  parallelism does, one perturbation per accelerator). 0 perturbs with the whole batch.
- ``perturb``: ``all`` (default) or ``normalization``, SAM-ON (Mueller et al., NeurIPS 2023; the
  baseline of shared/papers/002_aa5e854e0246be55.txt Sec. 5, seed_nusam.md section 9): only the
  normalization layers' weights and biases are perturbed, e computed from their gradient alone (so
  ||e|| = rho on them, as the reference code github.com/mueller-mp/SAM-ON normalizes), and only they
  are backed up; the base optimizer still updates every parameter with the gradient at w + e.
  ``harness_sam.normalization`` has the rule; ``normalization_pattern``, a regular expression on the
  parameter names, replaces it (``""``: the rule).

Cost (shared/DESIGN.md section 9): for the default l2 perturbation along the gradient, ``ascend``
scales the clean gradient in place into the perturbation (pass 2 replaces the gradients anyway) and
adds it to the weights: one norm, one copy into the persistent weight backup, one scale and one add,
all ``torch._foreach_*`` kernels, no allocation and no host synchronization; the perturbation's norm
is computed from the gradient norm rather than by another pass. The other options build the
perturbation with ``perturbation`` (which leaves the gradients untouched).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from harness import SharpnessAwareOptimizer, StepInfo, component_seed
from harness_sam import normalization, perturbations

NORMS = ("l2", "linf")
DIRECTIONS = ("gradient", "random")
TRUST_RATIOS = ("printed", "inverse")
ADAPTIVE_PARAMS = ("all", "weights")
PERTURB = ("all", "normalization")


class SAM(SharpnessAwareOptimizer):
    """Sharpness-aware minimization with a configurable perturbation (see the module docstring)."""

    def __init__(
        self,
        params,
        *,
        base_optimizer: torch.optim.Optimizer,
        scheduler,
        norm: str = "l2",
        adaptive: bool = False,
        eta: float = 0.01,
        adaptive_params: str = "all",
        layerwise: bool = False,
        trust_ratio: str = "printed",
        zero_weight_ratio: float = 1.0,
        normalize: bool = True,
        direction: str = "gradient",
        m: int = 0,
        seed: int | None = 0,
        eps: float = 1e-12,
        perturb: str = "all",
        normalization_pattern: str = "",
        **hparams: Any,
    ) -> None:
        if norm not in NORMS:
            raise ValueError(f"{type(self).__name__}: norm must be one of {NORMS}, got {norm!r}")
        if direction not in DIRECTIONS:
            raise ValueError(f"{type(self).__name__}: direction must be one of {DIRECTIONS}, got {direction!r}")
        if m < 0:
            raise ValueError(f"{type(self).__name__}: m must be >= 0 (0 = the whole batch), got {m}")
        super().__init__(
            params,
            base_optimizer=base_optimizer,
            scheduler=scheduler,
            norm=norm,
            adaptive=adaptive,
            eta=eta,
            adaptive_params=adaptive_params,
            layerwise=layerwise,
            trust_ratio=trust_ratio,
            zero_weight_ratio=zero_weight_ratio,
            normalize=normalize,
            direction=direction,
            m=m,
            seed=seed,
            eps=eps,
            perturb=perturb,
            normalization_pattern=normalization_pattern,
            **hparams,
        )
        if trust_ratio not in TRUST_RATIOS:
            raise ValueError(f"{type(self).__name__}: trust_ratio must be one of {TRUST_RATIOS}, got {trust_ratio!r}")
        if adaptive_params not in ADAPTIVE_PARAMS:
            raise ValueError(
                f"{type(self).__name__}: adaptive_params must be one of {ADAPTIVE_PARAMS}, got {adaptive_params!r}"
            )
        self.norm, self.adaptive, self.eta, self.layerwise = norm, adaptive, eta, layerwise
        # ids of the parameters ASAM leaves unscaled (T = 1): those not named "...weight..." under ``weights``
        self._unscaled = {
            id(p)
            for p in self._params
            if adaptive_params == "weights" and "weight" not in self.param_names.get(id(p), "weight")
        }
        if zero_weight_ratio < 0:
            raise ValueError(f"{type(self).__name__}: zero_weight_ratio must be >= 0, got {zero_weight_ratio}")
        self.trust_ratio, self.zero_weight_ratio = trust_ratio, float(zero_weight_ratio)
        self.normalize, self.direction, self.m, self.eps = normalize, direction, m, eps
        self._generator: torch.Generator | None = None
        self._seed = component_seed(seed, "sam")  # resolved now: the run seed is known while building
        # The default perturbation, e = rho g / (||g|| + eps), is computed in place in the gradients.
        self._in_place = norm == "l2" and normalize and not adaptive and not layerwise and direction == "gradient"
        self._sub_batch_sum: GradientMemory | None = None
        self._perturbed = self._select(perturb, normalization_pattern)

    def _select(self, perturb: str, pattern: str) -> list[torch.Tensor]:
        """The parameters ``ascend`` perturbs: every trainable one, or the normalization ones (SAM-ON)."""
        name = type(self).__name__
        if perturb not in PERTURB:
            raise ValueError(f"{name}: perturb must be one of {PERTURB}, got {perturb!r}")
        if perturb == "all":
            if pattern:
                raise ValueError(f"{name}: normalization_pattern {pattern!r} needs perturb='normalization'")
            return self._params
        unnamed = sum(id(p) not in self.param_names for p in self._params)
        if unnamed:
            raise ValueError(
                f"{name}: perturb='normalization' tells parameters by name, and {unnamed} have none: build the "
                f"optimizer from (name, tensor) pairs (model.named_parameters())"
            )
        named = [(self.param_names[id(p)], p) for p in self._params]
        chosen = normalization.normalization_names(named, pattern)
        if not chosen:
            warnings.warn(
                f"{name}: perturb='normalization' found no normalization parameter among {len(named)} "
                f"(normalization_pattern {pattern!r}): every step takes two passes and equals the base optimizer's",
                stacklevel=3,
            )
        return [p for key, p in named if key in chosen]

    def _backup_buffers(self) -> list[torch.Tensor]:
        """The persistent copy of the perturbed weights (SAM-ON: of the normalization parameters only)."""
        if self._backup is None:
            self._backup = [torch.empty_like(p) for p in self._perturbed]
        return self._backup

    def ascend(self, params, grads, rho, grad_norm):
        if self._perturbed is not self._params:  # SAM-ON: e from the perturbed parameters' gradient alone
            params = [p for p in self._perturbed if p.grad is not None]
            grads = [p.grad for p in params]
            grad_norm = self.global_norm(grads)
        if self._perturbed:
            torch._foreach_copy_(self._backup_buffers(), self._perturbed)
        if not params:  # SAM-ON on a model without normalization layers: pass 2 runs at w
            return {"perturbation_norm": torch.zeros(())}
        if not self._in_place:
            perturbation = self.perturbation(params, grads, rho, grad_norm)
            torch._foreach_add_(params, perturbation)
            return {"perturbation_norm": self.global_norm(perturbation)}
        scale = rho / (grad_norm + self.eps)
        torch._foreach_mul_(grads, scale)  # the gradients now hold e
        torch._foreach_add_(params, grads)
        return {"perturbation_norm": grad_norm * scale}

    def descend(self, params, rho):
        """Restore the perturbed weights from their backup (the others never moved)."""
        if self._perturbed:
            torch._foreach_copy_(self._perturbed, self._backup)
        return {}

    def perturbation(self, params, grads, rho, grad_norm):
        if self.direction == "random":
            direction, norm = self._random_direction(params), None
        else:
            direction, norm = grads, grad_norm
        scale = perturbations.adaptive_scale(params, self.eta) if self.adaptive else None
        if scale is not None and self._unscaled:
            for p, t in zip(params, scale, strict=True):
                if id(p) in self._unscaled:
                    t.fill_(1.0)
        ratios = self._trust_ratios(params, grads) if self.layerwise else None
        if ratios is not None and self.trust_ratio == "inverse":  # Lambda^-1 joins T: the exact maximiser
            scale = ratios if scale is None else torch._foreach_mul(scale, ratios)
        if self.norm == "linf":
            perturbation = perturbations.linf(direction, rho, scale=scale)
        else:
            perturbation = perturbations.l2(
                direction, rho, scale=scale, normalize=self.normalize, eps=self.eps, norm=norm
            )
        if ratios is not None and self.trust_ratio == "printed":
            torch._foreach_mul_(perturbation, ratios)
        return perturbation

    def _trust_ratios(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """Lambda's diagonal ||w_i|| / ||g_i|| (``printed``) or Lambda^-1's (``inverse``), one per tensor."""
        return perturbations.trust_ratios(
            params, grads, inverse=self.trust_ratio == "inverse", zero_weight_ratio=self.zero_weight_ratio
        )

    def _random_direction(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        if self._generator is None:
            self._generator = torch.Generator(device=params[0].device).manual_seed(self._seed)
        return [torch.randn(p.shape, generator=self._generator, device=p.device, dtype=p.dtype) for p in params]

    def variant_state_dict(self) -> dict[str, Any]:
        """The random-direction generator's state, so a resumed run draws the same directions."""
        return {"generator": None if self._generator is None else self._generator.get_state()}

    def load_variant_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("generator") is not None:
            self._generator = torch.Generator(device=self._params[0].device)
            self._generator.set_state(state["generator"])

    @torch.no_grad()
    def step(self, closure=None) -> torch.Tensor:
        if not self.m or closure is None:
            return super().step(closure)
        return self._m_sharpness_step(closure)

    def _m_sharpness_step(self, closure) -> torch.Tensor:
        """One step with a separate perturbation per sub-batch of ``m`` examples (SAM Sec. 4.1).

        The scheduler decides once, on the first sub-batch's clean gradient. Perturbed: every
        sub-batch is perturbed with its own gradient and the perturbed gradients are averaged,
        weighted by sub-batch size (two full-batch gradient evaluations in all). Not perturbed:
        the clean sub-batch gradients are averaged (one evaluation).
        """
        chunks = closure.chunks(self.m)
        sizes = [chunk.batch_size / closure.batch_size for chunk in chunks]
        if self._sub_batch_sum is None:
            self._sub_batch_sum = GradientMemory(self._params)
        total = self._sub_batch_sum.select(self._params)  # persistent, zeroed each step
        torch._foreach_zero_(total)
        loss = torch.zeros((), device=self._params[0].device)
        decided: tuple[bool, float] | None = None
        perturbed_losses = []
        overflowed = False
        for chunk, weight in zip(chunks, sizes, strict=True):
            with torch.enable_grad():
                loss += chunk() * weight
            if closure.overflowed():  # fp16: a non-finite gradient skips the step
                overflowed = True
                break
            params, grads = self.params_with_grads()
            grad_norm = self.global_norm(grads)
            if decided is None:
                decided = self.scheduler.decide(self.context(grad_norm))
            perturb, rho = decided
            if perturb:
                self.ascend(params, grads, float(rho), grad_norm)
                with torch.enable_grad():
                    perturbed_losses.append(chunk() * weight)
                self.descend(params, float(rho))
                if closure.overflowed():
                    overflowed = True
                    break
            params, grads = self.params_with_grads()
            torch._foreach_add_(self._sub_batch_sum.select(params), grads, alpha=weight)
        self.step_overflowed = overflowed
        perturb, rho = decided if decided is not None else (False, 0.0)
        extras: dict[str, Any] = {"sub_batches": len(chunks)}
        if overflowed:
            extras["skipped"] = True
        else:
            for p, gradient in zip(self._params, total, strict=True):
                p.grad = gradient
            extras["grad_norm"] = self.global_norm(total)
            if perturb:
                extras["surrogate_gap"] = torch.stack(perturbed_losses).sum() - loss
            self.base_optimizer.step()
        self.steps_taken += 1
        self.last_step = StepInfo(perturbed=bool(perturb), rho=float(rho) if perturb else 0.0, extras=extras)
        closure.finish()
        return loss


class GradientMemory:
    """Persistent per-parameter buffers (one per trainable parameter), allocated once.

    Variants that need a gradient after it was overwritten (GSAM's clean gradient, LookSAM's g_v)
    keep it here, so the hot path allocates nothing.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self._index = {id(p): i for i, p in enumerate(params)}
        self._params = params
        self.buffers: list[torch.Tensor] | None = None

    def select(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """The buffers of ``params`` (a subset of the optimizer's parameters), allocating on first use."""
        if self.buffers is None:
            self.buffers = [torch.zeros_like(p) for p in self._params]
        if len(params) == len(self._params):  # every parameter, in order (params_with_grads keeps the order)
            return self.buffers
        return [self.buffers[self._index[id(p)]] for p in params]

    def store(self, params: list[torch.Tensor], values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copy ``values`` into the buffers of ``params`` and return those buffers."""
        buffers = self.select(params)
        torch._foreach_copy_(buffers, values)
        return buffers
