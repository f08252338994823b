"""One run, in one process: build its components, train, evaluate, fill its result row.

``runner`` (build and the training loop), ``closure`` (the forward/backward the optimizer calls),
``precision`` (bf16/fp16, channels-last), ``timing`` (train-only time), ``evaluation`` and
``metrics`` (accuracies and metric plugins), ``distributed`` (DDP ranks), ``divergence``
(a non-finite loss, noticed without a per-step host sync).
"""
