"""The step-cost benchmark of the performance issue, as one command (a thin script around ``harness bench``).

CPU (default): ResNet-18 (``resnet18-cifar``) at batch 64 with 1 and 2 threads, every SAM-family preset
against ERM, pytorch-optimizer's SAM and GSAM and bare hand-written loops; then the optimizer-state
comparison of sam and nusam on ``vit-cifar`` (one short round: state sizes do not need timing).

CUDA (``--device cuda``): WRN-28-10 and ``vit-cifar`` at batch 128 with bf16 autocast and channels-last,
with peak device memory and throughput.

    python benchmarks/step_cost.py [--device cpu|cuda] [--repeats 5] [--results-dir results] [...]

Any other option is passed to ``harness bench`` (``--methods``, ``--threads``, ``--steps``, ...). Results
go to ``RESULTS_DIR/bench/`` (Parquet and Markdown); the Performance section of the README records them.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli import main as harness


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", default="5")
    parser.add_argument("--results-dir", default="results")
    args, rest = parser.parse_known_args(argv)
    common = ["--device", args.device, "--repeats", args.repeats, "--results-dir", args.results_dir, *rest]
    if args.device.startswith("cuda"):
        return harness(
            [
                "bench",
                "--model",
                "wrn-28-10,vit-cifar",
                "--batch",
                "128",
                "--precision",
                "bf16",
                "--channels-last",
                *common,
            ]
        )
    code = harness(["bench", "--model", "resnet18-cifar", "--batch", "64", "--threads", "1,2", *common])
    state = harness(
        [
            "bench",
            "--model",
            "vit-cifar",
            "--batch",
            "64",
            "--methods",
            "erm,sam,nusam",
            "--references",
            "none",
            "--device",
            args.device,
            "--repeats",
            "1",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--threads",
            "2",
            "--results-dir",
            args.results_dir,
        ]
    )
    return code or state


if __name__ == "__main__":
    sys.exit(run())
