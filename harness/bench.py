"""``harness bench``: what one optimizer step of each method costs, against ERM and against others.

For one model and batch (synthetic random tensors of the model's input shape, held on the device),
every candidate gets its own copy of the same initial model and is stepped on the same batch:

- the presets (``erm``, ``sam``, ``looksam``, ``ae-sam``, ...), built through the registry exactly
  as ``harness.runner.build`` builds a run (base optimizer from timm's factory, scheduler,
  ``(name, parameter)`` pairs, ``total_steps``, ``lr_range``), and stepped exactly as the runner's
  training loop steps them: a new ``BatchClosure`` per step, ``optimizer.step(closure)``, the
  closure's ``finish()``, the timm learning-rate schedule's ``step_update``, the ``StepInfo``
  bookkeeping and the device-side loss sum;
- references (``REFERENCES``): kozistr's pytorch-optimizer ``SAM`` and ``GSAM`` (an optional
  dependency; skipped when it is not installed) with the same base optimizer class and
  hyperparameters, rho and alpha, and two bare hand-written PyTorch loops with the same base
  optimizer: ERM (zero_grad, forward, backward, step) and SAM (the textbook two passes with
  ``torch._foreach_*`` kernels and a persistent weight backup). The harness's overhead is the
  harness step over the bare step.

Timing (shared/STYLE.md's discipline): every candidate first takes ``warmup`` untimed steps (more
when its scheduler delays perturbation, so that timed steps are steady state); then ``repeats``
rounds, each timing one block of ``steps`` consecutive steps of every candidate, round-robin with
the order rotated every round, so drift (other load, clocks) hits all candidates alike. A block of
``steps`` steps (a multiple of LookSAM's and SAM-k's period k=5 by default) holds whole periods, so
the per-step time of a periodic method is its average. On CPU a block is timed with
``time.perf_counter``; on CUDA with a pair of CUDA events (resolved after each round, with
``cudnn.benchmark`` on). The step time
is the block time over ``steps``; the reported value is the median over rounds with the IQR. Ratios
(to ERM, to SAM, to a counterpart) are taken per round, between blocks of the same round, and the
median of those paired ratios is reported.

Each row also holds the theoretical ratio to ERM (1 + the share of steps with a second pass: 2.0
for SAM, GSAM and nuSAM; 1 + 1/k for LookSAM-k and SAM-k; 1 + the measured %SAM for the stochastic
AE-SAM and SS-SAM), the measured %SAM, gradient evaluations per step, throughput, the optimizer's
held bytes (``optimizer_state_bytes``) and those beyond its base optimizer's state, and on CUDA the
peak device memory of one step (measured in a separate phase, one candidate on the device at a
time).

Output: ``RESULTS_DIR/bench/<timestamp>-<config hash>.parquet`` (one row per candidate and setting:
model x threads), the same as Markdown (``.md``), and ``RESULTS_DIR/bench/bench.md`` (a copy of the
latest Markdown).
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import math
import os
import platform
import socket
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from harness.closure import BatchClosure, batchnorm_modules
from harness.errors import UsageError
from harness.optim import SharpnessAwareOptimizer, optimizer_state_bytes
from harness.plugins import Registry
from harness.precision import MODES, Precision, prepare_model
from harness.results import write_atomic

DEFAULT_METHODS = ("erm", "sam", "looksam", "sam-k", "ae-sam", "ss-sam", "gsam", "nusam")
#: Reference implementations: kozistr's pytorch-optimizer SAM and GSAM, bare hand-written loops.
REFERENCES = ("po-sam", "po-gsam", "bare-erm", "bare-sam")
#: The harness method each reference is compared with (harness time / reference time).
COUNTERPARTS = {"po-sam": "sam", "po-gsam": "gsam", "bare-erm": "erm", "bare-sam": "sam"}
#: The base optimizer every candidate shares unless ``preset_base`` (the suites' default).
COMMON_BASE = {"name": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4}
SAM_RHO = 0.05
MIB = 1024 * 1024


@dataclass
class BenchConfig:
    """What to measure. ``threads`` empty: the current ``torch.get_num_threads()`` (CPU only)."""

    model: str = "resnet18-cifar"
    model_params: dict[str, Any] = field(default_factory=dict)
    batch: int = 64
    methods: tuple[str, ...] = DEFAULT_METHODS
    references: tuple[str, ...] = REFERENCES
    threads: tuple[int, ...] = ()
    device: str = "cpu"
    repeats: int = 5
    warmup: int = 3
    steps: int = 5
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    preset_base: bool = False
    input_shape: tuple[int, ...] = (3, 32, 32)
    num_classes: int = 10
    seed: int = 0

    def check(self, registry: Registry) -> None:
        """Refuse bad settings before anything is built (``UsageError``)."""
        if self.batch < 1 or self.repeats < 1 or self.steps < 1 or self.warmup < 0:
            raise UsageError(
                f"bench: need batch, repeats and steps >= 1 and warmup >= 0, got batch={self.batch}, "
                f"repeats={self.repeats}, steps={self.steps}, warmup={self.warmup}"
            )
        if self.precision not in MODES:
            raise UsageError(f"bench: precision must be one of {MODES}, got {self.precision!r}")
        if any(t < 1 for t in self.threads):
            raise UsageError(f"bench: thread counts must be >= 1, got {list(self.threads)}")
        if not self.methods:
            raise UsageError("bench: no methods to measure")
        for name in self.methods:
            registry.get("preset", name)  # UnknownNameError (a HarnessError) with a suggestion
        registry.get("model", self.model)
        unknown = [name for name in self.references if name not in REFERENCES]
        if unknown:
            raise UsageError(f"bench: unknown reference(s) {unknown}; known: {', '.join(REFERENCES)}")
        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError("bench: --device cuda, but torch sees no CUDA device")


@dataclass
class Counters:
    steps: int = 0
    perturbed: int = 0
    evaluations: float = 0.0


@dataclass
class Candidate:
    """One thing to time: a ``step`` function over its own model copy and optimizer."""

    name: str
    kind: str  # preset | reference | bare
    step: Callable[[], None]
    optimizer: Any
    model: nn.Module
    base_optimizer: torch.optim.Optimizer
    optimizer_name: str = ""
    scheduler_name: str = ""
    base_settings: dict[str, Any] = field(default_factory=dict)
    expected_fraction: float | None = None  # share of steps with a second pass; None: measured
    warmup: int = 0
    counters: Counters = field(default_factory=Counters)
    extra_held: list[torch.Tensor] = field(default_factory=list)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere), for the record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{processor_name()} ({os.cpu_count()} CPUs)"


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _expected_fraction(scheduler: Any) -> float | None:
    """The share of steps a scheduler perturbs in steady state; None when only a measurement can tell."""
    kind = type(scheduler).__name__
    if kind in ("Constant", "LrLinked"):
        return 1.0
    if kind == "Never":
        return 0.0
    if kind == "Periodic":
        return 1.0 / scheduler.k
    if kind == "Delayed":
        return _expected_fraction(scheduler.inner)
    return None  # Adaptive, Bernoulli, third-party schedulers: 1 + measured %SAM


def _held_bytes(tensors: Sequence[torch.Tensor]) -> int:
    seen: dict[int, int] = {}
    for tensor in tensors:
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def _state_tensors(optimizer: Any) -> list[torch.Tensor]:
    return [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t)]


def held_bytes(candidate: Candidate) -> tuple[int, int]:
    """(bytes the optimizer holds between steps, of which beyond its base optimizer's state)."""
    base = _held_bytes(_state_tensors(candidate.base_optimizer))
    optimizer = candidate.optimizer
    if isinstance(optimizer, SharpnessAwareOptimizer):
        total = optimizer_state_bytes(optimizer)
    else:
        tensors = _state_tensors(candidate.base_optimizer) + candidate.extra_held
        if optimizer is not candidate.base_optimizer:
            tensors += _state_tensors(optimizer)
        total = _held_bytes(tensors)
    return total, total - base


class Bench:
    """Builds the candidates of one setting (model, device, precision) and times them."""

    def __init__(self, config: BenchConfig, registry: Registry, model_name: str | None = None) -> None:
        self.config = config
        self.registry = registry
        self.model_name = model_name or config.model
        self.device = torch.device(config.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input shape throughout: let cuDNN pick its kernels
            if self.device.index is not None:  # CUDA events record on the current device's stream
                torch.cuda.set_device(self.device)
        self.total_steps = config.warmup + config.repeats * config.steps
        torch.manual_seed(config.seed)
        self.template = registry.create(
            "model",
            self.model_name,
            num_classes=config.num_classes,
            input_shape=tuple(config.input_shape),
            **config.model_params,
        ).to(self.device)
        generator = torch.Generator().manual_seed(config.seed)
        inputs = torch.randn(config.batch, *config.input_shape, generator=generator).to(self.device)
        self.inputs = self._precision().prepare_inputs(inputs)  # converted once, for every candidate alike
        self.targets = torch.randint(0, config.num_classes, (config.batch,), generator=generator).to(self.device)
        self.notes: list[str] = []
        self.fractions: dict[str, list[float]] = {}

    # --- building -------------------------------------------------------------------------------

    def _model(self) -> tuple[nn.Module, nn.Module]:
        """(the module the optimizer is built from, the module to call) for a fresh copy."""
        module = copy.deepcopy(self.template).train()
        call = prepare_model(module, channels_last=self.config.channels_last, compile=self.config.compile)
        return module, call

    def _precision(self) -> Precision:
        return Precision(self.config.precision, self.device, channels_last=self.config.channels_last)

    def _base_settings(self, preset: Any) -> dict[str, Any]:
        if self.config.preset_base and preset is not None and preset.base_optimizer:
            return (
                {**COMMON_BASE, **preset.base_optimizer}
                if "name" not in preset.base_optimizer
                else dict(preset.base_optimizer)
            )
        return dict(COMMON_BASE)

    def preset(self, name: str) -> Candidate:
        """A preset built and stepped as the runner builds and steps a run."""
        from harness.runner import build_base_optimizer, build_lr_scheduler

        spec = self.registry.get("preset", name)
        module, call = self._model()
        settings = self._base_settings(spec)
        base_optimizer = build_base_optimizer(module, dict(settings))
        scheduler = self.registry.create("scheduler", spec.scheduler, **spec.scheduler_params)
        trained = {id(p) for group in base_optimizer.param_groups for p in group["params"]}
        params = [(n, p) for n, p in module.named_parameters() if id(p) in trained]
        optimizer = self.registry.create(
            "optimizer",
            spec.optimizer,
            params,
            base_optimizer=base_optimizer,
            scheduler=scheduler,
            **spec.optimizer_params,
        )
        optimizer.total_steps = self.total_steps
        optimizer.lr_range = (0.0, float(settings["lr"]))
        lr_scheduler = build_lr_scheduler(base_optimizer, {"name": "cosine"}, 1, self.total_steps)
        bn_modules = batchnorm_modules(module)
        model_params = list(module.parameters())
        precision = self._precision()
        counters = Counters()
        loss_sum = torch.zeros((), device=self.device)
        inputs, targets = self.inputs, self.targets

        def step() -> None:
            nonlocal loss_sum
            closure = BatchClosure(
                call, F.cross_entropy, inputs, targets, bn_modules, precision=precision, params=model_params
            )
            loss = optimizer.step(closure)
            closure.finish()
            lr_scheduler.step_update(num_updates=counters.steps + 1)
            info = optimizer.last_step
            counters.steps += 1
            counters.perturbed += int(info.perturbed)
            counters.evaluations += closure.evaluations
            loss_sum += loss

        warmup = self.config.warmup
        first_step = getattr(scheduler, "first_step", None)  # Delayed: time steady-state steps only
        if callable(first_step):
            warmup = max(warmup, int(first_step(self.total_steps)))
        return Candidate(
            name=name,
            kind="preset",
            step=step,
            optimizer=optimizer,
            model=module,
            base_optimizer=base_optimizer,
            optimizer_name=spec.optimizer,
            scheduler_name=spec.scheduler,
            base_settings=settings,
            expected_fraction=_expected_fraction(scheduler),
            warmup=warmup,
            counters=counters,
        )

    def reference(self, name: str) -> Candidate | None:
        """A reference implementation, or None (with a note) when it cannot run here."""
        if self.config.precision == "fp16":
            self.notes.append(f"{name}: not run with fp16 (no loss scaling in the references)")
            return None
        if name.startswith("po-"):
            try:
                import pytorch_optimizer
            except ImportError:
                self.notes.append(f"{name}: pytorch-optimizer is not installed (pip install pytorch-optimizer)")
                return None
            return self._kozistr(name, pytorch_optimizer)
        return self._bare(name)

    def _kozistr(self, name: str, po: Any) -> Candidate:
        from harness.runner import build_base_optimizer

        module, call = self._model()
        settings = self._base_settings(None)
        precision = self._precision()
        inputs, targets = precision.prepare_inputs(self.inputs), self.targets
        counters = Counters()
        if name == "po-sam":
            optimizer = kozistr_sam(po, module, settings)
            base_optimizer = optimizer.base_optimizer

            def closure() -> torch.Tensor:
                optimizer.zero_grad()
                with precision.autocast():
                    loss = F.cross_entropy(call(inputs), targets)
                loss.backward()
                return loss

            def step() -> None:
                closure()  # its step() expects the clean gradient already computed
                optimizer.step(closure)
                counters.steps += 1
                counters.perturbed += 1
                counters.evaluations += 2
        else:
            spec = self.registry.get("preset", "gsam")
            params = dict(spec.scheduler_params)
            base_optimizer = build_base_optimizer(module, dict(settings))
            lr = float(settings["lr"])
            rho = po.ProportionScheduler(
                types.SimpleNamespace(optimizer=base_optimizer),
                max_lr=lr,
                min_lr=0.0,
                max_value=params.get("rho_max", 0.04),
                min_value=params.get("rho_min", 0.02),
            )
            optimizer = po.GSAM(
                module.parameters(),
                base_optimizer=base_optimizer,
                model=call,
                rho_scheduler=rho,
                alpha=spec.optimizer_params.get("alpha", 0.01),
            )

            def step() -> None:
                optimizer.set_closure(F.cross_entropy, inputs, targets)
                with precision.autocast():
                    optimizer.step()
                optimizer.update_rho_t()
                counters.steps += 1
                counters.perturbed += 1
                counters.evaluations += 2

        return Candidate(
            name=name,
            kind="reference",
            step=step,
            optimizer=optimizer,
            model=module,
            base_optimizer=base_optimizer,
            optimizer_name=f"pytorch_optimizer.{type(optimizer).__name__}",
            base_settings=settings,
            expected_fraction=1.0,
            warmup=self.config.warmup,
            counters=counters,
        )

    def _bare(self, name: str) -> Candidate:
        from harness.runner import build_base_optimizer

        module, call = self._model()
        settings = self._base_settings(None)
        base_optimizer = build_base_optimizer(module, dict(settings))
        precision = self._precision()
        inputs, targets = precision.prepare_inputs(self.inputs), self.targets
        params = [p for group in base_optimizer.param_groups for p in group["params"]]
        counters = Counters()
        backup: list[torch.Tensor] = []

        def forward_backward() -> torch.Tensor:
            with precision.autocast():
                loss = F.cross_entropy(call(inputs), targets)
            loss.backward()
            return loss

        if name == "bare-erm":

            def step() -> None:
                base_optimizer.zero_grad(set_to_none=True)
                forward_backward()
                base_optimizer.step()
                counters.steps += 1
                counters.evaluations += 1
        else:
            backup = [torch.empty_like(p) for p in params]

            @torch.no_grad()
            def step() -> None:
                base_optimizer.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    forward_backward()
                grads = [p.grad for p in params]
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                torch._foreach_copy_(backup, params)
                torch._foreach_mul_(grads, SAM_RHO / (norm + 1e-12))
                torch._foreach_add_(params, grads)
                base_optimizer.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    forward_backward()
                torch._foreach_copy_(params, backup)
                base_optimizer.step()
                counters.steps += 1
                counters.perturbed += 1
                counters.evaluations += 2

        return Candidate(
            name=name,
            kind="bare",
            step=step,
            optimizer=base_optimizer,
            model=module,
            base_optimizer=base_optimizer,
            optimizer_name=f"bare loop, {type(base_optimizer).__name__}",
            base_settings=settings,
            expected_fraction=0.0 if name == "bare-erm" else 1.0,
            warmup=self.config.warmup,
            counters=counters,
            extra_held=backup,
        )

    def build(self, name: str) -> Candidate | None:
        return self.reference(name) if name in REFERENCES else self.preset(name)

    # --- measuring ------------------------------------------------------------------------------

    def peak_memory(self, names: Sequence[str]) -> dict[str, int]:
        """CUDA: peak bytes allocated by each candidate's model, state and step, one candidate at a time."""
        if self.device.type != "cuda":
            return {}
        peaks: dict[str, int] = {}
        # One throwaway step first: cuDNN's autotuning and cuBLAS's workspaces are allocated once and kept,
        # and would otherwise count in the first candidate's peak only.
        warm = self.build(names[0]) if names else None
        if warm is not None:
            warm.step()
        del warm
        for name in names:
            gc.collect()
            torch.cuda.empty_cache()
            _synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            candidate = self.build(name)
            if candidate is None:
                continue
            for _ in range(max(candidate.warmup, 1) + self.config.steps):
                candidate.step()
            _synchronize(self.device)
            peaks[name] = int(torch.cuda.max_memory_allocated(self.device) - before)
            del candidate
        gc.collect()
        torch.cuda.empty_cache()
        return peaks

    def time(self, candidates: list[Candidate], label: str = "") -> dict[str, list[float]]:
        """Per-step seconds of every candidate, one value per round (``time_rounds`` with this config).

        ``self.fractions[name]`` gets, per round, the share of that round's steps with a second pass.
        """
        config = self.config
        times, self.fractions = time_rounds(
            candidates, repeats=config.repeats, steps=config.steps, device=self.device, label=label
        )
        return times


def kozistr_sam(po: Any, module: nn.Module, settings: dict[str, Any]) -> Any:
    """pytorch-optimizer's ``SAM`` (module ``po``) over ``module`` with the base optimizer the runner builds
    from ``settings`` (timm's parameter groups, class and hyperparameters) and rho ``SAM_RHO``."""
    from harness.runner import build_base_optimizer

    shape = build_base_optimizer(module, dict(settings))
    groups = [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in shape.param_groups]
    options = {k: v for k, v in shape.defaults.items() if k != "weight_decay"}
    return po.SAM(groups, base_optimizer=type(shape), rho=SAM_RHO, **options)


def time_rounds(
    candidates: Sequence[Candidate], *, repeats: int, steps: int, device: torch.device, label: str = ""
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Time ``candidates`` as the module docstring says: per-step seconds, one value per round.

    Each candidate first takes its ``warmup`` steps; then ``repeats`` rounds, each timing a block of
    ``steps`` steps of every candidate, round-robin with the order rotated every round (CUDA events on
    a CUDA device, ``time.perf_counter`` otherwise). Returns (times, fractions): ``fractions[name]`` is,
    per round, the share of that round's steps with a second pass (from the candidate's counters).
    Progress (one line per round, labelled ``label``) goes to stderr.
    """
    candidates = list(candidates)
    began = time.perf_counter()
    _progress(f"{label}: warming up {len(candidates)} candidates")
    for candidate in candidates:  # warm-up, round-robin as well
        for _ in range(candidate.warmup):
            candidate.step()
        candidate.counters.steps = candidate.counters.perturbed = 0
        candidate.counters.evaluations = 0.0
    _synchronize(device)
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    fractions: dict[str, list[float]] = {c.name: [] for c in candidates}
    cuda = device.type == "cuda"
    for round_ in range(repeats):
        shift = round_ % len(candidates)
        order = candidates[shift:] + candidates[:shift]
        gc.collect()
        events = []
        for candidate in order:
            perturbed = candidate.counters.perturbed
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                # an empty queue first: queued work of the previous candidate would hide host overhead
                _synchronize(device)
                start.record()
                for _ in range(steps):
                    candidate.step()
                end.record()
                events.append((candidate.name, start, end))
            else:
                started = time.perf_counter()
                for _ in range(steps):
                    candidate.step()
                times[candidate.name].append((time.perf_counter() - started) / steps)
            fractions[candidate.name].append((candidate.counters.perturbed - perturbed) / steps)
        if cuda:
            _synchronize(device)
            for name, start, end in events:
                times[name].append(start.elapsed_time(end) / 1000.0 / steps)
        _progress(f"{label}: round {round_ + 1}/{repeats} timed ({time.perf_counter() - began:.0f} s)")
    return times, fractions


def _progress(line: str) -> None:
    print(f"bench {line}", file=sys.stderr, flush=True)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile (one value: that value three times)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def paired_ratio(times: dict[str, list[float]], numerator: str, denominator: str) -> tuple[float, float] | None:
    """Median and IQR of the per-round ratios ``numerator / denominator``; None if either is missing."""
    if numerator not in times or denominator not in times:
        return None
    ratios = [a / b for a, b in zip(times[numerator], times[denominator], strict=True) if b > 0]
    if not ratios:
        return None
    q1, median, q3 = quartiles(ratios)
    return median, q3 - q1


def _excess(
    times: dict[str, list[float]], name: str, erm: str, expected: float | None, fractions: Sequence[float]
) -> float | None:
    """Median over rounds of (ratio to ERM - theoretical ratio), the theory per round for measured fractions.

    AE-SAM's and SS-SAM's share of perturbed steps varies from round to round (AE-SAM's threshold moves
    with t/T), so each round's ratio is compared with 1 + that round's measured share.
    """
    if name not in times or erm not in times:
        return None
    values = []
    for r, (mine, base) in enumerate(zip(times[name], times[erm], strict=True)):
        fraction = expected if expected is not None else (fractions[r] if r < len(fractions) else None)
        if fraction is None or base <= 0:
            continue
        values.append(mine / base - (1.0 + fraction))
    return statistics.median(values) if values else None


def measure_setting(
    config: BenchConfig, registry: Registry, model_name: str, threads: int | None, bench_id: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per candidate) for one model and one thread count."""
    if threads is not None:
        torch.set_num_threads(threads)
    bench = Bench(config, registry, model_name)
    names = [*config.methods, *[r for r in config.references if r not in config.methods]]
    peaks = bench.peak_memory(names)
    load_before = _load()
    candidates = [c for c in (bench.build(name) for name in names) if c is not None]
    times = bench.time(candidates, f"{model_name}, {threads or torch.get_num_threads()} thread(s)")
    load_after = _load()
    device = bench.device
    parameters = sum(p.numel() for p in bench.template.parameters())
    started = datetime.now(timezone.utc)
    rows = []
    for candidate in candidates:
        name = candidate.name
        q1, median, q3 = quartiles(times[name])
        counters = candidate.counters
        fraction = counters.perturbed / counters.steps if counters.steps else None
        expected = candidate.expected_fraction if candidate.expected_fraction is not None else fraction
        erm = "erm" if "erm" in times else "bare-erm"
        to_erm = paired_ratio(times, name, erm)
        excess = _excess(times, name, erm, candidate.expected_fraction, bench.fractions.get(name, []))
        to_sam = paired_ratio(times, name, "sam")
        counterpart = COUNTERPARTS.get(name)
        versus = paired_ratio(times, counterpart, name) if counterpart else None
        state_bytes, extra_bytes = held_bytes(candidate)
        rows.append(
            {
                "bench_id": bench_id,
                "model": model_name,
                "parameters": parameters,
                "batch_size": config.batch,
                "device": str(device),
                "device_name": device_name(device),
                "threads": torch.get_num_threads() if device.type == "cpu" else None,
                "precision": config.precision,
                "channels_last": config.channels_last,
                "compiled": config.compile,
                "method": name,
                "kind": candidate.kind,
                "optimizer": candidate.optimizer_name,
                "scheduler": candidate.scheduler_name,
                "base_optimizer": json.dumps(candidate.base_settings, sort_keys=True),
                "repeats": config.repeats,
                "warmup": candidate.warmup,
                "steps_per_repeat": config.steps,
                "step_time_median_s": median,
                "step_time_q1_s": q1,
                "step_time_q3_s": q3,
                "step_time_iqr_s": q3 - q1,
                "ratio_to_erm": to_erm[0] if to_erm else None,
                "ratio_to_erm_iqr": to_erm[1] if to_erm else None,
                "ratio_to_sam": to_sam[0] if to_sam else None,
                "theoretical_ratio": 1.0 + expected if expected is not None else None,
                "excess_over_theory": excess,
                "sam_fraction": fraction,
                "grad_evals_per_step": counters.evaluations / counters.steps if counters.steps else None,
                "throughput_samples_per_s": config.batch / median if median > 0 else None,
                "optimizer_state_bytes": state_bytes,
                "extra_state_bytes": extra_bytes,
                "peak_device_bytes": peaks.get(name),
                "counterpart": counterpart,
                "counterpart_ratio": versus[0] if versus else None,
                "counterpart_ratio_iqr": versus[1] if versus else None,
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "host": socket.gethostname(),
                "torch_version": torch.__version__,
                "started_at": started,
            }
        )
    notes = list(dict.fromkeys(bench.notes))
    del candidates, bench
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, notes


BENCH_SCHEMA = pa.schema(
    [
        ("bench_id", pa.string()),
        ("model", pa.string()),
        ("parameters", pa.int64()),
        ("batch_size", pa.int64()),
        ("device", pa.string()),
        ("device_name", pa.string()),
        ("threads", pa.int64()),
        ("precision", pa.string()),
        ("channels_last", pa.bool_()),
        ("compiled", pa.bool_()),
        ("method", pa.string()),
        ("kind", pa.string()),
        ("optimizer", pa.string()),
        ("scheduler", pa.string()),
        ("base_optimizer", pa.string()),
        ("repeats", pa.int64()),
        ("warmup", pa.int64()),
        ("steps_per_repeat", pa.int64()),
        ("step_time_median_s", pa.float64()),
        ("step_time_q1_s", pa.float64()),
        ("step_time_q3_s", pa.float64()),
        ("step_time_iqr_s", pa.float64()),
        ("ratio_to_erm", pa.float64()),
        ("ratio_to_erm_iqr", pa.float64()),
        ("ratio_to_sam", pa.float64()),
        ("theoretical_ratio", pa.float64()),
        ("excess_over_theory", pa.float64()),
        ("sam_fraction", pa.float64()),
        ("grad_evals_per_step", pa.float64()),
        ("throughput_samples_per_s", pa.float64()),
        ("optimizer_state_bytes", pa.int64()),
        ("extra_state_bytes", pa.int64()),
        ("peak_device_bytes", pa.int64()),
        ("counterpart", pa.string()),
        ("counterpart_ratio", pa.float64()),
        ("counterpart_ratio_iqr", pa.float64()),
        ("load_avg_before", pa.float64()),
        ("load_avg_after", pa.float64()),
        ("host", pa.string()),
        ("torch_version", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
    ]
)


# --- targets and Markdown -----------------------------------------------------------------------


def _row(rows: Sequence[dict[str, Any]], method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method), None)


def targets(rows: Sequence[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(what, measured, limit) for each target of the performance issue that these rows can check."""
    checks: list[tuple[str, float, float]] = []
    cuda = bool(rows) and rows[0]["device"].startswith("cuda")

    def ratio(method: str, column: str) -> float | None:
        row = _row(rows, method)
        return None if row is None else row[column]

    sam = ratio("sam", "ratio_to_erm")
    if sam is not None:
        checks.append(("sam / erm", sam, 2.03 if cuda else 2.05))
    looksam = _row(rows, "looksam")
    if looksam is not None and looksam["ratio_to_erm"] is not None:
        checks.append(("looksam (k=5) / erm", looksam["ratio_to_erm"], 1.25))
    aesam = _row(rows, "ae-sam")
    if aesam is not None and aesam.get("excess_over_theory") is not None and aesam["sam_fraction"] is not None:
        # ratio <= 1 + %SAM + 0.05, checked per round with each round's own %SAM, as the excess over 1 + %SAM
        checks.append(
            (
                f"ae-sam / erm - (1 + %SAM) (%SAM = {aesam['sam_fraction']:.0%} overall)",
                aesam["excess_over_theory"],
                0.05,
            )
        )
    for method, limit in (("gsam", 1.03), ("nusam", 1.05)):
        value = ratio(method, "ratio_to_sam")
        if value is not None:
            checks.append((f"{method} / sam", value, limit))
    for reference, label, limit in (
        ("po-sam", "sam / pytorch-optimizer SAM", 1.0),
        ("po-gsam", "gsam / pytorch-optimizer GSAM", 1.0),
        ("bare-erm", "harness erm / bare ERM loop (overhead)", 1.03),
        ("bare-sam", "harness sam / bare SAM loop (overhead)", 1.03),
    ):
        value = ratio(reference, "counterpart_ratio")
        if value is not None:
            checks.append((label, value, limit))
    sam_row, nusam_row = _row(rows, "sam"), _row(rows, "nusam")
    if sam_row and nusam_row and sam_row["extra_state_bytes"]:
        checks.append(
            ("nusam extra optimizer state / sam's", nusam_row["extra_state_bytes"] / sam_row["extra_state_bytes"], 0.01)
        )
    return checks


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def markdown(rows: Sequence[dict[str, Any]], config: BenchConfig, notes: Sequence[str] = ()) -> str:
    """The bench report: one table per setting (model x threads), with the targets it can check."""
    if not rows:
        return "# harness bench\n\nNothing was measured.\n"
    first = rows[0]
    lines = [
        "# harness bench",
        "",
        f"Device: {first['device_name']} ({first['device']}); torch {first['torch_version']}; host "
        f"{first['host']}; precision {config.precision}"
        f"{', channels_last' if config.channels_last else ''}{', torch.compile' if config.compile else ''}; "
        f"batch {config.batch}; {config.repeats} rounds of {config.steps} steps per candidate after "
        f"{config.warmup} warm-up steps, interleaved; base optimizer "
        f"{'per preset' if config.preset_base else json.dumps(COMMON_BASE)} for every candidate.",
        "",
        "Step time: median over rounds (IQR). Ratios: median of per-round paired ratios. Theory: 1 + share of "
        "steps with a second pass (measured %SAM for stochastic schedulers); excess: median over rounds of "
        "(ratio to ERM - theory), each round with its own %SAM. Extra state: held bytes beyond the base "
        "optimizer's.",
    ]
    settings: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        settings.setdefault((row["model"], row["threads"]), []).append(row)
    for (model, threads), group in settings.items():
        load = group[0]["load_avg_before"], group[0]["load_avg_after"]
        title = f"## {model} ({group[0]['parameters']:,} parameters), batch {group[0]['batch_size']}"
        if threads is not None:
            title += f", {threads} thread{'s' if threads != 1 else ''}"
        lines += [
            "",
            title,
            "",
            f"Load average (1 min) {_fmt(load[0], '.2f')} before, {_fmt(load[1], '.2f')} after.",
            "",
            "| method | step ms | IQR ms | / erm | theory | excess | / sam | %SAM | img/s | state MiB | extra MiB "
            "| peak MiB | vs counterpart |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in group:
            versus = ""
            if row["counterpart_ratio"] is not None:
                versus = f"{row['counterpart']} / {row['method']} = {row['counterpart_ratio']:.3f}"
            lines.append(
                f"| {row['method']} | {row['step_time_median_s'] * 1e3:.1f} | {row['step_time_iqr_s'] * 1e3:.1f} | "
                f"{_fmt(row['ratio_to_erm'], '.3f')} | {_fmt(row['theoretical_ratio'], '.2f')} | "
                f"{_fmt(row.get('excess_over_theory'), '+.3f')} | "
                f"{_fmt(row['ratio_to_sam'], '.3f')} | {_fmt(row['sam_fraction'], '.0%')} | "
                f"{_fmt(row['throughput_samples_per_s'], '.1f')} | {row['optimizer_state_bytes'] / MIB:.2f} | "
                f"{row['extra_state_bytes'] / MIB:.2f} | "
                f"{_fmt(None if row['peak_device_bytes'] is None else row['peak_device_bytes'] / MIB, '.0f')} | "
                f"{versus} |"
            )
        checks = targets(group)
        if checks:
            lines += ["", "| target | measured | limit | met |", "| --- | ---: | ---: | --- |"]
            for what, value, limit in checks:
                lines.append(f"| {what} | {value:.3f} | {limit:.3f} | {'yes' if value <= limit else 'NO'} |")
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


@dataclass
class BenchResult:
    rows: list[dict[str, Any]]
    markdown: str
    files: list[Path]


def run_bench(
    config: BenchConfig,
    results_dir: str | Path = "results",
    models: Sequence[str] | None = None,
    registry: Registry | None = None,
) -> BenchResult:
    """Measure every (model, thread count) setting, write Parquet and Markdown, return the rows."""
    registry = registry or Registry.from_plugins()
    models = list(models or [config.model])
    for model in models:
        BenchConfig(**{**asdict(config), "model": model}).check(registry)
    device = torch.device(config.device)
    thread_counts: list[int | None] = list(config.threads) if device.type == "cpu" and config.threads else [None]
    digest = hashlib.sha1(
        json.dumps({**asdict(config), "models": models}, sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    bench_id = f"{stamp}-{digest}"
    previous_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for model in models:
            for threads in thread_counts:
                setting_rows, setting_notes = measure_setting(config, registry, model, threads, bench_id)
                rows += setting_rows
                notes += setting_notes
    finally:
        torch.set_num_threads(previous_threads)
    text = markdown(rows, config, list(dict.fromkeys(notes)))
    folder = Path(results_dir) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in BENCH_SCHEMA.names} for row in rows], schema=BENCH_SCHEMA
    )
    parquet = folder / f"{bench_id}.parquet"
    write_atomic(table, parquet)
    report = folder / f"{bench_id}.md"
    report.write_text(text)
    latest = folder / "bench.md"
    latest.write_text(text)
    return BenchResult(rows=rows, markdown=text, files=[parquet, report, latest])
