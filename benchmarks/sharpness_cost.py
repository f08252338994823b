"""What the sharpness metrics of ``harness_sharpness`` cost, and ``hessian_max_eig`` against PyHessian.

Part 1 runs ``hessian_max_eig`` and PyHessian's power iteration (``pip install pyhessian``; Yao et al. 2020)
on the same model and batch with the same budget (100 iterations, relative tolerance 1e-3) and compares the
eigenvalues (they should agree within 1%), the seconds and the Hessian-vector products each took. Without
PyHessian it compares with the exact Hessian of a small model instead.

Part 2 times every sharpness metric with its default budget on ResNet-18 (CIFAR stem, ``resnet18-cifar``
from ``harness_vision``) on CIFAR-shaped random inputs, on the CPU unless ``--device`` says otherwise. When
a metric's default budget would take longer than ``--limit-s`` seconds (estimated from one timed
Hessian-vector product), its budget is cut to fit and the table says so. Work is counted, not assumed:
forward passes are calls of the loss function, backward passes are gradients reaching the loss, and
Hessian-vector products come from the metrics' own columns.

Writes a Markdown table to ``benchmarks/results/sharpness_cost.md`` and the raw figures beside it as JSON
(``--name`` changes the file names, e.g. for a GPU run), with the machine's load average before and after.

    python benchmarks/sharpness_cost.py [--batches 2] [--batch-size 32] [--limit-s 120] [--device cpu]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from harness_sharpness.functional import HessianOperator, LossSurface
from torch.nn import functional as F

from harness.machine import processor_name
from harness.plugins import Registry
from harness.run.timing import synchronize

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("hessian_max_eig", "hessian_trace", "sam_sharpness", "surrogate_gap", "grad_stats")
HVP_BUDGETS = {"hessian_max_eig": "max_iterations", "hessian_trace": "samples"}


class CountingLoss:
    """Cross-entropy that counts its calls (forward passes) and the gradients that reach it (backward passes)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.forward += 1
        loss = F.cross_entropy(logits, targets)
        if loss.requires_grad:
            loss.register_hook(self._count_backward)
        return loss

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1


def timed(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    result = work()
    synchronize(device)
    return result, time.perf_counter() - start


def random_batches(count: int, size: int, shape: tuple[int, ...], device: torch.device, seed: int) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (
            torch.randn(size, *shape, generator=generator).to(device),
            torch.randint(0, 10, (size,), generator=generator).to(device),
        )
        for _ in range(count)
    ]


def versus_pyhessian(registry: Registry, device: torch.device, seed: int) -> dict[str, Any]:
    """Top Hessian eigenvalue of one small CNN and batch by ``hessian_max_eig`` and by PyHessian."""
    torch.manual_seed(seed)
    model = registry.create("model", "small-cnn", num_classes=10, input_shape=(3, 32, 32), channels=16).to(device)
    batch = random_batches(1, 128, (3, 32, 32), device, seed)[0]
    model.eval()
    columns, ours_s = timed(
        device, lambda: registry.create("metric", "hessian_max_eig")(model, [batch], F.cross_entropy)
    )
    row = {
        "model": "small-cnn (channels=16, BatchNorm), input 3x32x32, one batch of 128",
        "parameters": sum(p.numel() for p in model.parameters()),
        "ours": {"eigenvalue": columns["hessian_max_eig"], "seconds": ours_s, "hvps": columns["hessian_max_eig_hvps"]},
    }
    try:
        pyhessian_module = importlib.import_module("pyhessian.hessian")  # the module (the package exports the class)
    except ImportError as error:
        row["reference"] = exact_reference(registry, seed)
        row["pyhessian_error"] = f"{type(error).__name__}: {error}"
        return row
    products = {"count": 0}
    original = pyhessian_module.hessian_vector_product

    def counted(*args: Any, **kwargs: Any) -> Any:
        products["count"] += 1
        return original(*args, **kwargs)

    pyhessian_module.hessian_vector_product = counted
    try:
        torch.manual_seed(seed)

        def run_pyhessian() -> float:
            computer = pyhessian_module.hessian(model, F.cross_entropy, data=batch, cuda=device.type == "cuda")
            return computer.eigenvalues(maxIter=100, tol=1e-3, top_n=1)[0][0]

        value, seconds = timed(device, run_pyhessian)
    finally:
        pyhessian_module.hessian_vector_product = original
        model.zero_grad(set_to_none=True)  # PyHessian leaves .grad populated (it calls loss.backward)
    row["pyhessian"] = {"eigenvalue": float(value), "seconds": seconds, "hvps": products["count"]}
    row["relative_difference"] = abs(row["ours"]["eigenvalue"] - value) / abs(value)
    return row


