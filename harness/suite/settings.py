"""A suite's run settings (its ``defaults:`` block), base optimizer and learning-rate schedule, checked.

``run_settings`` merges ``defaults:`` over ``harness.contract.run_spec.RUN_DEFAULTS`` and checks each value;
``base_optimizer`` checks a base optimizer block (the suite's, or a method's over the suite's). A
timm optimizer name is checked against the names timm's source declares, without importing timm
(``harness.suite.lazy_check.declared_timm_optimizers``); only an undeclared name imports it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

from harness.contract.run_spec import CHOICES, RUN_DEFAULTS
from harness.errors import did_you_mean
from harness.suite.checks import MISSING, Checker, Problems
from harness.suite.lazy_check import declared_timm_optimizers

BASE_OPTIMIZER_KEYS = ("name", "lr", "weight_decay", "momentum", "betas", "eps", "filter_bias_and_bn")
LR_SCHEDULES = ("cosine", "constant", "step", "multistep", "tanh", "poly")
LR_SCHEDULE_KEYS = (
    "name",
    "warmup_epochs",
    "warmup_steps",
    "warmup_lr",
    "min_lr",
    "decay_rate",
    "decay_epochs",
    "decay_milestones",
)
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps)$")


def run_settings(checker: Checker, raw: Any) -> dict[str, Any]:
    """The ``defaults:`` block merged over ``RUN_DEFAULTS``, each setting checked. Raises one ``SuiteError``
    listing every bad setting (each is checked on its own, ``Problems``), then refuses bad combinations."""
    defaults = checker.mapping("defaults", raw)
    problems = Problems(checker)
    with problems.check():
        checker.keys("defaults", defaults, list(RUN_DEFAULTS))
    settings = {**RUN_DEFAULTS, **defaults}
    for key, check in _setting_checks(checker).items():
        with problems.check():
            settings[key] = check(f"defaults.{key}", settings[key])
    problems.raise_any()
    if settings["precision"] == "fp16" and settings["nproc"] > 1 and settings["perturbation_scope"] == "local":
        raise checker.fail(
            "defaults.precision",
            "fp16",
            "fp32 or bf16 with nproc > 1 and perturbation_scope: local (each rank would decide on its own whether "
            "its unsynchronized first pass overflowed, and the ranks would part ways)",
        )
    if settings["swa_lr"] is not None and settings["swa_start"] is None:
        raise checker.fail(
            "defaults.swa_lr", settings["swa_lr"], "null unless swa_start is set (the rate SWA holds while it averages)"
        )
    return settings


def _setting_checks(checker: Checker) -> dict[str, Callable[[str, Any], Any]]:
    """Each run setting's check, ``check(key path, value) -> checked value``, in the order errors list them."""

    def counting(minimum: int) -> Callable[[str, Any], int]:
        return lambda key, value: checker.integer(key, value, minimum)

    def choice(allowed: tuple[Any, ...], expected: str) -> Callable[[str, Any], Any]:
        def check(key: str, value: Any) -> Any:
            if value not in allowed:
                raise checker.fail(key, value, expected)
            return value

        return check

    def device(key: str, value: Any) -> str:
        if not isinstance(value, str) or not _DEVICE.match(value):
            raise checker.fail(key, value, "auto, cpu, cuda, cuda:N or mps")
        return value

    def lr_schedule(key: str, value: Any) -> dict[str, Any]:
        return _lr_schedule(
            checker, key, {**_inherit(value, "lr_schedule"), **value} if isinstance(value, Mapping) else value
        )

    checks: dict[str, Callable[[str, Any], Any]] = {
        key: counting(1) for key in ("epochs", "batch_size", "eval_batch_size", "metric_batches", "metric_batch_size")
    }
    checks |= {key: counting(0) for key in ("metric_every", "trace_every", "checkpoint_every", "micro_batch_size")}
    checks["nproc"] = counting(1)
    checks |= {key: choice(allowed, expected) for key, (allowed, expected) in CHOICES.items()}
    checks |= {key: checker.boolean for key, default in RUN_DEFAULTS.items() if isinstance(default, bool)}
    checks["grad_clip_norm"] = _optional(lambda key, value: checker.number(key, value, 0.0, strict=True))
    checks["label_smoothing"] = lambda key, value: checker.number(key, value, 0.0, below=1.0)
    checks["l2_in_loss"] = lambda key, value: checker.number(key, value, 0.0)
    checks["swa_start"] = _optional(lambda key, value: checker.number(key, value, 0.0, below=1.0))
    checks["swa_lr"] = _optional(lambda key, value: checker.number(key, value, 0.0, strict=True))
    checks["target_acc"] = _optional(lambda key, value: checker.number(key, value, 0.0, below=1.0 + 1e-9))
    checks["device"] = device
    checks["base_optimizer"] = lambda key, value: base_optimizer(checker, key, value, _inherit(value, "base_optimizer"))
    checks["lr_schedule"] = lr_schedule
    return checks


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    """``check`` for a setting that may also be null (None: the setting is off)."""
    return lambda key, value: None if value is None else check(key, value)


