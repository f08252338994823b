"""YAML suite -> validated ``Suite`` -> list of ``RunSpec`` (grid expansion, presets, overrides).

A suite is data (shared/DESIGN.md section 5)::

    name: quickstart
    description: digits, small-cnn, erm vs sam
    defaults:                      # run settings shared by every run (all optional)
      epochs: 15
      batch_size: 64
      base_optimizer: {name: momentum, lr: 0.05, momentum: 0.9, weight_decay: 5.0e-4}
      lr_schedule: {name: cosine, warmup_epochs: 1}
    methods: [erm, sam]            # presets, or mappings (see below)
    models: [small-cnn]            # names, or {name: mlp, hidden: 128}
    datasets: [digits]             # names, or {name: digits, test_fraction: 0.2}
    seeds: [0, 1, 2]
    noise_rates: [0.0]             # needs a dataset that lists noise_rate in its defaults

A method is a preset name, a preset with overrides
(``{preset: sam, name: sam-rho0.1, scheduler: {rho: 0.1}}``) or inline
(``{name: my-sam, optimizer: {name: sam}, scheduler: {name: constant, rho: 0.1}}``).

The schema is strict: an unknown key is an error with a "did you mean"; values are type- and
range-checked before anything trains. An entry repeated on a grid axis (a seed, a model with the same
parameters, a method name) is an error, since it would give two runs the same run id; label noise is
set only through ``noise_rates``, never in a dataset entry. Every ``SuiteError`` names the file, the
key path, the bad value and what was expected. ``--set key=value`` overrides are applied to the document before
validation (``epochs=2`` is short for ``defaults.epochs=2``). The suite name and every method name become parts
of file paths, so they follow ``harness.paths.NAME_RULE``; the file and the ``--set`` values are read by
``harness.suite_yaml`` (no duplicate keys, bounded size, nesting and alias expansion).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import suite_yaml
from harness.errors import SHORT_REPR_CHARS, SuiteError, UnknownNameError, did_you_mean, short_repr
from harness.lazy_check import check_path, declared_timm_optimizers
from harness.paths import NAME_RULE, is_safe_name
from harness.plugins import Registry
from harness.run_spec import CHOICES, RUN_DEFAULTS, RunSpec
from harness.specs import Spec

TOP_LEVEL_KEYS = (
    "name",
    "description",
    "defaults",
    "methods",
    "models",
    "datasets",
    "seeds",
    "noise_rates",
    "batch_sizes",
    "metrics",
    "reference",
    "executor",
)
DEFAULT_EXECUTOR = "local"
#: What ``--smoke`` does to a suite: one epoch, the first seed, the highest noise rate, batches of at most
#: SMOKE_BATCH, at most SMOKE_EXAMPLES training and test examples where the dataset can subsample, and
#: every method, model and dataset once rather than their product (``_smoke_grid``). A wiring check on a
#: CPU in about a minute, even for a suite of WRN-28-10s.
SMOKE_BATCH = 32
SMOKE_EXAMPLES = 64
BASE_OPTIMIZER_KEYS = ("name", "lr", "weight_decay", "momentum", "betas", "eps", "filter_bias_and_bn")
LR_SCHEDULES = ("cosine", "constant", "step", "multistep", "tanh", "poly")
LR_SCHEDULE_KEYS = (
    "name",
    "warmup_epochs",
    "warmup_lr",
    "min_lr",
    "decay_rate",
    "decay_epochs",
    "decay_milestones",
)
METHOD_KEYS = ("name", "preset", "optimizer", "scheduler", "base_optimizer")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")
MAX_RUNS = 100_000  # runs in one suite: 20,000 validate in about 7 s; the shipped suites have at most 225
MAX_SEED = 2**32 - 1  # numpy.random.seed refuses larger seeds


@dataclass(frozen=True)
class Suite:
    """A validated suite: its name, description, source file and expanded runs."""

    name: str
    description: str
    path: str
    runs: tuple[RunSpec, ...] = field(default_factory=tuple)
    executor: tuple[str, Mapping[str, Any]] = (DEFAULT_EXECUTOR, {})


class _Checker:
    """Validation helpers that format every error with the file and the key path."""

    def __init__(self, path: str, overrides: Sequence[str]) -> None:
        self.source = path + (f" (with --set {' '.join(overrides)})" if overrides else "")

    def fail(self, key: str, value: Any, expected: str) -> SuiteError:
        shown = "missing" if value is _MISSING else short_repr(value)
        return SuiteError(f"{self.source}: {key}: {shown} is invalid; expected {expected}")

    def mapping(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, value, "a mapping (key: value pairs)")
        return dict(value)

    def keys(self, key: str, value: Mapping[str, Any], allowed: Sequence[str], hints: str = "") -> None:
        for name in value:
            if name not in allowed:
                shown = str(name) if len(str(name)) <= SHORT_REPR_CHARS else short_repr(name)  # a 1 MiB key
                where = f"{key}.{shown}" if key else shown
                raise SuiteError(
                    f"{self.source}: {where}: unknown key{did_you_mean(shown, allowed)}; "
                    f"expected one of: {', '.join(allowed)}{hints}"
                )

    def integer(self, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if not ok or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise self.fail(key, value, f"an integer >= {minimum}{upper}")
        return value

    def number(
        self, key: str, value: Any, minimum: float, *, below: float | None = None, strict: bool = False
    ) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > minimum if strict else value >= minimum) and (below is None or value < below)
        if not ok:
            bound = f"> {minimum}" if strict else f">= {minimum}"
            upper = f" and < {below}" if below is not None else ""
            raise self.fail(key, value, f"a number {bound}{upper}")
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value

    def name(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "a non-empty name (string)")
        return value

    def path_name(self, key: str, value: Any, what: str) -> str:
        """A name that becomes part of file paths: ``harness.paths.NAME_RULE``, so none can leave the folder."""
        if not is_safe_name(value):
            raise self.fail(key, value, f"{what} of {NAME_RULE}")
        return value

    def listed(self, key: str, value: Any) -> list[Any]:
        if isinstance(value, (str, int, float, Mapping)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, "a non-empty list")
        return value


_MISSING = object()


def load_suite(path: str | Path, registry: Registry, overrides: Sequence[str] = (), *, smoke: bool = False) -> Suite:
    """Read, override, validate and expand the suite at ``path``. Raises ``SuiteError``.

    smoke: shrink the suite for a quick check (see ``SMOKE_BATCH``); its name gets a ``-smoke`` suffix
    so smoke results never mix with real ones.
    """
    path = str(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(suite_yaml.MAX_BYTES + 1)  # never more: the path may be /dev/zero
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the suite file: {error.strerror or error}") from error
    if len(data) > suite_yaml.MAX_BYTES:
        raise SuiteError(
            f"{path}: more than {suite_yaml.MAX_BYTES:,} bytes; expected a suite of at most "
            f"{suite_yaml.MAX_BYTES:,} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not a UTF-8 text file ({error}); expected a YAML suite") from error
    try:
        document = suite_yaml.load(text)
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: {_yaml_problem(error)}") from error
    checker = _Checker(path, overrides)
    document = checker.mapping("(top level)", document if document is not None else _MISSING)
    document = apply_overrides(document, overrides, path)
    return _validate(document, registry, checker, path, smoke=smoke)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``not valid YAML: line L, column C: problem (context)`` of a YAML error (``refused as YAML`` for a
    ``suite_yaml`` limit), without PyYAML's ``"<unicode string>"`` excerpt."""
    what = "refused as YAML" if isinstance(error, suite_yaml.LimitError) else "not valid YAML"
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if problem is None:
        return f"{what}: {error}"
    context = getattr(error, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{what}: {where}{problem}" + (f" ({context})" if context else "")


def apply_overrides(document: dict[str, Any], overrides: Sequence[str], path: str) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a copy of the document.

    A first key that is not a top-level suite key but is a run setting goes under ``defaults``.
    """
    document = copy.deepcopy(document)
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key.strip():
            raise SuiteError(f"{path}: --set {short_repr(override)}: expected key=value, for example --set epochs=2")
        parts = key.strip().split(".")
        if parts[0] not in TOP_LEVEL_KEYS and parts[0] in RUN_DEFAULTS:
            parts.insert(0, "defaults")
        if parts[0] not in TOP_LEVEL_KEYS:
            raise SuiteError(
                f"{path}: --set {short_repr(override)}: unknown key {short_repr(parts[0])}"
                f"{did_you_mean(parts[0], [*TOP_LEVEL_KEYS, *RUN_DEFAULTS])}; expected a suite key "
                f"({', '.join(TOP_LEVEL_KEYS)}) or a run setting ({', '.join(RUN_DEFAULTS)})"
            )
        try:
            value = suite_yaml.load(raw)
        except yaml.YAMLError as error:
            raise SuiteError(f"{path}: --set {short_repr(override)}: the value is {_yaml_problem(error)}") from error
        target = document
        for depth, part in enumerate(parts[:-1]):
            if target.get(part) is None:
                target[part] = {}
            if not isinstance(target[part], dict):
                where = ".".join(parts[: depth + 1])
                raise SuiteError(
                    f"{path}: --set {short_repr(override)}: {where} is {short_repr(target[part])}, not a mapping, so "
                    f"it has no key {short_repr(parts[depth + 1])}; expected a key inside a mapping, or set {where} as "
                    "a whole "
                    f"(for example --set {where}=[...])"
                )
            target = target[part]
        target[parts[-1]] = value
    return document


def _validate(document: dict[str, Any], registry: Registry, checker: _Checker, path: str, *, smoke: bool) -> Suite:
    checker.keys("", document, TOP_LEVEL_KEYS)
    name = document.get("name", _MISSING)
    checker.path_name("name", name, "a suite name (it names the results folder)")
    description = document.get("description", "")
    if not isinstance(description, str):
        raise checker.fail("description", description, "a string")
    settings = _run_settings(checker, document.get("defaults") or {})
    for key in ("methods", "models", "datasets"):
        if key not in document:
            raise checker.fail(key, _MISSING, f"a non-empty list of {key}")
    methods = [
        _method(checker, registry, f"methods[{i}]", entry, settings["base_optimizer"])
        for i, entry in enumerate(checker.listed("methods", document["methods"]))
    ]
    _unique(checker, "methods", [m["name"] for m in methods], field=".name", what="method name")
    models = [
        _component(checker, registry, "model", f"models[{i}]", entry)
        for i, entry in enumerate(checker.listed("models", document["models"]))
    ]
    datasets = [
        _component(checker, registry, "dataset", f"datasets[{i}]", entry)
        for i, entry in enumerate(checker.listed("datasets", document["datasets"]))
    ]
    _unique(checker, "models", models, what="model (same name and parameters)")
    _unique(checker, "datasets", datasets, what="dataset (same name and parameters)")
    seeds = [
        checker.integer(f"seeds[{i}]", s, 0, MAX_SEED)
        for i, s in enumerate(checker.listed("seeds", document.get("seeds", [0])))
    ]
    _unique(checker, "seeds", seeds, what="seed")
    noise_rates = [
        checker.number(f"noise_rates[{i}]", r, 0.0, below=1.0)
        for i, r in enumerate(checker.listed("noise_rates", document.get("noise_rates", [0.0])))
    ]
    _unique(checker, "noise_rates", noise_rates, what="noise rate")
    noisy = [i for i, rate in enumerate(noise_rates) if rate > 0]
    for i, (dataset, _) in enumerate(datasets):
        if noisy and "noise_rate" not in registry.get("dataset", dataset).defaults:
            raise checker.fail(
                f"noise_rates[{noisy[0]}]",
                noise_rates[noisy[0]],
                f"only 0.0: dataset {dataset!r} (datasets[{i}]) does not support label noise "
                "(a dataset that does lists noise_rate in its defaults)",
            )
    batch_sizes = [
        checker.integer(f"batch_sizes[{i}]", b, 1)
        for i, b in enumerate(checker.listed("batch_sizes", document.get("batch_sizes", [settings["batch_size"]])))
    ]
    _unique(checker, "batch_sizes", batch_sizes, what="batch size")
    for i, size in enumerate(batch_sizes):
        if size % settings["nproc"]:
            raise checker.fail(
                f"batch_sizes[{i}]", size, f"a multiple of defaults.nproc ({settings['nproc']}): ranks split it evenly"
            )
    _check_combinations(checker, registry, models, datasets)
    settings["metrics"] = tuple(
        _component(checker, registry, "metric", f"metrics[{i}]", entry)
        for i, entry in enumerate(document.get("metrics") or [])
    )
    _unique(checker, "metrics", list(settings["metrics"]), what="metric (same name and parameters)")
    references = _references(checker, document.get("reference", []), path, methods, models)
    axes = {"methods": methods, "models": models, "datasets": datasets}
    axes |= {"noise_rates": noise_rates, "batch_sizes": batch_sizes, "seeds": seeds}
    count = math.prod(len(values) for values in axes.values())
    if count > MAX_RUNS and not smoke:  # before expanding: 20 million runs took gigabytes before any error
        product = " x ".join(f"{len(values)} {key}" for key, values in axes.items())
        raise SuiteError(
            f"{path}: the grid expands to {count:,} runs ({product}); expected at most {MAX_RUNS:,} runs "
            "in one suite: split it into several suites"
        )
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
    runs = tuple(_with_reference(_run(name, settings, *axes), references) for axes in grid)
    executor = _executor(checker, registry, document.get("executor"))
    _check_factories(path, registry, runs, _check_path)
    return Suite(name=name, description=description, path=path, runs=runs, executor=executor)


def _check_factories(path: str, registry: Registry, runs: Iterable[RunSpec], check: Callable[[Spec], Any]) -> None:
    """``check`` the factory of every component the runs use, so that a plugin whose lazy factory path is
    wrong fails here, naming the plugin, rather than in every run."""
    for kind, name in dict.fromkeys(component for run in runs for component in run.components()):
        spec = registry.get(kind, name)
        try:
            check(spec)
        except Exception as error:  # ImportError, AttributeError, or whatever the module raised on import
            raise SuiteError(
                f"{path}: {kind} {name!r} (registered by {spec.provider or 'an unnamed plugin'}): its factory "
                f"{spec.factory!r} cannot be loaded: {type(error).__name__}: {error}"
            ) from error


def _check_path(spec: Spec) -> None:
    """A lazy factory path checked from its module's source where it can be (``harness.lazy_check``)."""
    if isinstance(spec.factory, str):
        check_path(spec.factory)


def import_factories(suite: Suite, registry: Registry, runs: Sequence[RunSpec]) -> None:
    """Import the factory of every component ``runs`` use (a ``SuiteError`` naming the plugin if one fails).

    ``load_suite`` checked the factory paths without importing them; ``harness run`` calls this just
    before training, when the imports are needed anyway, so a plugin module that exists but fails on
    import (a missing dependency) stops the suite before it trains rather than crashing every run.
    """
    _check_factories(suite.path, registry, runs, lambda spec: spec.load())


def _executor(checker: _Checker, registry: Registry, raw: Any) -> tuple[str, dict[str, Any]]:
    """The suite's ``executor:`` block (how its runs are executed; not part of any run's config)."""
    if raw is None:
        if DEFAULT_EXECUTOR not in registry.names("executor"):
            return DEFAULT_EXECUTOR, {}
        raw = DEFAULT_EXECUTOR
    return _component(checker, registry, "executor", "executor", raw)


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


def _check_combinations(
    checker: _Checker, registry: Registry, models: list[tuple[str, dict]], datasets: list[tuple[str, dict]]
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


def _references(
    checker: _Checker, raw: Any, path: str, methods: list[dict[str, Any]], models: list[tuple[str, dict]]
) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Validate the ``reference`` block: each entry cites a paper table and maps names to the paper's."""
    from harness.reference import DEFAULT_TABLE, REFERENCE_KEYS, model_key_name, read_table

    if raw in (None, []):
        return []
    table_path = Path(path).resolve().parent / DEFAULT_TABLE
    try:
        rows = read_table(table_path)
    except OSError as error:
        raise checker.fail("reference", "...", f"the reference table at {table_path} ({error.strerror})") from None
    method_names = [m["name"] for m in methods]
    model_names = [m[0] for m in models]
    blocks = []
    for i, entry in enumerate(checker.listed("reference", raw)):
        key = f"reference[{i}]"
        block = checker.mapping(key, entry)
        checker.keys(key, block, REFERENCE_KEYS)
        for required in ("paper", "table", "methods", "models"):
            if required not in block:
                raise checker.fail(f"{key}.{required}", _MISSING, "a value (see the README's reference section)")
        cited = [r for r in rows if r["paper"] == block["paper"] and r["table"] == block["table"]]
        if not cited:
            known = sorted({f"{r['paper']} {r['table']}" for r in rows})
            raise checker.fail(
                f"{key}.table", f"{block['paper']} {block['table']}", f"a table of {table_path}: {known}"
            )
        for mapping_key, names, column in (("methods", method_names, "method"), ("models", model_names, "model")):
            mapping = checker.mapping(f"{key}.{mapping_key}", block[mapping_key])
            paper_names = sorted({r[column] for r in cited})
            for ours, theirs in mapping.items():
                if (model_key_name(str(ours)) if mapping_key == "models" else ours) not in names:
                    raise checker.fail(
                        f"{key}.{mapping_key}.{ours}",
                        ours,
                        f"one of this suite's {mapping_key}{did_you_mean(ours, names)}",
                    )
                if theirs not in paper_names:
                    raise checker.fail(
                        f"{key}.{mapping_key}.{ours}",
                        theirs,
                        f"a {column} of {block['paper']} {block['table']}{did_you_mean(str(theirs), paper_names)}: "
                        f"{', '.join(paper_names)}",
                    )
        blocks.append((block, rows))
    return blocks


def _with_reference(run: RunSpec, references: list[tuple[dict[str, Any], list[dict[str, str]]]]) -> RunSpec:
    """Attach the first published value that matches the run (the suite's reference blocks, in order)."""
    from harness.reference import lookup

    for block, rows in references:
        found = lookup(
            rows,
            block,
            method=run.method,
            model=run.model,
            model_params=run.model_params,
            dataset=run.dataset,
            noise_rate=run.noise_rate,
        )
        if found is not None:
            return dataclasses.replace(run, reference_test_acc=found.test_acc, reference_source=found.source)
    return run


def _unique(checker: _Checker, key: str, values: Sequence[Any], *, what: str, field: str = "") -> None:
    """Refuse a repeated entry of a grid axis: it would expand into runs with the same run id.

    One pass with a dict of hashable forms (``_frozen``), so a generated axis of 20,000 seeds costs
    milliseconds rather than the seconds of comparing every pair.
    """
    first_at: dict[Any, int] = {}
    for later, value in enumerate(values):
        earlier = first_at.setdefault(_frozen(value), later)
        if earlier != later:
            shown = value[0] if isinstance(value, tuple) else value
            hint = " (give it a distinct 'name:')" if field == ".name" else " (remove one)"
            raise checker.fail(
                f"{key}[{later}]{field}",
                shown,
                f"a {what} that is not repeated: {key}[{earlier}] is the same, and a repeat would give "
                f"runs with the same run id{hint}",
            )


def _frozen(value: Any) -> Any:
    """A hashable form of YAML data that is equal exactly when the data is (``1 == 1.0`` stays equal)."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, (set, frozenset)):  # YAML's !!set
        return frozenset(value)
    return value


def _run_settings(checker: _Checker, raw: Any) -> dict[str, Any]:
    defaults = checker.mapping("defaults", raw)
    checker.keys("defaults", defaults, list(RUN_DEFAULTS))
    settings = {**RUN_DEFAULTS, **defaults}
    for key in ("epochs", "batch_size", "eval_batch_size", "metric_batches", "metric_batch_size"):
        settings[key] = checker.integer(f"defaults.{key}", settings[key], 1)
    settings["metric_every"] = checker.integer("defaults.metric_every", settings["metric_every"], 0)
    settings["nproc"] = checker.integer("defaults.nproc", settings["nproc"], 1)
    for key, (allowed, expected) in CHOICES.items():
        if settings[key] not in allowed:
            raise checker.fail(f"defaults.{key}", settings[key], expected)
    for key, default in RUN_DEFAULTS.items():
        if isinstance(default, bool):
            settings[key] = checker.boolean(f"defaults.{key}", settings[key])
    if settings["precision"] == "fp16" and settings["nproc"] > 1 and settings["perturbation_scope"] == "local":
        raise checker.fail(
            "defaults.precision",
            "fp16",
            "fp32 or bf16 with nproc > 1 and perturbation_scope: local (each rank would decide on its own whether "
            "its unsynchronized first pass overflowed, and the ranks would part ways)",
        )
    if settings["grad_clip_norm"] is not None:
        settings["grad_clip_norm"] = checker.number(
            "defaults.grad_clip_norm", settings["grad_clip_norm"], 0.0, strict=True
        )
    if settings["target_acc"] is not None:
        settings["target_acc"] = checker.number("defaults.target_acc", settings["target_acc"], 0.0, below=1.0 + 1e-9)
    if not isinstance(settings["device"], str) or not _DEVICE.match(settings["device"]):
        raise checker.fail("defaults.device", settings["device"], "auto, cpu, cuda, cuda:N or mps")
    base_optimizer = settings["base_optimizer"]
    settings["base_optimizer"] = _base_optimizer(
        checker, "defaults.base_optimizer", base_optimizer, _inherit(base_optimizer, "base_optimizer")
    )
    lr_schedule = settings["lr_schedule"]
    if isinstance(lr_schedule, Mapping):
        lr_schedule = {**_inherit(lr_schedule, "lr_schedule"), **lr_schedule}
    settings["lr_schedule"] = _lr_schedule(checker, "defaults.lr_schedule", lr_schedule)
    return settings


def _inherit(value: Any, key: str) -> dict[str, Any]:
    """The built-in default block when ``value`` is a partial block without a name, else nothing."""
    return dict(RUN_DEFAULTS[key]) if isinstance(value, Mapping) and "name" not in value else {}


def _base_optimizer(checker: _Checker, key: str, raw: Any, inherited: Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"name": raw}
    value = checker.mapping(key, raw)
    checker.keys(key, value, BASE_OPTIMIZER_KEYS)
    if inherited and "name" in value and value["name"] != inherited.get("name"):
        # another optimizer: its settings (momentum, betas, ...) do not carry over; only lr does
        inherited = {"lr": inherited["lr"]} if "lr" in inherited else None
    merged = {**(inherited or {}), **value}
    if "name" not in merged:
        raise checker.fail(f"{key}.name", _MISSING, "a base optimizer name from timm (momentum, sgd, adamw, lamb, ...)")
    declared = isinstance(merged["name"], str) and merged["name"] in declared_timm_optimizers()  # no timm import
    if not declared and merged["name"] not in _timm_optimizer_names():
        hint = did_you_mean(str(merged["name"]), _timm_optimizer_names())
        raise checker.fail(
            f"{key}.name",
            merged["name"],
            f"a timm optimizer name{hint} (momentum = SGD with heavy-ball momentum, "
            "sgd = SGD with Nesterov momentum, adamw, lamb, ...)",
        )
    if "lr" not in merged:
        raise checker.fail(f"{key}.lr", _MISSING, "a learning rate > 0")
    checker.number(f"{key}.lr", merged["lr"], 0.0, strict=True)
    if "momentum" in merged:
        checker.number(f"{key}.momentum", merged["momentum"], 0.0, below=1.0)
    if "weight_decay" in merged:
        checker.number(f"{key}.weight_decay", merged["weight_decay"], 0.0)
    if "eps" in merged:
        checker.number(f"{key}.eps", merged["eps"], 0.0, strict=True)
    if "betas" in merged:
        betas = merged["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise checker.fail(f"{key}.betas", betas, "a list of two numbers >= 0 and < 1, for example [0.9, 0.999]")
        for i, beta in enumerate(betas):
            checker.number(f"{key}.betas[{i}]", beta, 0.0, below=1.0)
    if "filter_bias_and_bn" in merged:
        checker.boolean(f"{key}.filter_bias_and_bn", merged["filter_bias_and_bn"])
    return merged


@functools.cache
def _timm_optimizer_names() -> tuple[str, ...]:
    """Every optimizer name timm knows (imports timm and torch: only for a name its source does not declare,
    ``harness.lazy_check.declared_timm_optimizers``)."""
    from timm.optim import list_optimizers

    return tuple(list_optimizers())


def _lr_schedule(checker: _Checker, key: str, raw: Any) -> dict[str, Any]:
    value = checker.mapping(key, raw)
    checker.keys(key, value, LR_SCHEDULE_KEYS)
    name = value.get("name", _MISSING)
    if name not in LR_SCHEDULES:
        hint = did_you_mean(str(name), LR_SCHEDULES) if isinstance(name, str) else ""
        raise checker.fail(f"{key}.name", name, f"one of {', '.join(LR_SCHEDULES)}{hint}")
    for number_key in ("warmup_epochs", "warmup_lr", "min_lr", "decay_rate", "decay_epochs"):
        if number_key in value:
            checker.number(f"{key}.{number_key}", value[number_key], 0.0)
    if "decay_milestones" in value:
        milestones = value["decay_milestones"]
        if not isinstance(milestones, list) or not milestones:
            raise checker.fail(
                f"{key}.decay_milestones", milestones, "a non-empty list of epochs, for example [30, 60]"
            )
        for i, epoch in enumerate(milestones):
            checker.number(f"{key}.decay_milestones[{i}]", epoch, 0.0)
    return value


def _method(
    checker: _Checker, registry: Registry, key: str, raw: Any, base_optimizer: Mapping[str, Any]
) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"preset": raw}
    value = checker.mapping(key, raw)
    checker.keys(key, value, METHOD_KEYS)
    optimizer_block = checker.mapping(f"{key}.optimizer", value.get("optimizer", {}))
    scheduler_block = checker.mapping(f"{key}.scheduler", value.get("scheduler", {}))
    preset_name = value.get("preset")
    preset = None
    base = dict(base_optimizer)
    if preset_name is not None:
        preset = _lookup(checker, registry, "preset", f"{key}.preset", preset_name)
        optimizer_name = optimizer_block.pop("name", preset.optimizer)
        scheduler_name = scheduler_block.pop("name", preset.scheduler)
        if preset.base_optimizer:
            base = {**base, **preset.base_optimizer}
        method_name = value.get("name", preset_name)
    else:
        if "name" not in value:
            raise checker.fail(f"{key}.name", _MISSING, "a method name (or 'preset: <name>')")
        if "name" not in optimizer_block:
            raise checker.fail(f"{key}.optimizer.name", _MISSING, "an optimizer name (or 'preset: <name>')")
        optimizer_name = optimizer_block.pop("name")
        scheduler_name = scheduler_block.pop("name", "constant")
        method_name = value["name"]
    checker.path_name(
        f"{key}.name", method_name, "a method name (a preset's unless set; it starts the run id, a file name)"
    )
    base = _base_optimizer(checker, f"{key}.base_optimizer", value.get("base_optimizer", {}), base)
    optimizer_spec = _lookup(checker, registry, "optimizer", f"{key}.optimizer.name", optimizer_name)
    scheduler_spec = _lookup(checker, registry, "scheduler", f"{key}.scheduler.name", scheduler_name)
    optimizer_params, scheduler_params = optimizer_block, scheduler_block
    if preset is not None:
        optimizer_params = {
            **_inherited(preset.optimizer_params, preset.optimizer, optimizer_name, optimizer_spec),
            **optimizer_block,
        }
        scheduler_params = {
            **_inherited(preset.scheduler_params, preset.scheduler, scheduler_name, scheduler_spec),
            **scheduler_block,
        }
    return {
        "name": method_name,
        "preset": preset_name or "",
        "optimizer": optimizer_name,
        "optimizer_params": _params(checker, f"{key}.optimizer", optimizer_spec, optimizer_params, scheduler_spec),
        "scheduler": scheduler_name,
        "scheduler_params": _params(checker, f"{key}.scheduler", scheduler_spec, scheduler_params, optimizer_spec),
        "base_optimizer": base,
    }


def _inherited(params: Mapping[str, Any], preset_component: str, name: str, spec: Any) -> dict[str, Any]:
    """The preset's parameters for its component that carry over to the method's component ``name``.

    All of them when the method keeps the preset's component; when it names another one, those the other
    accepts (``{preset: sam, scheduler: {name: periodic, k: 5}}`` keeps SAM's rho, a switch to ``never``
    drops it instead of failing on it).
    """
    if name == preset_component:
        return dict(params)
    return {param: value for param, value in params.items() if param in spec.defaults}


def _component(checker: _Checker, registry: Registry, kind: str, key: str, raw: Any) -> tuple[str, dict[str, Any]]:
    if isinstance(raw, str):
        raw = {"name": raw}
    value = checker.mapping(key, raw)
    name = value.pop("name", _MISSING)
    if name is _MISSING:
        raise checker.fail(f"{key}.name", name, f"a {kind} name")
    spec = _lookup(checker, registry, kind, f"{key}.name", name)
    if kind == "dataset" and "noise_rate" in value:  # the grid sets it; a value here would be ignored
        raise checker.fail(
            f"{key}.noise_rate",
            value["noise_rate"],
            f"no noise rate here: list label-noise rates in the top-level 'noise_rates: "
            f"[{short_repr(value['noise_rate'])}]', which expands into the grid",
        )
    return name, _params(checker, key, spec, value, None)


def _lookup(checker: _Checker, registry: Registry, kind: str, key: str, name: Any) -> Any:
    checker.name(key, name)
    try:
        return registry.get(kind, name)
    except UnknownNameError as error:
        raise SuiteError(f"{checker.source}: {key}: {error}") from None


def _params(checker: _Checker, key: str, spec: Any, params: Mapping[str, Any], sibling: Any) -> dict[str, Any]:
    """Check ``params`` against ``spec.defaults`` (keys, types, ranges) and merge them in."""
    allowed = list(spec.defaults)
    for name, value in params.items():
        if name not in spec.defaults:
            name = str(name) if len(str(name)) <= SHORT_REPR_CHARS else short_repr(name)  # a 1 MiB key
            hint = ""
            if sibling is not None and name in sibling.defaults:
                hint = f"; {name!r} is a parameter of the {sibling.kind} {sibling.name!r}, set it there"
            expected = ", ".join(allowed) or f"no parameters (the {spec.kind} {spec.name!r} takes none)"
            raise SuiteError(
                f"{checker.source}: {key}.{name}: unknown parameter of {spec.kind} {spec.name!r}"
                f"{did_you_mean(str(name), allowed)}; expected one of: {expected}{hint}"
            )
        _check_type(checker, f"{key}.{name}", value, spec.defaults[name])
        allowed_values = getattr(spec, "choices", {}).get(name)
        if allowed_values is not None and value not in allowed_values:
            raise checker.fail(f"{key}.{name}", value, f"one of {', '.join(map(repr, allowed_values))}")
        if name == "rho" or name.startswith("rho_"):
            checker.number(f"{key}.{name}", value, 0.0)
        if name == "noise_rate":
            checker.number(f"{key}.{name}", value, 0.0, below=1.0)
    merged = {**spec.defaults, **params}
    return {k: v for k, v in merged.items() if k not in spec.later_params or v != spec.defaults[k]}


def _check_type(checker: _Checker, key: str, value: Any, default: Any) -> None:
    if default is None:
        return
    if isinstance(default, bool):
        ok, expected = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(default, str):
        ok, expected = isinstance(value, str), "a string"
    elif isinstance(default, (list, tuple)):
        ok, expected = isinstance(value, (list, tuple)), "a list"
    else:
        ok, expected = True, ""
    if not ok:
        raise checker.fail(key, value, f"{expected} (the default is {default!r})")


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
        **run_settings,
    )
