"""Wall-clock of whole suites through the CLI (a script that records figures, not a timed test).

For each suite given (default: every paper suite with ``--smoke``), runs ``harness run SUITE [ARGS]``
as a subprocess, with ``HARNESS_DATA`` pointing at small CIFAR-format files written by
``harness_vision.cifar_files`` (this machine cannot download CIFAR; ``--smoke`` reads at most 64
training examples anyway), and records the wall-clock, the exit code, the number of runs and their
statuses, and the machine (CPU model, cores, load average before and after). Results go to a fresh
results folder per invocation (``--keep DIR`` keeps them, for a report), so nothing is skipped as already
finished.

    python benchmarks/suite_times.py                       # every paper suite, --smoke
    python benchmarks/suite_times.py suites/digits_noise.yaml --args="--workers 2" --label digits-w2

Writes ``benchmarks/results/suite_times.json`` (appending one record per suite run) and prints a
Markdown table of everything recorded so far.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.machine import append_record, provenance
from harness.results.read import read_runs

ROOT = Path(__file__).resolve().parents[1]
PAPER_SUITES = ("digits_noise", "cifar_noise", "cifar10", "cifar100", "looksam_cifar", "vit_cifar", "large_batch")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "suite_times.json"
#: What a record's timing depends on (uncommitted changes elsewhere, the README say, do not make it dirty).
CODE = ("harness", "plugins", "suites", "benchmarks/suite_times.py", "pyproject.toml")


def statuses(results: Path) -> dict[str, int]:
    """How many runs under ``results`` ended in each status."""
    counts: dict[str, int] = {}
    for folder in (path for path in results.iterdir() if path.is_dir()):
        for status in read_runs(folder, columns=["status"])["status"]:
            counts[status] = counts.get(status, 0) + 1
    return counts


def commit() -> str:
    """The repository's commit (``+dirty`` with uncommitted changes to the code): which code a record measured."""

    def git(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)

    head = git("rev-parse", "--short", "HEAD")
    if head.returncode != 0:
        return ""
    changed = git("status", "--porcelain", "--untracked-files=no", "--", *CODE).stdout
    return head.stdout.strip() + ("+dirty" if changed else "")


def time_suite(suite: Path, args: list[str], data_root: Path, keep: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="suite-times-") as scratch:
        results = str(keep / suite.stem) if keep else scratch
        command = [sys.executable, "-m", "harness.cli", "run", str(suite), "--results-dir", results, *args]
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(
            command, env={**os.environ, "HARNESS_DATA": str(data_root)}, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - started
        counts = statuses(Path(results))
    summary = [line for line in done.stdout.splitlines() if line.startswith("suite ")]
    return {
        "suite": suite.stem,
        "args": " ".join(args),
        "seconds": round(seconds, 1),
        "exit_code": done.returncode,
        "runs": sum(counts.values()),
        "statuses": counts,
        "runs_per_hour": round(sum(counts.values()) / seconds * 3600, 1) if seconds else None,
        "summary": summary[-1] if summary else done.stderr.strip()[-500:],
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "commit": commit(),
        **provenance(),
    }


def markdown(records: list[dict]) -> str:
    lines = [
        "| suite | args | runs | statuses | seconds | runs/hour | exit | load before/after | CPU (cores) | commit |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in records:
        shown = ", ".join(f"{count} {status}" for status, count in sorted(r["statuses"].items()))
        lines.append(
            f"| {r['suite']} | `{r['args']}` | {r['runs']} | {shown} | {r['seconds']:.0f} | {r['runs_per_hour']} | "
            f"{r['exit_code']} | {r['load_before']} / {r['load_after']} | {r['cpu']} ({r['cores']}) | "
            f"{r.get('commit', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suites", nargs="*", help="suite files (default: every paper suite)")
    parser.add_argument("--args", default="--smoke", help="arguments for harness run (default: --smoke)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", type=Path, help="keep the results under KEEP/<suite stem> (default: discarded)")
    options = parser.parse_args()
    suites = [Path(s) for s in options.suites] or [ROOT / "suites" / f"{name}.yaml" for name in PAPER_SUITES]
    records = json.loads(options.output.read_text()) if options.output.exists() else []
    from harness_vision.cifar_files import write_cifar_files

    with tempfile.TemporaryDirectory(prefix="cifar-files-") as data:
        write_cifar_files(Path(data), "cifar10", train_sizes=(60,) * 5, test_size=300)
        write_cifar_files(Path(data), "cifar100", train_sizes=(300,), test_size=300)
        for suite in suites:
            record = time_suite(suite, shlex.split(options.args), Path(data), options.keep)
            print(json.dumps(record), flush=True)
            records = append_record(options.output, record)
    print(markdown(records))


if __name__ == "__main__":
    main()
