"""Executors of sam-harness: how a suite's runs are trained (shared/DESIGN.md section 8).

- ``local`` (default): a fresh worker process per run, ``workers`` at a time, GPUs and CPU threads
  split between the workers (``harness_executors.local``);
- ``submitit``: Slurm job arrays, or submitit's local executor where there is no Slurm
  (``harness_executors.slurm``; ``pip install -e ".[slurm]"``);
- ``ray``: Ray core tasks on a running cluster or a local one (``harness_executors.ray_tasks``;
  ``pip install -e ".[ray]"``).

Every worker trains its run through ``harness.execution.run_worker``, which writes the run's Parquet
files and log itself; the driver only reads them back (``harness.execution.RowWatch``; the logs for
workers elsewhere, ``log_progress``), so resume works the same everywhere. They use only the core's
public API (``harness``, ``harness.errors``, the executor API ``harness.execution``), as a third-party
executor would (``tests/test_layering.py``).
"""
