"""What a SAM step costs besides its two passes: the harness's ``sam`` against pytorch-optimizer's ``SAM``.

On a CPU a SAM step is dominated by its two forward/backward passes (ResNet-18 at batch 64: about 1.3 s
each with one thread), so ``harness bench`` cannot resolve the few milliseconds in which two SAM
implementations differ: the gradient norm, saving the weights, the perturbation, the restore and the base
optimizer's step. This script times exactly that. Both optimizers step a model with the real parameter
shapes (``--model``, from the registry) through their own step code, with a closure that does no forward
or backward pass but copies a fixed set of random gradients into ``p.grad`` (the same copy for both), so
the difference between the two timings is the difference between the implementations. Same base optimizer
(``harness.bench.COMMON_BASE``: SGD with momentum through timm's factory, the runner's), same rho.

Timing is ``harness bench``'s (``harness.bench.time_rounds``): warm-up steps, then ``--repeats`` rounds,
each timing a block of ``--steps`` steps of each optimizer, the order rotated every round; median and IQR
of the per-step time, and the median of the per-round ratios.

    python benchmarks/sam_update_cost.py [--model resnet18-cifar] [--threads 1,2] [--repeats 30]

Prints a Markdown table and appends one record per thread count to
``benchmarks/results/sam_update_cost.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from harness.bench import COMMON_BASE, SAM_RHO, Candidate, kozistr_sam, paired_ratio, quartiles, time_rounds
from harness.machine import append_record, provenance
from harness.plugins import Registry
from harness.run.build import build_base_optimizer

OUTPUT = Path(__file__).resolve().parent / "results" / "sam_update_cost.json"


def gradient_copier(module: torch.nn.Module, seed: int) -> Callable[[], torch.Tensor]:
    """A closure that sets ``p.grad`` to fixed random gradients (one copy kernel) and returns a loss."""
    generator = torch.Generator().manual_seed(seed)
    params = list(module.parameters())
    fixed = [torch.randn(p.shape, generator=generator) * 1e-2 for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    loss = torch.zeros(())

    def closure() -> torch.Tensor:
        torch._foreach_copy_(grads, fixed)
        return loss

    return closure


def harness_sam(registry: Registry, module: torch.nn.Module) -> Callable[[], None]:
    optimizer = registry.create(
        "optimizer",
        "sam",
        list(module.named_parameters()),
        base_optimizer=build_base_optimizer(module, dict(COMMON_BASE)),
        scheduler=registry.create("scheduler", "constant", rho=SAM_RHO),
    )
    closure = gradient_copier(module, seed=0)
    return lambda: optimizer.step(closure)


def pytorch_optimizer_sam(module: torch.nn.Module) -> Callable[[], None]:
    import pytorch_optimizer

    optimizer = kozistr_sam(pytorch_optimizer, module, dict(COMMON_BASE))  # the harness's base optimizer
    closure = gradient_copier(module, seed=0)

    def step() -> None:  # its documented two-step use: clean gradient, first_step, perturbed gradient, second_step
        closure()
        optimizer.first_step()
        closure()
        optimizer.second_step()

    return step


def measure(model: str, threads: int, repeats: int, steps: int, warmup: int) -> dict:
    """One record: both updates timed with ``threads`` torch threads (the caller's count is restored)."""
    load_before = os.getloadavg()[0]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times, template = _time_both(model, repeats, steps, warmup)
    finally:
        torch.set_num_threads(previous_threads)
    ratio, _ = paired_ratio(times, "harness sam", "pytorch-optimizer SAM")
    return {
        "model": model,
        "parameters": sum(p.numel() for p in template.parameters()),
        "threads": threads,
        "repeats": repeats,
        "steps": steps,
        "harness_ms_q1_median_q3": [round(v * 1e3, 3) for v in quartiles(times["harness sam"])],
        "pytorch_optimizer_ms_q1_median_q3": [round(v * 1e3, 3) for v in quartiles(times["pytorch-optimizer SAM"])],
        "ratio_median": round(ratio, 3),
        "load_before": round(load_before, 2),
        "torch": torch.__version__,
        **provenance(),
    }


def _time_both(model: str, repeats: int, steps: int, warmup: int) -> tuple[dict[str, list[float]], torch.nn.Module]:
    registry = Registry.from_plugins()
    template = registry.create("model", model, num_classes=10, input_shape=(3, 32, 32))
    steppers = {
        "harness sam": harness_sam(registry, copy.deepcopy(template)),
        "pytorch-optimizer SAM": pytorch_optimizer_sam(copy.deepcopy(template)),
    }
    candidates = [Candidate(name, "update", step, warmup=warmup) for name, step in steppers.items()]
    label = f"{model}, {torch.get_num_threads()} thread(s)"
    rounds = time_rounds(candidates, repeats=repeats, steps=steps, device=torch.device("cpu"), label=label)
    return rounds.times, template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18-cifar")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    options = parser.parse_args()
    records: list[dict] = []
    for threads in (int(t) for t in options.threads.split(",")):
        record = measure(options.model, threads, options.repeats, options.steps, options.warmup)
        print(json.dumps(record), flush=True)
        records = append_record(options.output, record)
    print("| model | threads | harness sam, ms (IQR) | pytorch-optimizer SAM, ms (IQR) | ratio |")
    print("| --- | ---: | --- | --- | ---: |")
    for r in records:
        ours, theirs = r["harness_ms_q1_median_q3"], r["pytorch_optimizer_ms_q1_median_q3"]
        print(
            f"| {r['model']} | {r['threads']} | {ours[1]} ({ours[0]}-{ours[2]}) | "
            f"{theirs[1]} ({theirs[0]}-{theirs[2]}) | {r['ratio_median']} |"
        )


if __name__ == "__main__":
    main()
