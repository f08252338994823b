"""Built-in perturbation schedulers: when a step perturbs, and with which rho."""
