"""``harness bench``: what one optimizer step of each method costs, against ERM and against others.

For one model and batch (random tensors of the model's input shape, held on the device), every
candidate starts from the same initial model and steps on the same batch:

- the presets (``erm``, ``sam``, ``looksam``, ``ae-sam``, ...), each a run that ``harness.run.build.build``
  builds and ``harness.run.runner.train_step``, the training loop's own step, steps (``setting``);
- references: kozistr's pytorch-optimizer ``SAM`` and ``GSAM`` (an optional dependency; skipped when it
  is not installed) and two bare hand-written PyTorch loops (``references``).

Every candidate is timed in interleaved rounds of step blocks after its warm-up (``measure``); the
reported values are medians over rounds, and ratios (to ERM, to SAM, to a counterpart) the medians of
per-round paired ratios (``ratios``). Each row also holds the theoretical ratio to ERM, 1 + the share of
steps with a second pass as the scheduler states it (``expected_perturbed_fraction``: 2.0 for SAM, GSAM
and nuSAM, 1 + 1/k for LookSAM-k and SAM-k) or as measured where it cannot (AE-SAM, SS-SAM), the
measured %SAM, gradient evaluations per step, throughput, the optimizer's held bytes and those beyond
its base optimizer's state, and on CUDA the peak device memory of one step (``rows``). ``run_bench``
writes them as Parquet and Markdown (``report``).

Modules, in the order a bench runs: ``config`` (what to measure), ``setting`` (one setting's
candidates), ``candidate`` and ``references`` (what is stepped), ``measure`` (how it is timed),
``ratios`` and ``rows`` (what is recorded), ``report`` (the files).
"""

from harness.bench.candidate import Candidate, held_bytes
from harness.bench.config import (
    COMMON_BASE,
    COUNTERPARTS,
    DEFAULT_METHODS,
    LR_SCHEDULE,
    REFERENCES,
    SAM_RHO,
    BenchConfig,
)
from harness.bench.measure import Rounds, peak_memory, time_rounds
from harness.bench.ratios import excess_over_theory, paired_ratio, quartiles
from harness.bench.references import kozistr_sam
from harness.bench.report import BenchResult, markdown, run_bench, settings
from harness.bench.rows import BENCH_SCHEMA, measure_setting
from harness.bench.setting import Bench

__all__ = [
    "BENCH_SCHEMA",
    "COMMON_BASE",
    "COUNTERPARTS",
    "DEFAULT_METHODS",
    "LR_SCHEDULE",
    "REFERENCES",
    "SAM_RHO",
    "Bench",
    "BenchConfig",
    "BenchResult",
    "Candidate",
    "Rounds",
    "excess_over_theory",
    "held_bytes",
    "kozistr_sam",
    "markdown",
    "measure_setting",
    "paired_ratio",
    "peak_memory",
    "quartiles",
    "run_bench",
    "settings",
    "time_rounds",
]
