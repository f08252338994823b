"""The plugin contract: what a plugin implements and what the core promises it.

The hook specifications (``hookspecs``), the frozen spec records plugins return (``specs``), the
optimizer step protocol and its base classes (``optim``), the dataset contract (``data``) and the
run record every layer above shares (``run_spec``). This layer imports nothing of the core but
``harness.errors``: everything else builds on it. Plugin authors import these names from ``harness``.
"""
