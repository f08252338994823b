"""A validated suite's grid: the runs its axes expand to, the ``--smoke`` version, and model x dataset checks.

``expand`` crosses methods x models x datasets x noise rates x batch sizes x seeds into runs (``RunSpec``,
refusing more than ``MAX_RUNS`` before it builds any); under ``--smoke`` it first shrinks the axes
(``SMOKE_BATCH``) and pairs the components (``_smoke_grid``) instead of crossing them.
``check_combinations`` asks each model whether it can take each dataset's input, before anything trains.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.contract.run_spec import RUN_DEFAULTS, RunSpec
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.suite.checks import Checker

MAX_RUNS = 100_000  # runs in one suite: 20,000 validate in about 7 s; the shipped suites have at most 225
#: What ``--smoke`` does to a suite: one epoch, the first seed, the highest noise rate, batches of at most
#: SMOKE_BATCH, at most SMOKE_EXAMPLES training and test examples where the dataset can subsample, and
#: every method, model and dataset once rather than their product (``_smoke_grid``). A wiring check on a
#: CPU in about a minute, even for a suite of WRN-28-10s.
SMOKE_BATCH = 32
SMOKE_EXAMPLES = 64


def expand(
    path: str,
    registry: Registry,
    name: str,
    settings: Mapping[str, Any],
    axes: Mapping[str, Sequence[Any]],
    *,
    smoke: bool,
) -> tuple[str, tuple[RunSpec, ...]]:
    """The suite's name (``-smoke`` suffixed under ``smoke``) and the runs its ``axes`` expand to.

    axes: ``methods``, ``models``, ``datasets``, ``noise_rates``, ``batch_sizes``, ``seeds``, in that order.
    """
    count = math.prod(len(values) for values in axes.values())
    if count > MAX_RUNS and not smoke:  # before expanding: 20 million runs took gigabytes before any error
        product = " x ".join(f"{len(values)} {key}" for key, values in axes.items())
        raise SuiteError(
            f"{path}: the grid expands to {count:,} runs ({product}); expected at most {MAX_RUNS:,} runs "
            "in one suite: split it into several suites"
        )
    methods, models, datasets = axes["methods"], axes["models"], axes["datasets"]
    seeds, noise_rates, batch_sizes = axes["seeds"], axes["noise_rates"], axes["batch_sizes"]
    combinations = itertools.product(methods, models, datasets)
    if smoke:
        name, settings, seeds, noise_rates, batch_sizes, datasets = _smoke(
            registry, name, settings, seeds, noise_rates, batch_sizes, datasets
        )
        combinations = _smoke_grid(methods, models, datasets)
    grid = (
        (method, model, dataset, noise_rate, batch_size, seed)
        for method, model, dataset in combinations
        for noise_rate, batch_size, seed in itertools.product(noise_rates, batch_sizes, seeds)
    )
    return name, tuple(_run(name, settings, *run_axes) for run_axes in grid)


def _smoke(registry, name, settings, seeds, noise_rates, batch_sizes, datasets):
    """The ``--smoke`` version of a suite's axes (see ``SMOKE_BATCH``)."""
    settings = {**settings, "epochs": 1}
    limited = []
    for dataset, params in datasets:
        defaults = registry.get("dataset", dataset).defaults
        params = dict(params)
        for key in ("limit_train", "limit_test"):
            if key in defaults:
                params[key] = min(params.get(key) or SMOKE_EXAMPLES, SMOKE_EXAMPLES)
        limited.append((dataset, params))
    nproc = settings["nproc"]  # a smoke batch still splits evenly over the ranks
    batches = sorted({max(nproc, min(b, SMOKE_BATCH) // nproc * nproc) for b in batch_sizes})
    return f"{name}-smoke", settings, seeds[:1], [max(noise_rates)], batches, limited


def _smoke_grid(methods: list, models: list, datasets: list) -> list[tuple[Any, Any, Any]]:
    """Every method on the first model and dataset, then each other model and dataset with the first method.

    Each component is built and stepped at least once (what a wiring check needs) in
    ``len(methods) + len(models) + len(datasets) - 2`` combinations instead of their product.
    """
    combinations = [(method, models[0], datasets[0]) for method in methods]
    combinations += [(methods[0], model, datasets[0]) for model in models[1:]]
    combinations += [(methods[0], models[0], dataset) for dataset in datasets[1:]]
    return combinations


def check_combinations(
    checker: Checker, registry: Registry, models: list[tuple[str, dict]], datasets: list[tuple[str, dict]]
) -> None:
    """Ask each model whether it can take each dataset's input, before anything trains."""
    for j, (dataset, dataset_params) in enumerate(datasets):
        describe = registry.get("dataset", dataset).load_describe()
        if describe is None:
            continue
        try:
            input_shape, num_classes = describe(**dataset_params)
        except (ValueError, TypeError) as error:
            raise checker.fail(f"datasets[{j}]", dataset, f"valid dataset parameters: {error}") from None
        for i, (model, model_params) in enumerate(models):
            check = registry.get("model", model).load_check()
            if check is None:
                continue
            try:
                check(num_classes=num_classes, input_shape=tuple(input_shape), **model_params)
            except (ValueError, TypeError) as error:
                raise SuiteError(
                    f"{checker.source}: models[{i}] x datasets[{j}]: model {model!r} cannot train on dataset "
                    f"{dataset!r} (input shape {tuple(input_shape)}, {num_classes} classes): {error}"
                ) from None


def _run(
    suite: str,
    settings: Mapping[str, Any],
    method: Mapping[str, Any],
    model: tuple[str, dict[str, Any]],
    dataset: tuple[str, dict[str, Any]],
    noise_rate: float,
    batch_size: int,
    seed: int,
) -> RunSpec:
    dataset_name, dataset_params = dataset
    if "noise_rate" in dataset_params:
        dataset_params = {**dataset_params, "noise_rate": noise_rate}
    run_settings = {key: settings[key] for key in RUN_DEFAULTS}
    run_settings.update(batch_size=batch_size, base_optimizer=method["base_optimizer"])
    return RunSpec(
        suite=suite,
        method=method["name"],
        preset=method["preset"],
        optimizer=method["optimizer"],
        optimizer_params=method["optimizer_params"],
        scheduler=method["scheduler"],
        scheduler_params=method["scheduler_params"],
        model=model[0],
        model_params=model[1],
        dataset=dataset_name,
        dataset_params=dataset_params,
        noise_rate=noise_rate,
        seed=seed,
        metrics=settings["metrics"],
        extension=method["extension"],
        **run_settings,
    )
