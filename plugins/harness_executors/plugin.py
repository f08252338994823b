"""Registration of the executors of ``harness_executors`` (cheap to import: no torch, no submitit, no ray)."""

from __future__ import annotations

from harness import ExecutorSpec, hookimpl


@hookimpl
def register_executors() -> list[ExecutorSpec]:
    return [
        ExecutorSpec(
            name="local",
            factory="harness_executors.local:LocalExecutor",
            defaults={"workers": 1, "threads_per_worker": 0, "gpus": "auto", "start_method": "auto"},
            choices={"start_method": ("auto", "spawn", "forkserver")},
            description="A fresh worker process per run, `workers` at a time; one GPU per worker, CPU threads split",
        ),
        ExecutorSpec(
            name="submitit",
            factory="harness_executors.slurm:SubmititExecutor",
            defaults={
                "folder": "",
                "cluster": "",
                "partition": "",
                "gpus_per_node": 0,
                "cpus_per_task": 2,
                "timeout_min": 60,
                "array_parallelism": 8,
                "slurm_additional_parameters": {},
            },
            choices={"cluster": ("", "slurm", "local")},
            description="Slurm job arrays through submitit (its local executor where there is no Slurm)",
        ),
        ExecutorSpec(
            name="ray",
            factory="harness_executors.ray_tasks:RayExecutor",
            defaults={"address": "", "num_cpus": 1, "num_gpus": 0.0, "max_concurrent": 0, "local_num_cpus": 0},
            description="Ray core tasks (num_cpus / num_gpus per run) on a running cluster or a local one",
        ),
    ]