def exact_reference(registry: Registry, seed: int) -> dict[str, Any]:
    """Fallback without PyHessian: ``hessian_max_eig`` against the exact Hessian of a small MLP."""
    from torch.func import functional_call

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(), torch.nn.Linear(24, 10)).double()
    inputs, targets = torch.randn(64, 16, dtype=torch.float64), torch.randint(0, 10, (64,))
    names = [name for name, _ in model.named_parameters()]
    shapes = [param.shape for param in model.parameters()]
    point = torch.cat([param.detach().reshape(-1) for param in model.parameters()])

    def loss(vector: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(vector, [math.prod(shape) for shape in shapes])
        params = {name: piece.view(shape) for name, piece, shape in zip(names, pieces, shapes, strict=True)}
        return F.cross_entropy(functional_call(model, params, (inputs,)), targets)

    eigenvalues = torch.linalg.eigvalsh(torch.autograd.functional.hessian(loss, point))
    exact = float(eigenvalues[eigenvalues.abs().argmax()])
    metric = registry.create("metric", "hessian_max_eig")
    columns = metric(model, [(inputs, targets)], F.cross_entropy)
    return {"exact": exact, "ours": columns["hessian_max_eig"], "hvps": columns["hessian_max_eig_hvps"]}


def seconds_per_hvp(model: torch.nn.Module, batches: list, device: torch.device) -> float:
    """Median of three timed Hessian-vector products over all batches, after a warm-up one.

    With several batches every product rebuilds each batch's graph, as ``hessian_max_eig`` does; Hutchinson
    builds it once per batch for all its samples, so this overestimates ``hessian_trace``'s cost per sample.
    """
    operator = HessianOperator(LossSurface(model, batches, F.cross_entropy))
    vector = torch.randn(operator.surface.size, dtype=torch.float64, device=device)
    operator(vector)
    return statistics.median(timed(device, lambda: operator(vector))[1] for _ in range(3))


def metric_costs(registry: Registry, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """Every metric with its default budget (cut to ``--limit-s`` where needed) on ResNet-18."""
    torch.manual_seed(args.seed)
    model = registry.create("model", "resnet18-cifar", num_classes=10, input_shape=(3, 32, 32)).to(device).eval()
    batches = random_batches(args.batches, args.batch_size, (3, 32, 32), device, args.seed)
    hvp_s = seconds_per_hvp(model, batches, device)
    rows = []
    for name in METRICS:
        spec = registry.get("metric", name)
        params = dict(spec.defaults)
        note = "default budget"
        knob = HVP_BUDGETS.get(name)
        if knob is not None and params[knob] * hvp_s > args.limit_s:
            params[knob] = max(2, int(args.limit_s / hvp_s))
            note = f"{knob} cut from {spec.defaults[knob]} to {params[knob]} (~{args.limit_s:.0f} s limit)"
        loss = CountingLoss()
        metric = registry.create("metric", name, **params)
        columns, seconds = timed(device, lambda metric=metric, loss=loss: metric(model, batches, loss))
        rows.append(
            {
                "metric": name,
                "params": params,
                "note": note,
                "seconds": seconds,
                "forward_passes": loss.forward,
                "backward_passes": loss.backward,
                "hvps": columns.get(f"{name}_hvps"),
                "columns": columns,
            }
        )
        print(f"  {name}: {seconds:.1f} s ({note})", flush=True)
    return {
        "model": "resnet18-cifar",
        "parameters": sum(p.numel() for p in model.parameters()),
        "batches": args.batches,
        "batch_size": args.batch_size,
        "seconds_per_hvp": hvp_s,
        "rows": rows,
    }


def headline(name: str, columns: dict[str, Any]) -> str:
    """The metric's value with what qualifies it."""
    if name == "hessian_max_eig":
        return (
            f"{columns[name]:.4g} ({columns[name + '_iterations']} iterations, "
            f"{'converged' if columns[name + '_converged'] else 'not converged'})"
        )
    if name == "hessian_trace":
        return f"{columns[name]:.4g} ± {columns[name + '_stderr']:.2g}"
    if name == "sam_sharpness":
        return f"{columns[name]:.4g} (error {columns[name + '_error']:+.3f})"
    if name == "surrogate_gap":
        return f"{columns[name]:.4g} (2h/rho^2 = {columns[name + '_eig_estimate']:.4g})"
    return (
        f"E‖g_B‖² = {columns[name + '_mean_sq_norm']:.4g}, ‖g_D‖² = {columns[name + '_full_sq_norm']:.4g}, "
        f"variance = {columns[name + '_variance']:.4g}"
    )


def _versus_row(label: str, figures: dict[str, Any]) -> str:
    per_product = figures["seconds"] / max(figures["hvps"], 1)
    return (
        f"| {label} | {figures['eigenvalue']:.5g} | {figures['seconds']:.2f} | {figures['hvps']} | {per_product:.3f} |"
    )


def _load(values: list[float] | None) -> str:
    return "unknown" if values is None else "/".join(f"{value:.1f}" for value in values)


def load_average() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    versus = report["versus_pyhessian"]
    lines = [
        "# Cost of the sharpness metrics",
        "",
        f"Machine: {env['processor']}, {env['cpus']} CPUs, torch {env['torch']} with {env['threads']} threads, "
        f"device {env['device']}. Timings are single runs; other processes may have shared the machine: its load "
        f"average (1, 5, 15 minutes) was {_load(env['load_before'])} at the start and {_load(env['load_after'])} "
        "at the end.",
        "",
        "## hessian_max_eig against PyHessian",
        "",
        f"{versus['model']}, {versus['parameters']:,} parameters; both with 100 iterations at most and relative "
        "tolerance 1e-3, from different random start vectors.",
        "",
        "| implementation | top eigenvalue | seconds | Hessian-vector products | seconds per product |",
        "| --- | ---: | ---: | ---: | ---: |",
        _versus_row("harness_sharpness", versus["ours"]),
    ]
    if "pyhessian" in versus:
        ref = versus["pyhessian"]
        lines += [
            _versus_row("PyHessian 0.1", ref),
            "",
            f"Relative difference: {versus['relative_difference']:.2e}.",
        ]
    else:
        ref = versus["reference"]
        lines += [
            "",
            f"PyHessian unavailable ({versus['pyhessian_error']}). Instead, on an MLP 16-24-10 in float64: exact "
            f"largest-magnitude eigenvalue {ref['exact']:.6g}, hessian_max_eig {ref['ours']:.6g} "
            f"(relative difference {abs(ref['ours'] - ref['exact']) / abs(ref['exact']):.2e}, {ref['hvps']} products).",
        ]
    costs = report["metric_costs"]
    lines += [
        "",
        f"## Every metric on ResNet-18 ({costs['parameters']:,} parameters), {costs['batches']} batch(es) of "
        f"{costs['batch_size']}, 3x32x32",
        "",
        f"One Hessian-vector product over the batches took {costs['seconds_per_hvp']:.2f} s (median of 3); "
        "budgets that would exceed the limit at that rate were cut.",
        "",
        "| metric | budget | value | seconds | forward passes | backward passes | Hessian-vector products |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in costs["rows"]:
        budget = ", ".join(f"{key}={value}" for key, value in row["params"].items()) or "-"
        if row["note"] != "default budget":
            budget += f" ({row['note']})"
        hvps = "-" if row["hvps"] is None else str(row["hvps"])
        lines.append(
            f"| {row['metric']} | {budget} | {headline(row['metric'], row['columns'])} | {row['seconds']:.1f} | "
            f"{row['forward_passes']} | {row['backward_passes']} | {hvps} |"
        )
    lines += [
        "",
        "Forward and backward passes are per batch; a Hessian-vector product is one extra (double) backward "
        "pass. hessian_max_eig rebuilds each batch's first-order graph per product unless there is one batch; "
        "hessian_trace builds it once per batch.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit-s", type=float, default=120.0, help="cut a metric's budget to fit this many seconds")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="sharpness_cost", help="file names: NAME.md and NAME.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    registry = Registry.from_plugins()
    load_before = load_average()
    print("hessian_max_eig against PyHessian ...", flush=True)
    versus = versus_pyhessian(registry, device, args.seed)
    print("every metric on ResNet-18 ...", flush=True)
    costs = metric_costs(registry, device, args)
    report = {
        "environment": {
            "processor": processor_name(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "load_before": load_before,
            "load_after": load_average(),
        },
        "versus_pyhessian": versus,
        "metric_costs": costs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    main()
