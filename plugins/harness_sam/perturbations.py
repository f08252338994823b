"""How a perturbation e is computed from the gradient (or a random direction) and the weights.

One function per family, each on lists of tensors with ``torch._foreach_*`` kernels:

- ``l2``: e = rho T^2 d / ||T d|| (SAM eq. 2 with p=2, 003_dc502e6d0d8ca36d.txt footnote 2; with
  T = |w| + eta elementwise this is ASAM, Kwon et al. 2021, as cited in 004_c79f6670b818170d.txt
  Sec. 5 "ASAM"); ``normalize=False`` gives the unnormalized e = rho T^2 d of AE-SAM's Algorithm 1
  (001_543051aac35e9f16.txt, line 7; seed_looksam_aesam.md B.3 [DISCREPANCY]).
- ``linf``: e = rho T sign(d) (SAM App. C.5 p=inf; LookSAM Alg. 1 prints this form).

Both are the exact maximisers of the first-order problem max <d, e> subject to ||T^-1 e||_p <= rho
(substitute u = T^-1 e: the plain l_p ball in u, direction T d).

``layerwise`` scaling (LayerSAM, 000_821cd26b06e61c4d.txt Sec. 3.3 eq. 6-7, Alg. 2-3;
seed_looksam_aesam.md A.3, A.9 item 1): Lambda = diag(xi_i), xi_i = ||w_i|| / ||g_i|| per tensor,
and eq. 6 perturbs within ||Lambda e||_p <= rho. ``trust_ratios`` gives xi_i (or 1 / xi_i); where
||w_i|| = 0 the ratio is 0 (printed) or infinite (inverse), replaced by ``zero_weight_ratio`` (default
1, LAMB's guard, seed A.3 "Trust-ratio guards"); where only ||g_i|| = 0 it is 1 (e_i is 0 anyway
along the gradient). The caller applies one of two readings (``SAM``'s ``trust_ratio``):

- printed: e as eq. 7 and Alg. 2-3 print it, the family's e times xi_i per tensor: rho xi_i sign(g_i)
  (Alg. 2-3) and rho xi_i g_i / ||g|| (eq. 7 with p = q = 2). Neither maximises <g, e> on eq. 6's
  constraint (the linf one does on ||Lambda^-1 e||_inf <= rho).
- inverse: the exact maximiser of eq. 6's first-order problem. Lambda^-1 joins the scale, S = T Lambda^-1,
  so ``l2`` gives e = rho S^2 d / ||S d||, i.e. rho Lambda^-2 g / ||Lambda^-1 g|| (maximum
  rho ||Lambda^-1 g||), and ``linf`` gives rho Lambda^-1 sign(g); unnormalized, ``l2`` gives rho S^2 d.
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

    Normalized, the maximiser of <d, e> subject to ||T^-1 e||_2 <= rho (the module docstring).

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
    """rho T sign(d), the maximiser of <d, e> subject to ||T^-1 e||_inf <= rho; T = 1 when ``scale`` is None."""
    perturbation = torch._foreach_sign(direction)
    if scale is not None:
        torch._foreach_mul_(perturbation, scale)
    torch._foreach_mul_(perturbation, rho)
    return perturbation
