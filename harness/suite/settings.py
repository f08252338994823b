"""A suite's run settings (its ``defaults:`` block), base optimizer and learning-rate schedule, checked.

``run_settings`` merges ``defaults:`` over ``harness.contract.run_spec.RUN_DEFAULTS`` and checks each value;
``base_optimizer`` checks a base optimizer block (the suite's, or a method's over the suite's). A
timm optimizer name is checked against the names timm's source declares, without importing timm
(``harness.suite.lazy_check.declared_timm_optimizers``); only an undeclared name imports it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from harness.contract.run_spec import CHOICES, RUN_DEFAULTS
from harness.errors import did_you_mean
from harness.suite.checks import MISSING, Checker
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
    defaults = checker.mapping("defaults", raw)
    checker.keys("defaults", defaults, list(RUN_DEFAULTS))
    settings = {**RUN_DEFAULTS, **defaults}
    for key in ("epochs", "batch_size", "eval_batch_size", "metric_batches", "metric_batch_size"):
        settings[key] = checker.integer(f"defaults.{key}", settings[key], 1)
    settings["metric_every"] = checker.integer("defaults.metric_every", settings["metric_every"], 0)
    settings["trace_every"] = checker.integer("defaults.trace_every", settings["trace_every"], 0)
    settings["checkpoint_every"] = checker.integer("defaults.checkpoint_every", settings["checkpoint_every"], 0)
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
    settings["label_smoothing"] = checker.number(
        "defaults.label_smoothing", settings["label_smoothing"], 0.0, below=1.0
    )
    settings["l2_in_loss"] = checker.number("defaults.l2_in_loss", settings["l2_in_loss"], 0.0)
    if settings["target_acc"] is not None:
        settings["target_acc"] = checker.number("defaults.target_acc", settings["target_acc"], 0.0, below=1.0 + 1e-9)
    if not isinstance(settings["device"], str) or not _DEVICE.match(settings["device"]):
        raise checker.fail("defaults.device", settings["device"], "auto, cpu, cuda, cuda:N or mps")
    base = settings["base_optimizer"]
    settings["base_optimizer"] = base_optimizer(
        checker, "defaults.base_optimizer", base, _inherit(base, "base_optimizer")
    )
    lr_schedule = settings["lr_schedule"]
    if isinstance(lr_schedule, Mapping):
        lr_schedule = {**_inherit(lr_schedule, "lr_schedule"), **lr_schedule}
    settings["lr_schedule"] = _lr_schedule(checker, "defaults.lr_schedule", lr_schedule)
    return settings


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
