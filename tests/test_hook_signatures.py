"""The calls the contract documents are the calls the harness makes (harness/contract/hookspecs.py).

Each ``register_*`` hook's docstring states how its factory is called (a line ``factory(...)``),
and the metric and executor hooks also state how the object the factory returns is called
(``metric(...)``, ``executor.run(...)``). This test builds a plugin whose factories and returned
objects have exactly the documented signatures, nothing more (no catch-all ``*args``/``**kwargs``
beyond what the docstring shows), and trains a run through ``harness run`` with every one of them:
a call the docstring does not describe fails with a TypeError, and a documented call the harness
never makes leaves its spy uncalled.
"""

from __future__ import annotations

import inspect
import re
import sys

import pytest

from harness.cli import main
from harness.contract import hookspecs
from harness.results.read import read_runs

from .conftest import write_suite

CALLED_AS = re.compile(r"^\s+``(factory|metric|executor\.run)\((.*)\)``\s*$", re.MULTILINE)
KINDS = ("optimizer", "scheduler", "model", "dataset", "metric", "executor")


def documented_calls(kind: str) -> dict[str, str]:
    """``{"factory": "params, *, base_optimizer, ...", "metric": ...}`` from ``register_<kind>s``' docstring."""
    doc = inspect.getdoc(getattr(hookspecs, f"register_{kind}s")) or ""
    return {callee: arguments for callee, arguments in CALLED_AS.findall("\n" + _indent(doc))}


def _indent(doc: str) -> str:
    return "\n".join(" " + line for line in doc.splitlines())


@pytest.mark.parametrize("kind", KINDS)
def test_every_factory_hook_documents_its_call(kind):
    calls = documented_calls(kind)
    assert "factory" in calls, f"register_{kind}s does not state how its factory is called (a ``factory(...)`` line)"
    if kind == "metric":
        assert "metric" in calls, "register_metrics does not state how the returned metric is called"
    if kind == "executor":
        assert "executor.run" in calls, "register_executors does not state how executor.run is called"


def _spy_plugin() -> str:
    """Source of a plugin whose factories and products take exactly the documented arguments."""
    calls = {kind: documented_calls(kind) for kind in KINDS}
    return f'''
import inspect
from harness import (ExecutorSpec, MetricSpec, ModelSpec, OptimizerSpec, SchedulerSpec, DatasetSpec,
                     hookimpl)
from harness.execution import run_payload, run_worker
from harness_sam.erm import ERM
from harness_schedules.basic import Never
from harness_vision.digits import load_digits
from harness_vision.small_models import mlp

CALLED = set()


def _forward(function, values, real):
    """Call ``real`` with what ``function`` (a spy with the documented signature) received."""
    args, kwargs = [], {{}}
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            kwargs.update(values[parameter.name])
        elif parameter.kind is parameter.KEYWORD_ONLY:
            kwargs[parameter.name] = values[parameter.name]
        else:
            args.append(values[parameter.name])
    return real(*args, **kwargs)


def optimizer_factory({calls["optimizer"]["factory"]}):
    CALLED.add("optimizer")
    assert all(isinstance(name, str) for name, _ in params), "params are (name, tensor) pairs"
    return _forward(optimizer_factory, locals(), ERM)


def scheduler_factory({calls["scheduler"]["factory"]}):
    CALLED.add("scheduler")
    return _forward(scheduler_factory, locals(), Never)


def model_factory({calls["model"]["factory"]}):
    CALLED.add("model")
    return _forward(model_factory, locals(), mlp)


def dataset_factory({calls["dataset"]["factory"]}):
    CALLED.add("dataset")
    return _forward(dataset_factory, locals(), load_digits)


def metric_factory({calls["metric"]["factory"]}):
    def metric({calls["metric"]["metric"]}):
        CALLED.add("metric")
        assert isinstance(batches, list) and all(len(batch) == 2 for batch in batches)
        assert not model.training
        inputs, targets = batches[0]
        return {{"spy_metric": loss_fn(model(inputs), targets).item()}}

    CALLED.add("metric factory")
    return metric


class SpyExecutor:
    def run({calls["executor"]["executor.run"].replace("runs", "self, runs", 1)}):
        CALLED.add("executor")
        for run in runs:
            events.started(run)
            status = run_worker(run_payload(run), results_dir)
            events.finished(run, {{"status": status}})


def executor_factory({calls["executor"]["factory"]}):
    CALLED.add("executor factory")
    return SpyExecutor()


@hookimpl
def register_optimizers():
    return [OptimizerSpec("spy-optimizer", optimizer_factory)]


@hookimpl
def register_schedulers():
    return [SchedulerSpec("spy-scheduler", scheduler_factory)]


@hookimpl
def register_models():
    return [ModelSpec("spy-model", model_factory, defaults={{"hidden": 16, "depth": 1, "dropout": 0.0}})]


@hookimpl
def register_datasets():
    return [DatasetSpec("spy-dataset", dataset_factory, defaults={{"limit_train": 256, "limit_test": 128}})]


@hookimpl
def register_metrics():
    return [MetricSpec("spy_metric", metric_factory)]


@hookimpl
def register_executors():
    return [ExecutorSpec("spy-executor", executor_factory)]
'''


def test_the_harness_calls_every_factory_and_product_as_documented(tmp_path, add_entry_points):
    add_entry_points({"spy": _spy_plugin()})
    suite = write_suite(
        tmp_path / "spy.yaml",
        """
        name: spy
        defaults: {epochs: 1, batch_size: 64}
        executor: spy-executor
        methods: [{name: spy, optimizer: {name: spy-optimizer}, scheduler: {name: spy-scheduler}}]
        models: [spy-model]
        datasets: [spy-dataset]
        metrics: [spy_metric]
        seeds: [0]
    """,
    )
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "out")]) == 0
    row = read_runs(tmp_path / "out" / "spy").iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["spy_metric"] > 0
    spy = sys.modules["spy_plugin"]
    every = {"optimizer", "scheduler", "model", "dataset", "metric factory", "metric", "executor factory", "executor"}
    assert spy.CALLED == every
