"""Reading a suite: the file, its ``--set`` overrides, and the validation that turns it into a ``Suite``.

``load_suite`` reads the file (bounded, UTF-8, ``harness.suite.yaml_loader``), applies the overrides
(``apply_overrides``) and validates the document top-down: the top-level keys and name, the run
settings (``settings``), each axis (``methods`` for methods and components, ``checks.unique`` against
repeats), the model x dataset pairs and the grid (``grid``), the settings that depend on the grid
values (``conditions``), each preset's paper domain against the runs' stated extensions (``domains``),
the references (``references``), the executor, the tuning studies (``tuning``), and last every factory
path the runs use (``factories``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.contract.run_spec import RUN_DEFAULTS
from harness.errors import SuiteError, did_you_mean, short_repr
from harness.plugins import Registry
from harness.suite import yaml_loader
from harness.suite.checks import MISSING, Checker, unique
from harness.suite.conditions import apply as apply_conditions
from harness.suite.conditions import conditions
from harness.suite.domains import check_domains
from harness.suite.factories import check_factories, check_source
from harness.suite.grid import check_combinations, expand
from harness.suite.methods import component, method
from harness.suite.record import DEFAULT_EXECUTOR, Suite
from harness.suite.references import reference_blocks, with_reference
from harness.suite.settings import run_settings
from harness.suite.tuning import tuning

#: Folder names the harness itself writes beside or inside suite folders (a suite's history and logs, a
#: results folder's default report): a suite of that name would be mistaken for them, or they for it.
RESERVED_SUITE_NAMES = ("history", "steps", "logs", "checkpoints", "report")
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
    "conditions",
    "executor",
    "tuning",
)
MAX_SEED = 2**32 - 1  # numpy.random.seed refuses larger seeds


def load_suite(path: str | Path, registry: Registry, overrides: Sequence[str] = (), *, smoke: bool = False) -> Suite:
    """Read, override, validate and expand the suite at ``path``. Raises ``SuiteError``.

    smoke: shrink the suite for a quick check (see ``harness.suite.grid.SMOKE_BATCH``); its name gets a
    ``-smoke`` suffix so smoke results never mix with real ones.
    """
    path = str(path)
    document = read_document(path, "suite")
    checker = Checker(path, overrides)
    document = checker.mapping("(top level)", document if document is not None else MISSING)
    document = apply_overrides(document, overrides, path)
    return _validate(document, registry, checker, path, smoke=smoke, pinned=_set_on_the_command_line(overrides))


def read_document(path: str | Path, what: str) -> Any:
    """The YAML document at ``path``, read within ``yaml_loader``'s limits; ``what`` names the kind of file in
    errors (``suite``, ``claims file``). Raises ``SuiteError``."""
    path = str(path)
    try:
        with open(path, "rb") as stream:
            data = stream.read(yaml_loader.MAX_BYTES + 1)  # never more: the path may be /dev/zero
    except OSError as error:
        raise SuiteError(f"{path}: cannot read the {what} file: {error.strerror or error}") from error
    if len(data) > yaml_loader.MAX_BYTES:
        raise SuiteError(
            f"{path}: more than {yaml_loader.MAX_BYTES:,} bytes; expected a {what} of at most "
            f"{yaml_loader.MAX_BYTES:,} bytes"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SuiteError(f"{path}: not a UTF-8 text file ({error}); expected a YAML {what}") from error
    try:
        return yaml_loader.load(text)
    except yaml.YAMLError as error:
        raise SuiteError(f"{path}: {_yaml_problem(error)}") from error


def _set_on_the_command_line(overrides: Sequence[str]) -> tuple[str, ...]:
    """The run settings ``--set`` gives (``epochs`` for ``--set epochs=2`` or ``defaults.epochs=2``): the
    suite's ``conditions`` never override them."""
    keys = [override.partition("=")[0].strip().split(".") for override in overrides]
    return tuple(parts[1] if parts[0] == "defaults" and len(parts) > 1 else parts[0] for parts in keys)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """``not valid YAML: line L, column C: problem (context)`` of a YAML error (``refused as YAML`` for a
    ``yaml_loader`` limit), without PyYAML's ``"<unicode string>"`` excerpt."""
    what = "refused as YAML" if isinstance(error, yaml_loader.LimitError) else "not valid YAML"
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
            value = yaml_loader.load(raw)
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