def _inherit(value: Any, key: str) -> dict[str, Any]:
    """The built-in default block when ``value`` is a partial block without a name, else nothing."""
    return dict(RUN_DEFAULTS[key]) if isinstance(value, Mapping) and "name" not in value else {}


def base_optimizer(checker: Checker, key: str, raw: Any, inherited: Mapping[str, Any] | None) -> dict[str, Any]:
    if isinstance(raw, str):
        raw = {"name": raw}
    value = checker.mapping(key, raw)
    checker.keys(key, value, BASE_OPTIMIZER_KEYS)
    if inherited and "name" in value and value["name"] != inherited.get("name"):
        # another optimizer: its settings (momentum, betas, ...) do not carry over; only lr does
        inherited = {"lr": inherited["lr"]} if "lr" in inherited else None
    merged = {**(inherited or {}), **value}
    if "name" not in merged:
        raise checker.fail(f"{key}.name", MISSING, "a base optimizer name from timm (momentum, sgd, adamw, lamb, ...)")
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
        raise checker.fail(f"{key}.lr", MISSING, "a learning rate > 0")
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
    ``harness.suite.lazy_check.declared_timm_optimizers``)."""
    from timm.optim import list_optimizers

    return tuple(list_optimizers())


def _lr_schedule(checker: Checker, key: str, raw: Any) -> dict[str, Any]:
    value = checker.mapping(key, raw)
    checker.keys(key, value, LR_SCHEDULE_KEYS)
    name = value.get("name", MISSING)
    if name not in LR_SCHEDULES:
        hint = did_you_mean(str(name), LR_SCHEDULES) if isinstance(name, str) else ""
        raise checker.fail(f"{key}.name", name, f"one of {', '.join(LR_SCHEDULES)}{hint}")
    for number_key in ("warmup_epochs", "warmup_lr", "min_lr", "decay_rate", "decay_epochs"):
        if number_key in value:
            checker.number(f"{key}.{number_key}", value[number_key], 0.0)
    if "warmup_steps" in value:  # LookSAM Table 11 gives its warm-up in steps (seed_looksam_aesam.md A.4.2)
        checker.integer(f"{key}.warmup_steps", value["warmup_steps"], 0)
        if "warmup_epochs" in value:
            raise checker.fail(f"{key}.warmup_steps", value["warmup_steps"], "warmup_steps or warmup_epochs, not both")
    if "decay_milestones" in value:
        milestones = value["decay_milestones"]
        if not isinstance(milestones, list) or not milestones:
            raise checker.fail(
                f"{key}.decay_milestones", milestones, "a non-empty list of epochs, for example [30, 60]"
            )
        for i, epoch in enumerate(milestones):
            checker.number(f"{key}.decay_milestones[{i}]", epoch, 0.0)
    return value
