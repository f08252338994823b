"""Sharpness metrics computed on a trained model: Hessian spectrum and trace, SAM sharpness, surrogate gap,
gradient statistics.

Registered through the ``sam_harness`` entry-point group like any third-party plugin; the entry module
``harness_sharpness.plugin`` imports no torch. Every metric follows ``harness.run.metrics``: built as
``factory(**params)``, called as ``metric(model, batches, loss_fn)`` on the model in eval mode, and returns
columns that start with its registry name, each value beside its budget (shared/DESIGN.md section 7).
"""
