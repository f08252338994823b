"""``RunSpec``, one fully resolved training run, declared once; its id; the run settings it derives.

Every field of ``RunSpec`` is declared here, once, with its default. A *run setting* (a key of a suite's
``defaults:`` block, also reachable as ``--set key=value``) is declared with ``setting(...)``, whose
metadata says whether it was added after the first release (``later``) and, for a setting that takes one
of a few values, those values and what each means (``choices``, ``expected``). From that one declaration
come ``RUN_DEFAULTS`` (the settings and their defaults, the schema of ``defaults:``), ``LATER_SETTINGS``,
``CHOICES`` (checked by ``harness.suite``), ``config()`` and so ``run_id``. Adding a run setting is a
field here and, unless it is a choice or a flag (checked from this declaration), its range check in
``harness.suite.settings.run_settings`` (the README's "Changing the core").

The allowed values of the settings that other modules also check (``PRECISIONS`` for
``harness.run.precision``, ``PERTURBATION_SCOPES``) live here, so they have one home, and so does
``ReferenceCell``, a published number a run carries to its result row. ``run_payload`` and
``run_from_payload`` turn a ``RunSpec`` into the JSON-able data that crosses process and machine
boundaries, and back. The module imports no torch and nothing else of the harness: the parser, the
contract (``harness.contract.hookspecs``), the runner and the executors all import it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: ``precision``: float32; bfloat16 autocast with float32 weights; float16 autocast with a dynamic loss scale.
PRECISIONS = ("fp32", "bf16", "fp16")
#: ``perturbation_scope`` with ``nproc > 1``: perturb with the all-reduced gradient, or each rank with its own.
PERTURBATION_SCOPES = ("global", "local")
#: ``train_eval``: evaluate the training set after the last epoch, or after every epoch.
TRAIN_EVAL = ("end", "epoch")
#: ``bn_stats_pass``: which passes of a step update BatchNorm's running statistics.
BN_STATS_PASSES = ("first", "every")


def setting(default: Any, *, later: bool = False, choices: tuple[Any, ...] = (), expected: str = "") -> Any:
    """A run setting of ``RunSpec``: a key of a suite's ``defaults:`` block, with its default.

    later: the setting was added after the first release: ``config()`` (and so the run id) lists it only
        when it differs from ``default``, so results written before it existed keep their ids and resume.
    choices: the values it may take (``harness.suite`` refuses others, saying ``expected``: each value and
        what it means).
    """
    metadata = {"setting": True, "later": later, "choices": tuple(choices), "expected": expected}
    if isinstance(default, Mapping):  # a block (base_optimizer, lr_schedule): a fresh copy per run
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _named(params: str) -> Any:
    """A component's registry name; in ``config()`` it is ``{"name": name, **<params field>}``."""
    return field(metadata={"params": params})


def _outside_config(default: Any = dataclasses.MISSING) -> Any:
    """A field that ``config()`` leaves out: a component's parameters (in its named entry), or a label."""
    return field(default=default, metadata={"in_config": False})


def _named_list(pairs: tuple[tuple[str, Mapping[str, Any]], ...]) -> list[dict[str, Any]]:
    return [{"name": name, **params} for name, params in pairs]


#: What a published accuracy is, and the measured column it is compared with: the final iterate's test
#: accuracy or the best over training (nuSAM's Tables 2-3 report "the best iterate", 002 Sec. 5.1, seed_nusam.md 6.1).
REPORTED = {"final": "test_acc", "best": "best_test_acc"}


