"""The plugin contract of sam-harness: every hook a plugin may implement.

This module is the single source of truth for plugin authors (in the manner of pytest's
``hookspec.py``). Each hook's docstring follows one template: what it is for, its parameters, how
results are combined, and an example. The README's "Hook reference" lists the same hooks, and a
test fails when a hook here is missing from the README or has no test.

Registration hooks (``register_*``) take no arguments and return a list of frozen spec records
(``harness.contract.specs``). The registry calls every implementation, tags each spec with the distribution
that provided it, and refuses two providers of one name. Keep the module that defines these hooks
cheap to import: point ``factory`` at a lazy ``"pkg.mod:attr"`` string instead of importing torch.

Lifecycle hooks (``run_started``, ``step_finished``, ``run_finished``) are called by the runner in
the process that trains the run. They observe; their return values are ignored.

Plugins are found through the ``sam_harness`` entry-point group::

    [project.entry-points.sam_harness]
    my_variant = "my_variant.plugin"

Since: 0.1.0 for every hook below unless its docstring says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from harness.contract.optim import StepInfo
    from harness.contract.run_spec import RunSpec
    from harness.contract.specs import (
        DatasetSpec,
        ExecutorSpec,
        MetricSpec,
        ModelSpec,
        OptimizerSpec,
        PresetSpec,
        SchedulerSpec,
    )

PROJECT_NAME = "sam_harness"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_optimizers() -> Sequence[OptimizerSpec]:
    """Register sharpness-aware optimizers.

    Return a list of ``OptimizerSpec``. The factory is called as

        ``factory(params, *, base_optimizer, scheduler, **hparams)``

    and returns a ``torch.optim.Optimizer`` that follows the step protocol of ``harness.contract.optim``
    (usually a subclass of ``harness.SharpnessAwareOptimizer``). ``params``: the trained parameters as
    ``(name, tensor)`` pairs (``model.named_parameters()`` less the frozen ones); ``base_optimizer``:
    the timm optimizer over the same tensors; ``scheduler``: the run's ``PerturbationScheduler``;
    ``hparams``: the spec's ``defaults`` updated by the suite. ``defaults`` lists every hyperparameter.
    An optimizer that draws random numbers takes ``seed`` (default None) and seeds a private generator
    with ``harness.component_seed(seed, name)``: the run's components are built under the run seed, so
    each run seed gets its own stream and a suite's explicit ``seed`` pins it. A suite may set an
    optimizer's or scheduler's ``seed`` to null or an integer >= 0 whatever its default, so the factory
    takes both (``component_seed`` does).

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_optimizers():
            return [OptimizerSpec("my-sam", "my_variant.optim:MySAM", defaults={"rho": 0.05},
                                  description="SAM with a twist", paper="my paper, Alg. 1")]
    """


@hookspec
def register_schedulers() -> Sequence[SchedulerSpec]:
    """Register perturbation schedulers (when to perturb, and with which rho).

    Return a list of ``SchedulerSpec``. The factory is called as

        ``factory(**params)``

    and returns a ``harness.PerturbationScheduler``: ``decide(ctx) -> (perturb, rho)`` plus
    ``state_dict()`` / ``load_state_dict()``, and what it will do, stated before it runs from its
    parameters alone: ``warmup_steps(total_steps) -> int`` (the steps before its steady state; default 0)
    and ``expected_perturbed_fraction(total_steps) -> float | None`` (the share of the steps after those
    that perturb; default None, when only a measurement can tell). ``harness bench`` leaves the warm-up
    untimed and compares a method's cost with ERM's against 1 + that share; the contract kit checks the
    share against ``decide``.
    A random scheduler seeds its private stream with ``harness.component_seed(seed, name)``, as an
    optimizer does (``register_optimizers``).

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_schedulers():
            return [SchedulerSpec("every-other", "my_variant.sched:EveryOther", defaults={"rho": 0.05})]
    """


@hookspec
def register_models() -> Sequence[ModelSpec]:
    """Register models.

    Return a list of ``ModelSpec``. The factory is called as

        ``factory(*, num_classes, input_shape, **params)``

    and returns a ``torch.nn.Module`` mapping a batch of inputs of shape ``(B, *input_shape)`` to
    logits of shape ``(B, num_classes)``.

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_models():
            return [ModelSpec("tiny-mlp", "my_models:tiny_mlp", defaults={"hidden": 32})]
    """


@hookspec
def register_datasets() -> Sequence[DatasetSpec]:
    """Register datasets.

    Return a list of ``DatasetSpec``. The factory is called as

        ``factory(*, device, **params)``

    and returns a ``harness.contract.data.ClassificationData`` whose tensors already live on ``device``.
    A dataset that supports label noise lists ``noise_rate`` in its defaults.

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_datasets():
            return [DatasetSpec("blobs", "my_data:load_blobs", defaults={"n": 1000})]
    """


@hookspec
def register_metrics() -> Sequence[MetricSpec]:
    """Register metrics computed on a trained model (sharpness, gradient statistics, ...).

    Return a list of ``MetricSpec``. The factory is called as

        ``factory(**params)``

    and returns a callable, called once per evaluation point as

        ``metric(model, batches, loss_fn)``

    ``model``: the trained model, in eval mode (the harness restores its weights, buffers and mode
    afterwards); ``batches``: a list of ``(inputs, targets)`` tensor pairs from the training set, the
    same examples for every method and evaluation point of a seed (``metric_batches`` batches of
    ``metric_batch_size``); ``loss_fn(logits, targets)``: the mean training loss. It returns a mapping
    of column name to number (or ``None``); every key must start with the metric's name
    (``weight-norm`` -> ``weight-norm``, ``weight-norm_layers``), else the run fails with a
    ``ProtocolError``. See ``harness.run.metrics``.

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_metrics():
            return [MetricSpec("weight-norm", "my_metrics:weight_norm")]
    """


@hookspec
def register_executors() -> Sequence[ExecutorSpec]:
    """Register executors that run a suite's runs (a process pool, Slurm, Ray, ...).

    Return a list of ``ExecutorSpec``. The factory is called as

        ``factory(**params)``

    and returns an executor (``harness.execution.Executor``), whose one method the driver calls as

        ``executor.run(runs, *, results_dir, events)``

    ``runs``: the ``RunSpec`` records still to train; ``results_dir``: the results root (a string);
    ``events``: ``harness.execution.RunEvents`` progress callbacks (``started``, ``epoch``,
    ``finished``, ``skipped``), to call from the driver process where the executor can. Each run trains
    through ``harness.execution.run_worker(harness.execution.run_payload(run), results_dir, since=...)``
    in the process that trains it, which takes the run's lease and writes the run's files and log;
    ``since`` is when the driver chose its runs. The driver makes a
    ``harness.execution.RowWatch(results_dir, run)`` when it hands the run out and calls its
    ``settle(events, error, outcome)`` when the worker is done: it reports the run's fresh row to
    ``events.finished``, records a worker that died without a row as ``failed`` with ``error``
    (``harness.execution.record_crash``), and reports a ``harness.execution.Skipped`` outcome (another
    live process holds the run's lease, or finished it after ``since``) to
    ``events.skipped(run, reason)``, with nothing written. It returns once every run is done, skipped or
    recorded. Everything an executor needs is in ``harness.execution.__all__``.

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_executors():
            return [ExecutorSpec("my-cluster", "my_cluster:ClusterExecutor", defaults={"queue": "gpu"})]
    """


@hookspec
def register_presets() -> Sequence[PresetSpec]:
    """Register named methods from papers: an optimizer and a scheduler with the paper's settings.

    Return a list of ``PresetSpec``. Suites refer to presets by name (``methods: [sam, my-sam]``).

    Results of all implementations are collected; a name registered twice is an error.

    Example::

        @hookimpl
        def register_presets():
            return [PresetSpec("my-sam", optimizer="my-sam", scheduler="constant",
                               optimizer_params={"rho": 0.1}, paper="my paper, Table 2")]
    """


@hookspec
def register_claims() -> Sequence[str]:
    """Register claims files: a paper's headline results for a plugin's own variants, judged in every report.

    Return a list of paths (strings or ``pathlib.Path``) of YAML files in the format of the shipped
    ``suites/reference/claims.yaml`` (``harness.suite.claims``): each claim names its paper and table, the
    presets compared, the metric, the direction and bound of the effect, and the conditions it holds under.
    Their ``paper`` and ``table`` need not be in the shipped ``paper_results.csv``: a claim from a paper the
    project has no numbers of cites its section. Paths of every implementation are collected; a claim id
    that is already claimed (by the shipped file or another plugin) is an error naming both files.

    Since: 0.2.0.

    Example::

        @hookimpl
        def register_claims():
            return [str(Path(__file__).with_name("claims.yaml"))]
    """


@hookspec
def run_started(run: RunSpec) -> None:
    """Called in the training process before a run trains (after its data and model are built).

    run: the fully resolved run (``run.run_id``, ``run.config()``).

    Every implementation is called; return values are ignored. Use it to open a logger.

    Example::

        @hookimpl
        def run_started(run):
            print("starting", run.run_id)
    """


@hookspec
def step_finished(run: RunSpec, step: int, info: StepInfo) -> None:
    """Called after every optimizer step. Keep it cheap: it runs on the hot path.

    run: the run being trained. step: the number of the step just taken, counted from 0.
    info: the optimizer's ``StepInfo`` (``perturbed``, ``rho``, ``extras``); tensors in
    ``info.extras`` live on the device and reading them forces a host synchronization.

    Every implementation is called; return values are ignored. The runner skips the call entirely
    when no plugin implements this hook.

    Example::

        @hookimpl
        def step_finished(run, step, info):
            if info.perturbed:
                counts[run.run_id] += 1
    """


@hookspec
def run_finished(run: RunSpec, result: Mapping[str, Any]) -> None:
    """Called after a run ends, whatever its status, before its result row is written.

    run: the run. result: the result row (column name to value), including ``status`` and
    ``error``.

    Every implementation is called; return values are ignored. Use it to upload or notify.

    Example::

        @hookimpl
        def run_finished(run, result):
            print(run.run_id, result["status"], result["test_acc"])
    """
