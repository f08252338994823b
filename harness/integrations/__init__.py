"""Adapters that let other training frameworks step a registered variant as the harness does.

- ``harness.integrations.lightning``: ``SharpnessAwareModule``, a LightningModule base class (extra
  ``sam-harness[lightning]``);
- ``harness.integrations.huggingface``: ``SharpnessAwareTrainer``, a Hugging Face ``Trainer`` (extra
  ``sam-harness[hf]``).

Each builds the step's closure from the framework's own training step (every pass on the same batch, the
same random draws, BatchNorm statistics updated by the first pass only, as ``harness.BatchClosure``) and
hands it to the optimizer ``harness.create_optimizer`` made. Importing this package imports neither framework.
"""
