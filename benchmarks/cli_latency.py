"""Wall-clock of the two quick commands, ``harness plugins`` and ``harness validate`` (records figures; asserts none).

Each command runs ``--repeats`` times as a fresh subprocess (``python -m harness.cli ...`` from the checkout,
output discarded), interleaved so that a burst of load on the machine hits both alike; the record holds
every time, their median, the exit codes, and the machine (CPU model, cores, load average before and
after). Both commands should answer in well under 2 s: neither needs torch (``harness validate`` checks
each factory path without importing it, ``harness.suite``).

    python benchmarks/cli_latency.py                          # 7 repeats, suites/quickstart.yaml
    python benchmarks/cli_latency.py --label before --repeats 5

Appends one record to ``benchmarks/results/cli_latency.json`` and prints a Markdown table of every record.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness.machine import append_record, load_average, provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "cli_latency.json"


def commands(suite: str) -> dict[str, list[str]]:
    """The timed commands, by the name the record gives them."""
    return {"harness plugins": ["plugins"], f"harness validate {suite}": ["validate", suite]}


def time_once(argv: list[str]) -> tuple[float, int]:
    """Seconds and exit code of one ``python -m harness.cli ARGV`` subprocess."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *argv], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        print(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.decode()[-500:]}", file=sys.stderr)
    return seconds, done.returncode


def measure(suite: str, repeats: int, label: str) -> dict:
    """One record: every command ``repeats`` times, interleaved."""
    timed = commands(suite)
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    exit_codes: dict[str, set[int]] = {name: set() for name in timed}
    load_before = load_average()
    for _ in range(repeats):
        for name, argv in timed.items():
            took, code = time_once(argv)
            seconds[name].append(round(took, 3))
            exit_codes[name].add(code)
    return {
        "label": label,
        "commands": {
            name: {
                "median_s": round(statistics.median(times), 3),
                "seconds": times,
                "exit_codes": sorted(exit_codes[name]),
            }
            for name, times in seconds.items()
        },
        "load_before": load_before,
        "load_after": load_average(),
        **provenance(),
    }


def markdown(records: list[dict]) -> str:
    lines = [
        "| label | command | median | range | exit | load before/after | CPU (cores) | at |",
        "| --- | --- | ---: | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        for name, c in r["commands"].items():
            lines.append(
                f"| {r['label']} | `{name}` | {c['median_s']:.2f} s | "
                f"{min(c['seconds']):.2f}-{max(c['seconds']):.2f} s | "
                f"{','.join(map(str, c['exit_codes']))} | {r['load_before']:.2f} / {r['load_after']:.2f} | "
                f"{r['cpu']} ({r['cores']}) | {r['at']} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--suite", default="suites/quickstart.yaml", help="the suite to validate (default: %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="runs of each command (default: %(default)s)")
    parser.add_argument("--label", default="", help="what the record measured (a commit, 'before', ...)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    options = parser.parse_args()
    print(markdown(append_record(options.output, measure(options.suite, options.repeats, options.label))))


if __name__ == "__main__":
    main()