def _validate(
    document: dict[str, Any], registry: Registry, checker: Checker, path: str, *, smoke: bool, pinned: Sequence[str]
) -> Suite:
    checker.keys("", document, TOP_LEVEL_KEYS)
    name = document.get("name", MISSING)
    checker.path_name("name", name, "a suite name (it names the results folder)")
    if name in RESERVED_SUITE_NAMES:
        raise checker.fail(
            "name", name, f"a suite name other than {', '.join(RESERVED_SUITE_NAMES)} (folders the harness writes)"
        )
    description = document.get("description", "")
    if not isinstance(description, str):
        raise checker.fail("description", description, "a string")
    settings = run_settings(checker, document.get("defaults") or {})
    for key in ("methods", "models", "datasets"):
        if key not in document:
            raise checker.fail(key, MISSING, f"a non-empty list of {key}")
    methods = [
        method(checker, registry, f"methods[{i}]", entry, settings["base_optimizer"])
        for i, entry in enumerate(checker.listed("methods", document["methods"]))
    ]
    unique(checker, "methods", [m["name"] for m in methods], field=".name", what="method name")
    models = [
        component(checker, registry, "model", f"models[{i}]", entry)
        for i, entry in enumerate(checker.listed("models", document["models"]))
    ]
    datasets = [
        component(checker, registry, "dataset", f"datasets[{i}]", entry)
        for i, entry in enumerate(checker.listed("datasets", document["datasets"]))
    ]
    unique(checker, "models", models, what="model (same name and parameters)")
    unique(checker, "datasets", datasets, what="dataset (same name and parameters)")
    seeds = [
        checker.integer(f"seeds[{i}]", s, 0, MAX_SEED)
        for i, s in enumerate(checker.listed("seeds", document.get("seeds", [0])))
    ]
    unique(checker, "seeds", seeds, what="seed")
    noise_rates = [
        checker.number(f"noise_rates[{i}]", r, 0.0, below=1.0)
        for i, r in enumerate(checker.listed("noise_rates", document.get("noise_rates", [0.0])))
    ]
    unique(checker, "noise_rates", noise_rates, what="noise rate")
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
    unique(checker, "batch_sizes", batch_sizes, what="batch size")
    for i, size in enumerate(batch_sizes):
        if size % settings["nproc"]:
            raise checker.fail(
                f"batch_sizes[{i}]", size, f"a multiple of defaults.nproc ({settings['nproc']}): ranks split it evenly"
            )
    check_combinations(checker, registry, models, datasets)
    settings["metrics"] = tuple(
        component(checker, registry, "metric", f"metrics[{i}]", entry)
        for i, entry in enumerate(document.get("metrics") or [])
    )
    unique(checker, "metrics", list(settings["metrics"]), what="metric (same name and parameters)")
    references = reference_blocks(checker, document.get("reference", []), path, methods, models)
    axes = {"methods": methods, "models": models, "datasets": datasets}
    axes |= {"noise_rates": noise_rates, "batch_sizes": batch_sizes, "seeds": seeds}
    name, runs = expand(path, registry, name, settings, axes, smoke=smoke)
    grid_values = {
        "method": [m["name"] for m in methods],
        "model": [m[0] for m in models],
        "dataset": [d[0] for d in datasets],
        "noise_rate": noise_rates,
        "batch_size": batch_sizes,
        "seed": seeds,
    }
    found = conditions(checker, document.get("conditions"), registry, document.get("defaults") or {}, grid_values)
    runs = tuple(apply_conditions(checker, registry, run, found, pinned=pinned, smoke=smoke) for run in runs)
    check_domains(checker, registry, runs, methods)
    runs = tuple(with_reference(run, references) for run in runs)
    executor = _executor(checker, registry, document.get("executor"))
    tuned = tuning(checker, registry, document.get("tuning"), runs, methods, seeds, smoke=smoke)
    check_factories(path, registry, runs, check_source)
    return Suite(name=name, description=description, path=path, runs=runs, executor=executor, tuning=tuned)


def _executor(checker: Checker, registry: Registry, raw: Any) -> tuple[str, dict[str, Any]]:
    """The suite's ``executor:`` block (how its runs are executed; not part of any run's config)."""
    if raw is None:
        if DEFAULT_EXECUTOR not in registry.names("executor"):
            return DEFAULT_EXECUTOR, {}
        raw = DEFAULT_EXECUTOR
    return component(checker, registry, "executor", "executor", raw)
