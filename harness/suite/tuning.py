"""A suite's ``tuning:`` block: equal-budget hyperparameter studies on a clean validation split.

Every paper in shared/papers tunes its own method and not always its baselines (AE-SAM grid-searches rho
and LookSAM's alpha on a 10% validation split, 001_543051aac35e9f16.txt Sec. 4.1; SAM picks rho per
dataset, 003 Sec. 3.1; GSAM per model, 004 Sec. 5). A study gives every method of a condition the same
budget, selects on the validation split only and scores the chosen setting on the test set with fresh
seeds, as MLCommons AlgoPerf's tuning rulesets do::

    tuning:
      objective: val_acc            # a result column measured on the validation split (higher is better)
      budget: {trials: 6}           # the same for every tuned method; or {grad_evals: N} / {train_time_s: S}
      sampler: grid                 # grid, random or tpe (Optuna's samplers), seeded with ``seed``
      space:                        # per method name, or per preset (every method built from it)
        sam:     {scheduler.rho: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5]}
        looksam: {scheduler.rho: [0.05, 0.1], optimizer.alpha: [0.1, 0.3, 0.6]}
      final_seeds: [0, 1, 2]        # after selection: the chosen setting on these seeds, scored on test
      pruner: {name: median, n_startup_trials: 2, n_warmup_steps: 3}   # optional: Optuna's pruners

Space keys are the keys ``conditions:`` set (a run setting, ``block.entry``, ``component.param``), checked
the same way against the component each method's runs use. Values are a list (every sampler) or, for
``random`` and ``tpe``, a range ``{low, high, log}``. A grid must have exactly ``budget.trials`` points
(``subsample: true`` draws that many, seeded, from a larger grid). A method without a space is not
tuned: its finals run at its preset's values, and it has no trials. ``trial_seed`` (the suite's first
seed) trains the trials. ``pruner`` (optional) stops a hopeless trial between epochs: each trial reports
its objective after every epoch (the step is the epoch) and asks the named Optuna pruner (``PRUNERS``;
the other keys are that pruner's arguments), which compares it with the trials told so far. The studies
themselves run in ``harness.tune``; the reporting, in ``harness.run.pruning``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness.contract.run_spec import RunSpec
from harness.errors import SuiteError, did_you_mean
from harness.plugins import Registry
from harness.suite.checks import MISSING, Checker
from harness.suite.conditions import _checked, set_keys

KEYS = (
    "objective",
    "budget",
    "sampler",
    "seed",
    "space",
    "final_seeds",
    "trial_seed",
    "subsample",
    "parallel",
    "pruner",
)
SAMPLERS = ("grid", "random", "tpe")
BUDGETS = ("trials", "grad_evals", "train_time_s")
#: Result columns a study may select on: measured on the validation split, higher is better.
OBJECTIVES = ("val_acc", "best_val_acc")
#: ``pruner.name`` -> Optuna's pruner class (``optuna.pruners``); the block's other keys are its arguments.
PRUNERS = {
    "median": "MedianPruner",
    "percentile": "PercentilePruner",
    "successive_halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
    "threshold": "ThresholdPruner",
}
#: ``--smoke`` exercises the tuning path: this many trials per study (a seeded subsample of a grid), one final seed.
SMOKE_TRIALS = 2


@dataclasses.dataclass(frozen=True)
class Range:
    """A continuous range of a ``random`` or ``tpe`` space."""

    low: float
    high: float
    log: bool = False


@dataclasses.dataclass(frozen=True)
class Tuning:
    """A validated ``tuning:`` block. ``spaces``: method name -> {key: list of values or ``Range``}."""

    objective: str
    budget: tuple[str, float]
    sampler: str
    seed: int
    spaces: Mapping[str, Mapping[str, Any]]
    final_seeds: tuple[int, ...]
    trial_seed: int
    subsample: bool = False
    parallel: int = 0  # trials asked per study and round; 0: the whole budget at once (grid, random)
    pruner: str = ""  # JSON of the validated ``pruner:`` block ({"name": "median", ...}); "" for none


@dataclasses.dataclass(frozen=True)
class Study:
    """One method in one condition: the run its trials and finals start from, and what it tunes."""

    name: str
    method: str
    base: RunSpec
    space: Mapping[str, Any]

    def trial(
        self,
        tuning: Tuning,
        setting: Mapping[str, Any],
        checker: Checker,
        registry: Registry,
        number: int | None = None,
    ) -> RunSpec:
        """The run of trial ``number`` (Optuna's, in the study) that tries ``setting``, on the trial seed."""
        return self._with(
            setting,
            checker,
            registry,
            role="trial",
            seed=tuning.trial_seed,
            objective=tuning.objective,
            pruner=tuning.pruner,
            trial_number=number,
        )

    def finals(self, tuning: Tuning, setting: Mapping[str, Any], checker: Checker, registry: Registry) -> list[RunSpec]:
        """The runs of the chosen ``setting`` on every final seed."""
        return [
            self._with(setting, checker, registry, role="final", seed=seed, objective=tuning.objective)
            for seed in tuning.final_seeds
        ]

    def _with(self, setting: Mapping[str, Any], checker: Checker, registry: Registry, **labels: Any) -> RunSpec:
        changes: dict[str, Any] = {}
        set_keys(checker, registry, self.base, setting, f"tuning.space.{self.method}", changes)
        tuned = json.dumps(dict(setting), sort_keys=True)
        return dataclasses.replace(self.base, **changes, study=self.name, tuned=tuned, **labels)


def study_name(run: RunSpec) -> str:
    """``<method> | <model> <dataset> noise <rate> batch <size>``: one study per method and condition."""
    return f"{run.method} | {run.model} {run.dataset} noise {run.noise_rate:g} batch {run.batch_size}"


def tuning(
    checker: Checker,
    registry: Registry,
    raw: Any,
    runs: Sequence[RunSpec],
    methods: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    *,
    smoke: bool = False,
) -> Tuning | None:
    """Validate the ``tuning:`` block against the suite's methods and runs; None when there is none."""
    if raw is None:
        return None
    block = checker.mapping("tuning", raw)
    checker.keys("tuning", block, KEYS)
    objective = block.get("objective", "val_acc")
    if objective not in OBJECTIVES:
        raise checker.fail("tuning.objective", objective, f"one of {', '.join(OBJECTIVES)} (the validation split's)")
    for run in runs:
        if not run.dataset_params.get("validation_fraction"):
            raise checker.fail(
                "tuning.objective",
                objective,
                f"a validation split to select on: dataset {run.dataset!r} (run {run.run_id}) holds none out; "
                "set validation_fraction on it (AE-SAM holds out 0.1, 001 Sec. 4.1)",
            )
    budget = _budget(checker, block.get("budget", MISSING))
    sampler = block.get("sampler", "grid")
    if sampler not in SAMPLERS:
        raise checker.fail(
            "tuning.sampler", sampler, f"one of {', '.join(SAMPLERS)}{did_you_mean(str(sampler), SAMPLERS)}"
        )
    subsample = block.get("subsample", False)
    if not isinstance(subsample, bool):
        raise checker.fail("tuning.subsample", subsample, "true or false")
    spaces = _spaces(checker, registry, block.get("space", MISSING), runs, methods, sampler)
    if budget[0] == "trials":
        _check_grid_sizes(checker, spaces, int(budget[1]), sampler, subsample)
    final_seeds = tuple(
        checker.integer(f"tuning.final_seeds[{i}]", seed, 0)
        for i, seed in enumerate(checker.listed("tuning.final_seeds", block.get("final_seeds", list(seeds))))
    )
    trial_seed = checker.integer("tuning.trial_seed", block.get("trial_seed", seeds[0]), 0)
    parallel = checker.integer("tuning.parallel", block.get("parallel", 1 if sampler == "tpe" else 0), 0)
    pruner = _pruner(checker, block["pruner"]) if block.get("pruner") is not None else ""
    if pruner:
        _check_prunable(checker, runs)
    if smoke:  # a seeded subsample of SMOKE_TRIALS trials per study, one final seed
        budget = ("trials", float(min(SMOKE_TRIALS, budget[1]) if budget[0] == "trials" else SMOKE_TRIALS))
        final_seeds, subsample = final_seeds[:1], True
    return Tuning(
        objective=objective,
        budget=budget,
        sampler=sampler,
        seed=checker.integer("tuning.seed", block.get("seed", 0), 0),
        spaces=spaces,
        final_seeds=final_seeds,
        trial_seed=trial_seed,
        subsample=subsample,
        parallel=parallel,
        pruner=pruner,
    )


def studies(runs: Sequence[RunSpec], spec: Tuning) -> list[Study]:
    """One study per method and condition (the first run of each stands for it), in the suite's order."""
    found: dict[str, Study] = {}
    for run in runs:
        name = study_name(run)
        if name not in found:
            found[name] = Study(name=name, method=run.method, base=run, space=spec.spaces.get(run.method, {}))
    return list(found.values())


def grid_points(space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of a list-valued space, in its order."""
    keys = list(space)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(space[k] for k in keys))]


def _budget(checker: Checker, raw: Any) -> tuple[str, float]:
    block = checker.mapping("tuning.budget", raw)
    if len(block) != 1 or next(iter(block)) not in BUDGETS:
        raise checker.fail("tuning.budget", block, "one of {trials: N}, {grad_evals: N}, {train_time_s: S}")
    kind, value = next(iter(block.items()))
    if kind == "trials":
        return kind, float(checker.integer("tuning.budget.trials", value, 1))
    return kind, checker.number(f"tuning.budget.{kind}", value, 0.0, strict=True)


def build_pruner(rule: str) -> Any:
    """The Optuna pruner a ``Tuning.pruner`` JSON names (Optuna is imported here, not with the suite)."""
    import optuna

    arguments = json.loads(rule)
    return getattr(optuna.pruners, PRUNERS[arguments.pop("name")])(**arguments)


def _pruner(checker: Checker, raw: Any) -> str:
    """The ``pruner:`` block as sorted JSON, once Optuna has built the pruner it names from it."""
    import inspect

    import optuna

    block = dict(checker.mapping("tuning.pruner", raw))
    name = block.get("name", MISSING)
    if name not in PRUNERS:
        raise checker.fail("tuning.pruner.name", name, f"one of {', '.join(PRUNERS)}{did_you_mean(str(name), PRUNERS)}")
    cls = getattr(optuna.pruners, PRUNERS[name])
    arguments = [p for p in inspect.signature(cls).parameters if p != "self"]
    checker.keys("tuning.pruner", block, ("name", *arguments))
    for key, value in block.items():
        if not (value is None or isinstance(value, (bool, int, float, str))):
            raise checker.fail(f"tuning.pruner.{key}", value, "a number, a string or null")
    rule = json.dumps(block, sort_keys=True)
    try:
        build_pruner(rule)
    except (TypeError, ValueError) as error:
        raise checker.fail(
            "tuning.pruner", block, f"arguments optuna.pruners.{cls.__name__} accepts ({error})"
        ) from None
    return rule


def _check_prunable(checker: Checker, runs: Sequence[RunSpec]) -> None:
    """A pruned trial stops between epochs of one process: refuse what cannot report after every epoch."""
    for run in runs:
        if run.nproc > 1:
            raise SuiteError(
                f"{checker.source}: tuning.pruner: pruning needs runs of one process, but run {run.run_id} has "
                f"nproc={run.nproc} (data-parallel trials cannot be pruned yet); drop the pruner or set nproc: 1"
            )


def _spaces(
    checker: Checker,
    registry: Registry,
    raw: Any,
    runs: Sequence[RunSpec],
    methods: Sequence[Mapping[str, Any]],
    sampler: str,
) -> dict[str, dict[str, Any]]:
    """Method name -> validated space; an entry names a method, or a preset (every method built from it)."""
    block = checker.mapping("tuning.space", raw)
    if not block:
        raise checker.fail(
            "tuning.space", block, "a space for at least one method, e.g. {sam: {scheduler.rho: [0.05, 0.1]}}"
        )
    names = [m["name"] for m in methods]
    presets = {m["name"]: m.get("preset", "") for m in methods}
    spaces: dict[str, dict[str, Any]] = {}
    for entry, keys in block.items():
        targets = [entry] if entry in names else [n for n in names if presets[n] == entry]
        if not targets:
            raise checker.fail(
                f"tuning.space.{entry}",
                entry,
                f"a method of this suite ({', '.join(names)}) or a preset one is built from"
                f"{did_you_mean(str(entry), names)}",
            )
        where = f"tuning.space.{entry}"
        space = {
            key: _values(checker, registry, f"{where}.{key}", key, value, sampler)
            for key, value in checker.mapping(where, keys).items()
        }
        if not space:
            raise checker.fail(where, keys, "at least one key to tune, e.g. {scheduler.rho: [0.05, 0.1]}")
        for method in targets:
            if method in spaces and entry not in names:
                continue  # a method's own entry wins over its preset's
            spaces[method] = space
            for run in (r for r in runs if r.method == method):
                for setting in _corners(space):
                    set_keys(checker, registry, run, setting, where, {})
    return spaces


def _values(checker: Checker, registry: Registry, key: str, name: str, raw: Any, sampler: str) -> Any:
    """A key's values: a non-empty list, or (random, tpe) a ``Range``; each checked as ``conditions`` check it."""
    if isinstance(raw, Mapping):
        if sampler == "grid":
            raise checker.fail(key, raw, "a list of values: a grid takes no range")
        checker.keys(key, raw, ("low", "high", "log"))
        low = checker.number(f"{key}.low", raw.get("low", MISSING), -math.inf)
        high = checker.number(f"{key}.high", raw.get("high", MISSING), low, strict=True)
        log = raw.get("log", False)
        if not isinstance(log, bool) or (log and low <= 0):
            raise checker.fail(f"{key}.log", log, "true (with low > 0) or false")
        for bound in (low, high):
            _checked(checker, registry, {}, key, name, bound)
        return Range(low, high, log)
    if raw == []:
        raise checker.fail(key, raw, "a non-empty list of values to try")
    values = checker.listed(key, raw)
    if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
        raise checker.fail(key, values, "a list of distinct values")
    return [_checked(checker, registry, {}, key, name, value) for value in values]


def _corners(space: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Settings that exercise every value (and both ends of every range) of ``space``, for validation."""
    options = {k: ([v.low, v.high] if isinstance(v, Range) else list(v)) for k, v in space.items()}
    longest = max(len(v) for v in options.values())
    return [{k: v[min(i, len(v) - 1)] for k, v in options.items()} for i in range(longest)]


def _check_grid_sizes(
    checker: Checker, spaces: Mapping[str, Mapping[str, Any]], trials: int, sampler: str, subsample: bool
) -> None:
    """Equal budgets: a grid has exactly ``trials`` points, or more with ``subsample: true``."""
    if sampler != "grid":
        return
    for method, space in spaces.items():
        size = math.prod(len(values) for values in space.values())
        if size < trials or (size > trials and not subsample):
            more = " (or set tuning.subsample: true to draw them, seeded, from the grid)" if size > trials else ""
            raise SuiteError(
                f"{checker.source}: tuning.space.{method}: a grid of {size} points is invalid for a budget of "
                f"{trials} trials; expected exactly {trials} points, the same budget for every method{more}"
            )
