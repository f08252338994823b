"""Reading a large results folder: wall-clock and peak memory of ``harness report`` and ``harness compare``.

Generates two results folders, BASE and NEW, of N runs each (default 5,000) with one history file per
run, shaped like real ones: the runs of a generated suite (20 methods x 5 noise rates on digits, as many
seeds as N needs, 15 epochs), their rows built by ``harness.run.row.result_row`` from made-up
measurements (a few failed and diverged runs; a sharpness metric column in some files only) and written
by ``harness.results.store.write_run``. NEW holds the same runs measured again (other values, other host).
Then times ``harness report BASE`` and ``harness compare BASE NEW``, each in a fresh process: wall-clock
and that process's peak RSS (``os.wait4``; Linux reports KiB).

    python benchmarks/results_scale.py                          # 5,000 runs, generated in a scratch folder
    python benchmarks/results_scale.py --keep /tmp/scale        # generate once, reuse on later calls
    python benchmarks/results_scale.py --generate-only /tmp/scale --runs 500   # just the folders
    PYTHONPATH=old-checkout python benchmarks/results_scale.py --keep /tmp/scale --label before

The harness the timed processes import is the one ``python -m harness.cli`` finds (``PYTHONPATH`` first),
recorded as ``harness_from``. Appends one record to ``benchmarks/results/results_scale.json`` and prints
a Markdown table of every record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from harness.machine import append_record, provenance

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "results_scale.json"
SUITE = "scale"
PRESETS = [
    *"erm sam sam-pinf asam random-sam sam-k ss-sam ae-sam looksam ae-looksam layersam look-layersam".split(),
    "gsam",
    "gsam-vit",
    {"preset": "nusam", "extension": "nuSAM on a CNN (002 trains ViTs and MLP-Mixers only)"},
]
RHOS = (0.01, 0.02, 0.1, 0.2, 0.5)
NOISE_RATES = (0.0, 0.2, 0.4, 0.6, 0.8)
EPOCHS = 15
#: Files of this folder say how many runs it was generated with (``--keep`` reuses a folder of the same size).
GENERATED = "generated.json"
TRACEBACK = (
    "RuntimeError: out of memory\nTraceback (most recent call last):\n"
    '  File "harness/run/runner.py", line 480, in execute\n    row = train(run, setup)\nRuntimeError: out of memory'
)


def suite_yaml(runs: int) -> str:
    """A suite of at least ``runs`` runs: the digits presets and rho variants of SAM, 5 noise rates, enough seeds."""
    methods = [*PRESETS, *({"preset": "sam", "name": f"sam-rho{rho:g}", "scheduler": {"rho": rho}} for rho in RHOS)]
    seeds = max(2, math.ceil(runs / (len(methods) * len(NOISE_RATES))))
    document = {
        "name": SUITE,
        "description": "results_scale.py: a large sweep",
        "defaults": {"epochs": EPOCHS, "train_eval": "epoch"},
        "methods": methods,
        "models": ["small-cnn"],
        "datasets": [{"name": "digits", "validation_fraction": 0.1}],
        "noise_rates": list(NOISE_RATES),
        "seeds": list(range(seeds)),
    }
    return json.dumps(document)  # JSON is YAML


def measured(run, registry, status: str, rng: np.random.Generator, host: str):
    """The result row and the history of ``run`` ended in ``status``, with made-up but plausible measurements."""
    from harness.run.row import RunState, result_row

    epochs = EPOCHS if status == "ok" else int(rng.integers(1, EPOCHS))
    perturbs = run.optimizer != "erm"
    steps_per_epoch = 20
    final = 0.97 - 0.6 * run.noise_rate + rng.normal(0, 0.01)
    history, train_time = [], 0.0
    for epoch in range(1, epochs + 1):
        train_time += rng.normal(2.0 if perturbs else 1.0, 0.05)
        accuracy = final * (1 - math.exp(-epoch / 3)) + rng.normal(0, 0.005)
        history.append(
            {
                "epoch": epoch,
                "step": epoch * steps_per_epoch,
                "lr": 0.05 * (1 + math.cos(math.pi * epoch / EPOCHS)) / 2,
                "rho": run.scheduler_params.get("rho"),
                "train_loss": 2.3 * math.exp(-epoch / 4),
                "train_acc": accuracy + 0.02,
                "test_loss": 2.3 * math.exp(-epoch / 5),
                "test_acc": accuracy,
                "val_acc": accuracy + rng.normal(0, 0.005),
                "train_acc_clean": accuracy + 0.03,
                "train_acc_noisy_given": run.noise_rate * epoch / EPOCHS,
                "train_acc_noisy_true": accuracy - 0.1,
                "train_time_s": train_time,
                "sam_fraction": 1.0 if perturbs else 0.0,
                "grad_evals": epoch * steps_per_epoch * (2 if perturbs else 1),
            }
        )
    last = history[-1]
    state = RunState(
        steps=last["step"],
        grad_evals=last["grad_evals"],
        perturbed_steps=last["step"] if perturbs else 0,
        epochs_completed=epochs,
        train_time_s=train_time,
        eval_time_s=0.1 * epochs,
        train_loss=last["train_loss"] if status != "diverged" else math.nan,
        test_loss=last["test_loss"],
        test_acc=last["test_acc"],
        best_test_acc=max(h["test_acc"] for h in history),
        val_acc=last["val_acc"],
        best_val_acc=max(h["val_acc"] for h in history),
        train_accuracies={k: last[k] for k in ("train_acc", "train_acc_clean", "train_acc_noisy_given")},
        step_times=list(rng.normal(0.05, 0.002, 9)),
        optimizer_state_bytes=2_000_000 if perturbs else 1_000_000,
        metric_values={"hessian_max_eig": float(rng.gamma(4, 5)), "hessian_max_eig_iterations": 20}
        if run.optimizer in ("sam", "gsam")
        else {},
    )
    error = {"ok": "", "failed": TRACEBACK, "diverged": "non-finite training loss at step 12"}[status]
    started = datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(seconds=float(rng.integers(0, 10**6)))
    row = result_row(run, state, status, error, started, registry)
    return {**row, "host": host, "finished_at": started + timedelta(seconds=train_time)}, history


def generate(folder: Path, runs: int) -> None:
    """BASE and NEW results folders of ``runs`` runs each under ``folder``: the same runs, ending in the same
    statuses (so ``compare`` passes), measured differently."""
    from harness.plugins import Registry
    from harness.results.store import write_run
    from harness.suite import load_suite

    folder.mkdir(parents=True, exist_ok=True)
    suite_file = folder / "scale.yaml"
    suite_file.write_text(suite_yaml(runs))
    registry = Registry.from_plugins()
    chosen = load_suite(suite_file, registry).runs[:runs]
    statuses = np.random.default_rng(0).choice(["ok", "failed", "diverged"], size=len(chosen), p=[0.97, 0.02, 0.01])
    for side, seed in (("base", 1), ("new", 2)):
        rng = np.random.default_rng(seed)
        for run, status in zip(chosen, statuses, strict=True):
            row, history = measured(run, registry, str(status), rng, host=f"{side}-host")
            write_run(folder / side, SUITE, row, history)
    (folder / GENERATED).write_text(json.dumps({"runs": runs}))


def generated(folder: Path, runs: int) -> None:
    """``generate`` in a child process, unless ``folder`` already holds folders of ``runs`` runs.

    A child, so that this process stays small: a process forked from it starts from its peak RSS.
    """
    marker = folder / GENERATED
    if marker.exists() and json.loads(marker.read_text()).get("runs") == runs:
        return
    subprocess.run([sys.executable, __file__, "--generate-only", str(folder), "--runs", str(runs)], check=True)


def timed(command: list[str]) -> dict:
    """Wall-clock seconds, peak RSS (MiB) and exit code of ``command`` run in a fresh process.

    It runs outside the checkout (``python -m`` imports from the working directory first), so that
    ``PYTHONPATH`` chooses the harness.
    """
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss * scale / 2**20, 1),
        "exit_code": process.returncode,
        "stderr_tail": stderr.strip()[-300:],
    }


def harness_from() -> str:
    """Where the timed processes (outside the checkout, like ``timed``) import ``harness`` from."""
    done = subprocess.run(
        [sys.executable, "-c", "import harness; print(harness.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),
    )
    return str(Path(done.stdout.strip()).parent)


def measure(folder: Path, runs: int, repeats: int) -> dict:
    """Generate (or reuse) the folders under ``folder``, time report and compare ``repeats`` times each.

    Each command's first process starts without the folders' indexes (``.index/``, which a harness that
    keeps them writes on a first read): the cost of reading every file; later ones read what it left.
    """
    generated(folder, runs)
    base, new = folder / "base", folder / "new"
    cli = [sys.executable, "-m", "harness.cli"]
    commands = {
        "report": [*cli, "report", str(base), "-o", str(folder / "report-out")],
        "compare": [*cli, "compare", str(base), str(new), "--fail-on", "test_acc:-0.05"],
    }
    record: dict = {"runs": runs, "files": sum(1 for side in (base, new) for _ in side.rglob("*.parquet"))}
    record["files"] -= sum(1 for side in (base, new) for _ in side.rglob(".index/*.parquet"))
    load_before = os.getloadavg()[0]
    for name, command in commands.items():
        for index in [*base.rglob(".index"), *new.rglob(".index")]:
            shutil.rmtree(index)
        trials = [timed(command) for _ in range(repeats)]
        record[name] = {**summary(trials), "trials": trials}
    record.update(load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2))
    return record


def summary(trials: list[dict]) -> dict:
    """The first trial's figures and the median of the later ones' (None when there is one trial)."""
    later = trials[1:]
    return {
        "first_seconds": trials[0]["seconds"],
        "first_peak_rss_mib": trials[0]["peak_rss_mib"],
        "later_seconds_median": statistics.median(t["seconds"] for t in later) if later else None,
        "later_peak_rss_mib_median": statistics.median(t["peak_rss_mib"] for t in later) if later else None,
    }


def markdown(records: list[dict]) -> str:
    """Every record as a table row: first and later (median) wall-clock and peak RSS of both commands."""
    lines = [
        "| label | runs | report s first / later | report MiB | compare s first / later | compare MiB | exits | "
        "load before/after | CPU (cores) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |",
    ]
    for r in records:
        cells = []
        for name in ("report", "compare"):
            figures = summary(r[name]["trials"])
            seconds, memory = figures["later_seconds_median"], figures["later_peak_rss_mib_median"]
            cells += [
                f"{figures['first_seconds']:.1f} / " + ("-" if seconds is None else f"{seconds:.1f}"),
                f"{figures['first_peak_rss_mib']:.0f} / " + ("-" if memory is None else f"{memory:.0f}"),
            ]
        exits = "/".join(str(t["exit_code"]) for name in ("report", "compare") for t in r[name]["trials"])
        lines.append(
            f"| {r['label']} | {r['runs']} | {' | '.join(cells)} | {exits} | {r['load_before']} / {r['load_after']} | "
            f"{r['cpu']} ({r['cores']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000, help="runs per folder (default: 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed processes per command (default: 3)")
    parser.add_argument("--label", default="", help="what the record measured, e.g. before or after")
    parser.add_argument(
        "--keep", type=Path, help="generate the folders here and keep them (reused when the size matches)"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--generate-only", type=Path, metavar="DIR", help="write the folders into DIR, time nothing")
    options = parser.parse_args()
    if options.generate_only:
        generate(options.generate_only, options.runs)
        return
    with tempfile.TemporaryDirectory(prefix="results-scale-") as scratch:
        record = measure(options.keep or Path(scratch), options.runs, options.repeats)
    record.update(label=options.label, harness_from=harness_from(), **provenance())
    print(json.dumps(record), flush=True)
    print(markdown(append_record(options.output, record)))


if __name__ == "__main__":
    main()
