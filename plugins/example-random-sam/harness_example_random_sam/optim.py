"""Noisy SAM: perturb along d = g + noise * ||g|| * z / ||z||, z ~ N(0, I), scaled to length rho."""

import torch

from harness import SharpnessAwareOptimizer, component_seed


class NoisySAM(SharpnessAwareOptimizer):
    def __init__(self, params, *, base_optimizer, scheduler, noise=1.0, seed=None):
        super().__init__(params, base_optimizer=base_optimizer, scheduler=scheduler, noise=noise, seed=seed)
        # private and saved (resumes draw the same z); seed None: each run seed draws its own z
        self.generator = torch.Generator().manual_seed(component_seed(seed, "example-random-sam"))

    def perturbation(self, params, grads, rho, grad_norm):
        z = [torch.randn(g.shape, generator=self.generator).to(g) for g in grads]
        scale = self.hparams["noise"] * grad_norm / (self.global_norm(z) + 1e-12)
        direction = [g + scale * noise for g, noise in zip(grads, z, strict=True)]
        length = self.global_norm(direction) + 1e-12
        return [rho * d / length for d in direction]

    def variant_state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_variant_state_dict(self, state):
        self.generator.set_state(state["generator"])
