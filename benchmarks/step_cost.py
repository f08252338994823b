"""The step-cost benchmark of the performance issue, with its targets, as one command (around ``harness bench``).

CPU (default): ResNet-18 (``resnet18-cifar``) at batch 64 with 1 and 2 threads, every SAM-family preset
against ERM, pytorch-optimizer's SAM and GSAM and bare hand-written loops; then the optimizer-state
comparison of sam and nusam on ``vit-cifar`` (one short round: state sizes do not need timing).

CUDA (``--device cuda``): WRN-28-10 and ``vit-cifar`` at batch 128 with bf16 autocast and channels-last,
with peak device memory and throughput.

    python benchmarks/step_cost.py [--device cpu|cuda] [--repeats 5] [--results-dir results] [...]

Any other option is passed to ``harness bench`` (``--methods``, ``--threads``, ``--steps``, ...). Results
go to ``RESULTS_DIR/bench/`` (Parquet and Markdown, as ``harness bench`` writes them); then the issue's
targets (``targets``: SAM at most 2.05x ERM on a CPU, LookSAM-5 1.25x, ...) are checked on each
setting's rows, printed and written to ``RESULTS_DIR/bench/targets.md``. The Performance section of the
README records them. Exit status: ``harness bench``'s (a missed target is reported, not an error).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from harness.bench import settings
from harness.cli import main as harness


def _row(rows: Sequence[dict[str, Any]], method: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["method"] == method), None)


def targets(rows: Sequence[dict[str, Any]]) -> list[tuple[str, float, float]]:
    """(what, measured, limit) for each target of the performance issue that one setting's rows can check."""
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


def target_tables(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: for each setting (model x threads) of ``rows``, the targets it can check and whether each is met."""
    lines = ["# step cost: the performance issue's targets"]
    for (model, threads), group in settings(rows).items():
        checks = targets(group)
        if not checks:
            continue
        device = group[0]["device"] + (f", {threads} thread{'s' if threads != 1 else ''}" if threads else "")
        lines += [
            "",
            f"## {model} ({device})",
            "",
            "| target | measured | limit | met |",
            "| --- | ---: | ---: | --- |",
        ]
        for what, value, limit in checks:
            lines.append(f"| {what} | {value:.3f} | {limit:.3f} | {'yes' if value <= limit else 'NO'} |")
    return "\n".join(lines) + "\n"


def bench(arguments: Sequence[str], results_dir: str) -> tuple[int, list[dict[str, Any]]]:
    """``harness bench ARGUMENTS --results-dir RESULTS_DIR``: its exit code and the rows it wrote."""
    folder = Path(results_dir) / "bench"
    before = set(folder.glob("*.parquet"))
    code = harness(["bench", *arguments, "--results-dir", results_dir])
    written = sorted(set(folder.glob("*.parquet")) - before)
    return code, [row for path in written for row in pq.read_table(path).to_pylist()]


def run(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", default="5")
    parser.add_argument("--results-dir", default="results")
    args, rest = parser.parse_known_args(argv)
    common = ["--device", args.device, "--repeats", args.repeats, *rest]
    if args.device.startswith("cuda"):
        measured = [
            bench(
                ["--model", "wrn-28-10,vit-cifar", "--batch", "128", "--precision", "bf16", "--channels-last", *common],
                args.results_dir,
            )
        ]
    else:
        measured = [
            bench(["--model", "resnet18-cifar", "--batch", "64", "--threads", "1,2", *common], args.results_dir),
            bench(
                [
                    *("--model", "vit-cifar", "--batch", "64", "--methods", "erm,sam,nusam", "--references", "none"),
                    *("--device", args.device, "--repeats", "1", "--steps", "1", "--warmup", "1", "--threads", "2"),
                ],
                args.results_dir,
            ),
        ]
    text = target_tables([row for _, rows in measured for row in rows])
    print(text)
    folder = Path(args.results_dir) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "targets.md").write_text(text)
    return next((code for code, _ in measured if code), 0)


if __name__ == "__main__":
    sys.exit(run())