@dataclass(frozen=True)
class ReferenceCell:
    """One published number a run is compared with: a cell of ``suites/reference/paper_results.csv``.

    method: the paper's name of the method. metric: as published, ``test_acc`` or ``test_error``.
    test_acc: the value as a test accuracy (fraction; an error converted). reported: ``final`` or
    ``best`` (a key of ``REPORTED``). differs: where the paper's setting differs from the suite's (the
    reference block's ``differs``), "" where it does not.
    """

    paper: str
    table: str
    method: str
    metric: str
    test_acc: float
    reported: str = "final"
    differs: str = ""

    @property
    def source(self) -> str:
        """``<paper> <table> (<the paper's method>)``."""
        return f"{self.paper} {self.table} ({self.method})"

    @property
    def measured_column(self) -> str:
        """The result column this cell is compared with (``test_acc`` or ``best_test_acc``)."""
        return REPORTED[self.reported]


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """One fully resolved training run: everything needed to train it, and nothing else.

    ``run_id`` hashes ``config()``, so the same run in a rerun gets the same id (resume) and any
    change to a resolved setting, including a plugin default, gives a new id.
    """

    suite: str
    method: str
    preset: str = ""
    optimizer: str = _named("optimizer_params")
    optimizer_params: Mapping[str, Any] = _outside_config()
    scheduler: str = _named("scheduler_params")
    scheduler_params: Mapping[str, Any] = _outside_config()
    model: str = _named("model_params")
    model_params: Mapping[str, Any] = _outside_config()
    dataset: str = _named("dataset_params")
    dataset_params: Mapping[str, Any] = _outside_config()
    noise_rate: float
    seed: int
    epochs: int = setting(15)
    batch_size: int = setting(64)
    eval_batch_size: int = setting(1024)
    device: str = setting("auto")
    base_optimizer: Mapping[str, Any] = setting(
        {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4}
    )
    lr_schedule: Mapping[str, Any] = setting({"name": "cosine", "warmup_epochs": 1})
    train_eval: str = setting(
        "end",
        choices=TRAIN_EVAL,
        expected="end (evaluate the training set after the last epoch) or epoch (after every epoch)",
    )
    metrics: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), metadata={"to_config": _named_list})
    metric_every: int = setting(0)
    metric_batches: int = setting(4)
    metric_batch_size: int = setting(128)
    target_acc: float | None = setting(None)
    nproc: int = setting(1)
    perturbation_scope: str = setting(
        "global",
        choices=PERTURBATION_SCOPES,
        expected="global (perturb with the all-reduced gradient) or local (each rank with its own)",
    )
    precision: str = setting(
        "fp32",
        later=True,
        choices=PRECISIONS,
        expected="fp32, bf16 (autocast, float32 weights) or fp16 (autocast with a dynamic loss scale)",
    )
    channels_last: bool = setting(False, later=True)
    compile: bool = setting(False, later=True)
    grad_clip_norm: float | None = setting(None, later=True)
    #: label smoothing of the training loss (torch's ``cross_entropy(label_smoothing=...)``); 0 is none
    label_smoothing: float = setting(0.0, later=True)
    #: weight decay as an L2 term (l2/2) sum ||w||^2 over every trained parameter, added to the training loss
    #: the closure differentiates (SAM's reference code), so the perturbation and AE-SAM's ||g||^2 see it
    l2_in_loss: float = setting(0.0, later=True)
    #: record every N-th optimizer step's StepInfo and scheduler diagnostics in the run's step trace
    #: (``steps/<run_id>.parquet``, ``harness.run.trace``); 0 records none
    trace_every: int = setting(0, later=True)
    #: write the run's checkpoint (``checkpoints/<run_id>.pt``, ``harness.run.checkpoint``) after every N-th
    #: epoch; 0 writes one only when the worker is asked to stop (SIGTERM, Slurm's preemption signal)
    checkpoint_every: int = setting(0, later=True)
    #: gradient accumulation: every pass of the step's closure runs the batch in micro-batches of this many
    #: examples and accumulates their gradients (``harness.run.closure``); 0 runs each pass on the whole batch
    micro_batch_size: int = setting(0, later=True)
    #: stochastic weight averaging (``harness.run.swa``): average the epoch-end weights from epoch
    #: floor(swa_start * epochs) + 1 on and evaluate the average; None: no averaging
    swa_start: float | None = setting(None, later=True)
    #: SWA's constant learning rate while it averages; None: the run's schedule goes on
    swa_lr: float | None = setting(None, later=True)
    bn_stats_pass: str = setting(
        "first",
        later=True,
        choices=BN_STATS_PASSES,
        expected="first (the clean pass alone updates BatchNorm's running statistics, as the SAM reference code) "
        "or every (every pass does, as davda54/sam and the PyTorch code most papers build on)",
    )
    #: every published cell the run is compared with, one per ``reference:`` block it matches
    #: (``harness.suite.references``); labels, so attaching a paper never changes a run id
    references: tuple[ReferenceCell, ...] = _outside_config(())
    #: why the run applies its method outside its paper's setting ("" for the paper's own setting)
    extension: str = _outside_config("")
    #: what the suite's ``conditions:`` set on this run and why (``harness.suite.conditions``); "" when none
    conditions: str = _outside_config("")
    #: a tuning study's run (``harness.tune``): ``trial`` (a candidate setting, scored on the validation
    #: objective) or ``final`` (the chosen setting on a final seed, scored on the test set); "" for an ordinary
    #: run. In the config (a trial and a final on the same seed are different runs), only when not "".
    role: str = field(default="", metadata={"later": True})
    #: the study a trial or final belongs to: ``<method> | <model> <dataset> noise <rate> batch <size>``
    study: str = _outside_config("")
    #: the setting a trial tries, or a final was chosen to run: JSON of the tuned keys and values
    #: (``{"scheduler.rho": 0.05}``); "" for an ordinary run
    tuned: str = _outside_config("")
    #: the result column a study selects on (``val_acc``); "" for an ordinary run
    objective: str = _outside_config("")
    #: the pruning rule a trial runs under: JSON of the suite's ``tuning.pruner`` block (``{"name": "median",
    #: ...}``); "" for none. In the config only when set (a trial that may stop early is a different run).
    pruner: str = field(default="", metadata={"later": True})
    #: the trial's number in its Optuna study (what a pruned trial reports to); None outside a study
    trial_number: int | None = _outside_config(None)

    def config(self) -> dict[str, Any]:
        """The resolved configuration as plain JSON-able data: every field but the labels, each
        component as ``{"name": ..., **params}``, a later setting only where it is not its default."""
        config: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            meta, value = item.metadata, getattr(self, item.name)
            if not meta.get("in_config", True) or (meta.get("later") and value == _default(item)):
                continue
            if "params" in meta:
                value = {"name": value, **getattr(self, meta["params"])}
            elif "to_config" in meta:
                value = meta["to_config"](value)
            elif isinstance(value, Mapping):
                value = dict(value)
            config[item.name] = value
        return config

    def components(self) -> list[tuple[str, str]]:
        """``(kind, name)`` of every registered component the run builds."""
        used = [("optimizer", self.optimizer), ("scheduler", self.scheduler), ("model", self.model)]
        return [*used, ("dataset", self.dataset), *(("metric", name) for name, _ in self.metrics)]

    @property
    def run_id(self) -> str:
        """``<method>-s<seed>-<12 hex digits of the config hash>``: readable and unique."""
        digest = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.method}-s{self.seed}-{digest}"


