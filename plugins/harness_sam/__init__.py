"""Built-in sharpness-aware optimizers (ERM, SAM, ...) and the paper presets that use them.

Registered through the ``sam_harness`` entry-point group like any third-party plugin; the entry
module ``harness_sam.plugin`` imports no torch.
"""
