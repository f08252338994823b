"""Reading a suite: the file, its ``--set`` overrides, and the validation that turns it into a ``Suite``.

``load_suite`` reads the file (bounded, UTF-8, ``harness.suite.yaml_loader``), applies the overrides
(``apply_overrides``) and validates the document in two rounds. First the checks that stand on their
own: the top-level keys and name, each run setting (``settings``), each entry of each axis (``methods``
for methods and components, ``checks.unique`` against repeats), the metrics and the executor; their
problems are gathered (``checks.Problems``) and raised as one ``SuiteError``, so a suite shows all of
them at once. Then, on those valid parts, the checks that combine them, the first problem stopping:
the model x dataset pairs and the grid (``grid``), the references (``references``), the settings that
depend on the grid values (``conditions``), each preset's paper domain against the runs' stated
extensions (``domains``), the tuning studies (``tuning``), and last every factory path the runs use
(``factories``).
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
from harness.suite.checks import MISSING, Checker, Problems, unique
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
    """The ``Suite`` of a document: first every check that stands on its own (the top-level keys, the name, each
    run setting, each axis entry, the executor), their problems listed in one ``SuiteError``; then, on valid
    parts, the checks that combine them (model x dataset, references, conditions, domains, tuning, factories)."""
    problems = Problems(checker)
    with problems.check():
        checker.keys("", document, TOP_LEVEL_KEYS)
    with problems.check():
        _suite_name(checker, document.get("name", MISSING))
    description = document.get("description", "")
    if not isinstance(description, str):
        problems.add(checker.fail("description", description, "a string"))
    settings = None
    with problems.check():
        settings = run_settings(checker, document.get("defaults") or {})
    axes = _axes(problems, checker, registry, document, settings)
    metrics = None
    if document.get("metrics"):
        metrics = problems.each(
            "metrics", document["metrics"], lambda key, entry: component(checker, registry, "metric", key, entry)
        )
        if metrics is not None:
            with problems.check():
                unique(checker, "metrics", metrics, what="metric (same name and parameters)")
    with problems.check():
        executor = _executor(checker, registry, document.get("executor"))
    problems.raise_any()
    settings["metrics"] = tuple(metrics or ())
    methods, models, seeds = axes["methods"], axes["models"], axes["seeds"]
    check_combinations(checker, registry, models, axes["datasets"])
    references = reference_blocks(checker, document.get("reference", []), path, methods, models)
    name, runs = expand(path, registry, document["name"], settings, axes, smoke=smoke)
    grid_values = {
        "method": [m["name"] for m in methods],
        "model": [m[0] for m in models],
        "dataset": [d[0] for d in axes["datasets"]],
        "noise_rate": axes["noise_rates"],
        "batch_size": axes["batch_sizes"],
        "seed": seeds,
    }
    found = conditions(checker, document.get("conditions"), registry, document.get("defaults") or {}, grid_values)
    runs = tuple(apply_conditions(checker, registry, run, found, pinned=pinned, smoke=smoke) for run in runs)
    check_domains(checker, registry, runs, methods)
    runs = tuple(with_reference(run, references) for run in runs)
    tuned = tuning(checker, registry, document.get("tuning"), runs, methods, seeds, smoke=smoke)
    check_factories(path, registry, runs, check_source)
    return Suite(name=name, description=description, path=path, runs=runs, executor=executor, tuning=tuned)


def _suite_name(checker: Checker, name: Any) -> None:
    checker.path_name("name", name, "a suite name (it names the results folder)")
    if name in RESERVED_SUITE_NAMES:
        raise checker.fail(
            "name", name, f"a suite name other than {', '.join(RESERVED_SUITE_NAMES)} (folders the harness writes)"
        )


def _axes(
    problems: Problems, checker: Checker, registry: Registry, document: dict[str, Any], settings: dict[str, Any] | None
) -> dict[str, list[Any] | None]:
    """The grid's axes in ``expand``'s order, each entry checked on its own (an axis with a problem is None),
    then the rules within an axis (no repeats) and between two (label noise, batches split over ranks).

    settings: the checked run settings; None when they have a problem: the methods' base optimizers are then
    checked over the built-in one, and the batch sizes' split over ranks waits for valid settings.
    """
    for key in ("methods", "models", "datasets"):
        if key not in document:
            problems.add(checker.fail(key, MISSING, f"a non-empty list of {key}"))
    base = (settings or RUN_DEFAULTS)["base_optimizer"]
    checks = {  # each entry's check, and what a repeated entry is called
        "methods": (lambda key, entry: method(checker, registry, key, entry, base), "method name"),
        "models": (
            lambda key, entry: component(checker, registry, "model", key, entry),
            "model (same name and parameters)",
        ),
        "datasets": (
            lambda key, entry: component(checker, registry, "dataset", key, entry),
            "dataset (same name and parameters)",
        ),
        "noise_rates": (lambda key, rate: checker.number(key, rate, 0.0, below=1.0), "noise rate"),
        "batch_sizes": (lambda key, size: checker.integer(key, size, 1), "batch size"),
        "seeds": (lambda key, seed: checker.integer(key, seed, 0, MAX_SEED), "seed"),
    }
    given = {"noise_rates": [0.0], "batch_sizes": [(settings or RUN_DEFAULTS)["batch_size"]], "seeds": [0]}
    given |= {key: document[key] for key in checks if key in document}
    axes = {key: problems.each(key, given[key], check) if key in given else None for key, (check, _) in checks.items()}
    for key, (_, what) in checks.items():
        if axes[key] is None:
            continue
        with problems.check():
            if key == "methods":
                unique(checker, key, [m["name"] for m in axes[key]], field=".name", what=what)
            else:
                unique(checker, key, axes[key], what=what)
    with problems.check():
        _noise_supported(checker, registry, axes["datasets"] or [], axes["noise_rates"] or [])
    if settings is not None:
        for i, size in enumerate(axes["batch_sizes"] or []):
            if size % settings["nproc"]:
                problems.add(
                    checker.fail(
                        f"batch_sizes[{i}]",
                        size,
                        f"a multiple of defaults.nproc ({settings['nproc']}): ranks split it evenly",
                    )
                )
    return axes


def _noise_supported(
    checker: Checker, registry: Registry, datasets: list[tuple[str, dict[str, Any]]], noise_rates: list[float]
) -> None:
    """Refuse a noise rate > 0 for a dataset that cannot add label noise (its defaults list no noise_rate)."""
    noisy = [i for i, rate in enumerate(noise_rates) if rate > 0]
    for i, (dataset, _) in enumerate(datasets):
        if noisy and "noise_rate" not in registry.get("dataset", dataset).defaults:
            raise checker.fail(
                f"noise_rates[{noisy[0]}]",
                noise_rates[noisy[0]],
                f"only 0.0: dataset {dataset!r} (datasets[{i}]) does not support label noise "
                "(a dataset that does lists noise_rate in its defaults)",
            )


def _executor(checker: Checker, registry: Registry, raw: Any) -> tuple[str, dict[str, Any]]:
    """The suite's ``executor:`` block (how its runs are executed; not part of any run's config)."""
    if raw is None:
        if DEFAULT_EXECUTOR not in registry.names("executor"):
            return DEFAULT_EXECUTOR, {}
        raw = DEFAULT_EXECUTOR
    return component(checker, registry, "executor", "executor", raw)
