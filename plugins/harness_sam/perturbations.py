"""How a perturbation e is computed from the gradient (or a random direction) and the weights.

One function per family, each on lists of tensors with ``torch._foreach_*`` kernels:

- ``l2``: e = rho T^2 d / ||T d|| (SAM eq. 2 with p=2, 003_dc502e6d0d8ca36d.txt footnote 2; with
  T = |w| + eta elementwise this is ASAM, Kwon et al. 2021, as cited in 004_c79f6670b818170d.txt
  Sec. 5 "ASAM"); ``normalize=False`` gives the unnormalized e = rho T^2 d of AE-SAM's Algorithm 1
  (001_543051aac35e9f16.txt, line 7; seed_looksam_aesam.md B.3 [DISCREPANCY]).
- ``linf``: e = rho T sign(d) (SAM App. C.5 p=inf; LookSAM Alg. 1 prints this form).
- ``layerwise`` scaling (LayerSAM, 000_821cd26b06e61c4d.txt Alg. 2-3, eq. 7): each tensor's
  perturbation is multiplied by the trust ratio ||w_i|| / ||g_i|| (where ||w_i|| = 0 the printed ratio
  is 0 and the inverse one infinite: ``zero_weight_ratio``, default 1, the LAMB convention of
  seed_looksam_aesam.md A.3 "Trust-ratio guards"; where only ||g_i|| = 0, 1: e_i is 0 anyway), so
  ``linf`` + layerwise is rho (||w_i||/||g_i||) sign(g_i) as printed, and ``l2`` + layerwise its l2
  form rho xi_i g_i / ||g|| (seed_looksam_aesam.md A.3). Eq. 7 writes Lambda where the exact solution
  of the constraint ||Lambda e|| <= rho has Lambda^-1 (seed A.3); ``inverse=True`` gives that reading,
  ||g_i|| / ||w_i||.
"""

from __future__ import annotations

import torch

Tensors = list[torch.Tensor]


def global_norm(tensors: Tensors) -> torch.Tensor:
    """The L2 norm of the concatenation of ``tensors`` (0-dim tensor, no host sync)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def dot(first: Tensors, second: Tensors) -> torch.Tensor:
    """The inner product of two parameter-shaped lists, as a 0-dim tensor (no host sync)."""
    return torch.stack([torch.vdot(a.flatten(), b.flatten()) for a, b in zip(first, second, strict=True)]).sum()


def adaptive_scale(params: Tensors, eta: float) -> Tensors:
    """ASAM's elementwise operator T_w = |w| + eta."""
    scale = torch._foreach_abs(params)
    torch._foreach_add_(scale, eta)
    return scale


def trust_ratios(params: Tensors, grads: Tensors, *, inverse: bool = False, zero_weight_ratio: float = 1.0) -> Tensors:
    """LAMB-style ||w_i|| / ||g_i|| per tensor (or ||g_i|| / ||w_i||).

    ``zero_weight_ratio`` where ||w_i|| = 0 (zero-initialized biases, BatchNorm shifts); 1 where only
    ||g_i|| = 0 (that tensor's perturbation is 0 whatever the ratio).
    """
    weight_norms = torch.stack(torch._foreach_norm(params))
    grad_norms = torch.stack(torch._foreach_norm(grads))
    numerator, denominator = (grad_norms, weight_norms) if inverse else (weight_norms, grad_norms)
    ok = (weight_norms > 0) & (grad_norms > 0)
    ratios = numerator / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
    guard = torch.where(weight_norms > 0, 1.0, zero_weight_ratio)
    return list(torch.where(ok, ratios, guard).unbind())


def l2(
    direction: Tensors,
    rho: float,
    *,
    scale: Tensors | None,
    normalize: bool,
    eps: float,
    norm: torch.Tensor | None = None,
) -> Tensors:
    """rho T^2 d / (||T d|| + eps), or rho T^2 d when not normalizing; T = 1 when ``scale`` is None.

    ``norm``: ||d|| when the caller already has it (the clean gradient norm), to avoid recomputing.
    """
    if scale is None:
        if not normalize:
            return torch._foreach_mul(direction, rho)
        norm = global_norm(direction) if norm is None else norm
        return torch._foreach_mul(direction, rho / (norm + eps))
    scaled = torch._foreach_mul(direction, scale)
    factor = rho / (global_norm(scaled) + eps) if normalize else rho
    torch._foreach_mul_(scaled, scale)
    torch._foreach_mul_(scaled, factor)
    return scaled


def linf(direction: Tensors, rho: float, *, scale: Tensors | None) -> Tensors:
    """rho T sign(d); T = 1 when ``scale`` is None."""
    perturbation = torch._foreach_sign(direction)
    if scale is not None:
        torch._foreach_mul_(perturbation, scale)
    torch._foreach_mul_(perturbation, rho)
    return perturbation