def _settings(select: Callable[[dataclasses.Field], bool] = lambda item: True) -> dict[str, dataclasses.Field]:
    return {item.name: item for item in dataclasses.fields(RunSpec) if item.metadata.get("setting") and select(item)}


def _default(item: dataclasses.Field) -> Any:
    return item.default_factory() if item.default is dataclasses.MISSING else item.default


#: Every run setting and its default, in declaration order: the keys a suite's ``defaults:`` may set.
RUN_DEFAULTS: dict[str, Any] = {name: _default(item) for name, item in _settings().items()}
#: Settings added after the first release and their defaults (``setting(later=True)``).
LATER_SETTINGS: dict[str, Any] = {
    name: _default(item) for name, item in _settings(lambda i: i.metadata["later"]).items()
}
#: Settings that take one of a few values: ``(the values, what an error says they mean)``.
CHOICES: dict[str, tuple[tuple[Any, ...], str]] = {
    name: (item.metadata["choices"], item.metadata["expected"])
    for name, item in _settings(lambda i: bool(i.metadata["choices"])).items()
}


def run_payload(run: RunSpec) -> dict[str, Any]:
    """``run`` as plain JSON-able data (what crosses process and machine boundaries)."""
    payload = dataclasses.asdict(run)
    payload["metrics"] = [[name, dict(params)] for name, params in run.metrics]
    return json.loads(json.dumps(payload))


def run_from_payload(payload: Mapping[str, Any]) -> RunSpec:
    """The ``RunSpec`` that ``run_payload`` described."""
    fields = dict(payload)
    fields["metrics"] = tuple((name, dict(params)) for name, params in fields.get("metrics", ()))
    fields["references"] = tuple(ReferenceCell(**cell) for cell in fields.get("references", ()))
    return RunSpec(**fields)
