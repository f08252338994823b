"""The input pipeline's share of a ResNet-18 CIFAR training step (a script, not a timed test).

Measures, on CIFAR-shaped uint8 data held on the device (random pixels: the cost does not depend on
them), with harness_vision's CIFAR-10 pipeline (batch gather, random crop with 4-pixel padding,
horizontal flip, optional cutout, optional per-sample AutoAugment / RandAugment, normalization):

- the median time of one training step (forward, backward, SGD update) of ResNet-18 adapted to 32x32
  (harness_vision's ``resnet18-cifar`` when registered, else torchvision's resnet18 with a 3x3
  stem and no max-pool, built here) on a batch that is already model input: "without pipeline";
- the same step with the pipeline producing its batch from the stored images: "with pipeline";
- the median time of the pipeline alone (gather + augment + normalize, device synchronized).

The share is the pipeline's median over the step's median with it; the target is under 5%. Step
medians with and without differ by less than their noise on a CPU, so the pipeline-alone median is
the figure to read. Prints the figures, with the processor and the load average beside them, and
writes them as JSON to ``benchmarks/results/pipeline_share_<policy>.json`` (or ``--output``).

    python benchmarks/pipeline_share.py [--batch-size 128] [--steps 12] [--device cpu] [--cutout 0]
        [--policy none|autoaugment|randaugment]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from harness_vision.augment import CIFAR10_MEAN, CIFAR10_STD, ImagePipeline, Normalize
from harness_vision.policies import POLICIES, build_policy
from torch import nn

from harness.contract.data import ClassificationData
from harness.machine import device_name, processor_name
from harness.run.timing import synchronize

RESULTS = Path(__file__).resolve().parent / "results"  # pipeline_share_<policy>.json unless --output


def resnet18_cifar(num_classes: int = 10) -> tuple[nn.Module, str]:
    """ResNet-18 for 32x32 inputs: the registered ``resnet18-cifar`` if there is one, else torchvision's adapted."""
    try:
        from harness.plugins import Registry

        model = Registry.from_plugins().create(
            "model", "resnet18-cifar", num_classes=num_classes, input_shape=(3, 32, 32)
        )
        return model, "harness_vision resnet18-cifar"
    except Exception:  # not registered (or broken) in this checkout: build it here
        from torchvision.models import resnet18

        model = resnet18(num_classes=num_classes)
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
        return model, "torchvision resnet18, 3x3 stem, no max-pool"


def timed(function, device: torch.device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        function()
    durations = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        durations.append(time.perf_counter() - start)
    return durations


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per configuration (after 2 warm-up)")
    parser.add_argument("--pipeline-repeats", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cutout", type=int, default=0, help="cutout square side (0: off)")
    parser.add_argument("--policy", choices=POLICIES, default="none", help="per-sample policy (RandAugment: 2 ops, 9)")
    parser.add_argument("--images", type=int, default=10000, help="images held on the device")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    output = args.output or RESULTS / f"pipeline_share_{args.policy}.json"

    device = torch.device(args.device)
    torch.manual_seed(0)
    normalize = Normalize(CIFAR10_MEAN, CIFAR10_STD)
    data = ClassificationData(
        name="cifar-shaped",
        train_x=torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8).to(device),
        train_y=torch.randint(0, 10, (args.images,)).to(device),
        test_x=torch.zeros(1, 3, 32, 32, dtype=torch.uint8, device=device),
        test_y=torch.zeros(1, dtype=torch.long, device=device),
        num_classes=10,
        augment=ImagePipeline(
            padding=4,
            flip=True,
            cutout=args.cutout,
            normalize=normalize,
            policy=build_policy("cifar10", args.policy, 2, 9),
        ),
        normalize=normalize,
    )
    model, model_name = resnet18_cifar()
    model = model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    shuffle = torch.Generator().manual_seed(0)
    augment = torch.Generator(device=device).manual_seed(0)

    def batches():
        while True:
            yield from data.train_batches(args.batch_size, shuffle, augment)

    stream = batches()
    fixed_inputs, fixed_labels = next(stream)

    def train_step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    def pipeline_only() -> None:
        next(stream)

    # Interleave the two step configurations so drift (thermal, other load) affects both alike.
    with_pipeline, without_pipeline = [], []
    timed(lambda: train_step(*next(stream)), device, 0, 2)
    for _ in range(args.steps):
        without_pipeline += timed(lambda: train_step(fixed_inputs, fixed_labels), device, 1, 0)
        with_pipeline += timed(lambda: train_step(*next(stream)), device, 1, 0)
    pipeline = timed(pipeline_only, device, args.pipeline_repeats, 10)

    step_with, step_without = statistics.median(with_pipeline), statistics.median(without_pipeline)
    pipeline_median = statistics.median(pipeline)
    figures = {
        "device": str(device),
        "device_name": device_name(device),
        "processor": processor_name(),
        "load_average_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "model": model_name,
        "batch_size": args.batch_size,
        "cutout": args.cutout,
        "policy": args.policy,
        "steps_timed": args.steps,
        "step_median_with_pipeline_s": step_with,
        "step_median_without_pipeline_s": step_without,
        "pipeline_median_s": pipeline_median,
        "pipeline_share_percent": 100.0 * pipeline_median / step_with,
        "step_difference_share_percent": 100.0 * (step_with - step_without) / step_with,
        "target_percent": 5.0,
    }
    figures["under_target"] = figures["pipeline_share_percent"] < figures["target_percent"]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"{model_name}, batch {args.batch_size}, {figures['device_name']} ({figures['torch_threads']} threads)")
    print(f"  step median with pipeline:    {step_with * 1e3:9.2f} ms")
    print(f"  step median without pipeline: {step_without * 1e3:9.2f} ms")
    print(f"  pipeline alone (median):      {pipeline_median * 1e3:9.3f} ms")
    print(f"  pipeline share: {figures['pipeline_share_percent']:.2f}% (target < 5%); step-median difference: "
          f"{figures['step_difference_share_percent']:+.2f}%")  # fmt: skip
    print(f"  written to {output}")
    return figures


if __name__ == "__main__":
    main()
