"""Tuning studies (``harness tune``): ``harness.tune.driver`` runs them with Optuna through a suite's executor."""
