"""The ``harness`` command: run, validate, plugins, report, compare, bench.

Exit codes: 0 every run ok; 1 some run failed or diverged (``compare``: a gate failed); 2 bad usage
or an invalid suite (and then nothing trains); 130 interrupted with Ctrl-C (finished runs are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from harness.errors import HarnessError, UsageError

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
#: ``validate`` and ``run --dry-run`` list a suite of more runs than this as its first and last
#: ``SUMMARY_ENDS`` runs and the count of each axis value, unless ``--all-runs``.
SUMMARY_OVER, SUMMARY_ENDS = 50, 5


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Benchmark sharpness-aware minimization variants.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train every run of a suite and write Parquet results")
    _suite_arguments(run)
    run.add_argument("--results-dir", default="results", help="where results go (default: ./results)")
    run.add_argument("--dry-run", action="store_true", help="print the expanded runs and train nothing")
    _all_runs_argument(run)
    run.add_argument("--rerun", action="store_true", help="train runs again even if their results exist")
    run.add_argument(
        "--executor",
        help="how runs are executed: local (default), submitit, ray, ... (overrides the suite's executor block)",
    )
    run.add_argument("--workers", type=int, help="parallel workers of the executor (local: processes)")
    run.add_argument(
        "--nproc", type=int, help="train each run data-parallel over N processes with DDP (same as --set nproc=N)"
    )
    run.add_argument(
        "--smoke",
        action="store_true",
        help="a quick wiring check: 1 epoch, first seed, highest noise rate, batch <= 32, <= 64 examples, "
        "every method, model and dataset once (not their product); "
        "results go to <suite>-smoke",
    )

    validate = commands.add_parser("validate", help="check a suite and print its expanded runs")
    _suite_arguments(validate)
    validate.add_argument("--smoke", action="store_true", help="validate the --smoke version of the suite")
    _all_runs_argument(validate)

    plugins = commands.add_parser("plugins", help="list the registered components and their providers")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    report = commands.add_parser(
        "report",
        help="tables, significance tests and figures: OUT/report.md, OUT/report.html, PNGs, OUT/summary.parquet",
    )
    report.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS_DIR",
        help="a suite's results folder (RESULTS_DIR/<suite>) or a folder of them; several may be given",
    )
    report.add_argument("-o", "--out", help="output folder (default: <first RESULTS_DIR>/report)")
    report.add_argument(
        "--reference", default="sam", metavar="METHOD", help="the method others are tested against (default: sam)"
    )

    compare = commands.add_parser(
        "compare", help="match the runs of two results folders by configuration: deltas, significance, gates"
    )
    compare.add_argument("base", metavar="BASE_DIR", help="results folder (or suite folder) of the baseline")
    compare.add_argument("new", metavar="NEW_DIR", help="results folder (or suite folder) to check against it")
    compare.add_argument(
        "--fail-on",
        dest="gates",
        action="append",
        default=[],
        metavar="METRIC:THRESHOLD",
        help="exit 1 when a condition's mean change crosses the threshold: test_acc:-0.005 (new - base < -0.005), "
        "train_time_s:+10%% (new > 1.1 x base), grad_evals:0 (any change)",
    )
    bench = commands.add_parser(
        "bench",
        help="time one optimizer step of each method against ERM, pytorch-optimizer and a bare loop: "
        "RESULTS_DIR/bench/*.parquet and bench.md",
    )
    bench.add_argument(
        "--model",
        help="registered model name(s), comma-separated (default: resnet18-cifar on cpu, wrn-28-10,vit-cifar on cuda)",
    )
    bench.add_argument(
        "--model-param",
        dest="model_params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model parameter (VALUE read as JSON when it parses), e.g. --model-param channels=16",
    )
    bench.add_argument("--batch", type=int, help="batch size (default: 64 on cpu, 128 on cuda)")
    bench.add_argument(
        "--methods", help="comma-separated presets (default: erm,sam,looksam,sam-k,ae-sam,ss-sam,gsam,nusam)"
    )
    bench.add_argument(
        "--references",
        default="po-sam,po-gsam,bare-erm,bare-sam",
        help="comma-separated references: po-sam, po-gsam (pytorch-optimizer), bare-erm, bare-sam "
        "(hand-written loops); 'none' for none (default: all)",
    )
    bench.add_argument("--threads", help="CPU thread counts, comma-separated (default: 1 and every core)")
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    bench.add_argument("--repeats", type=int, default=5, help="timed rounds per candidate (default: 5)")
    bench.add_argument("--warmup", type=int, default=3, help="untimed steps per candidate first (default: 3)")
    bench.add_argument(
        "--steps", type=int, default=5, help="steps per timed block, a multiple of LookSAM's k=5 (default: 5)"
    )
    bench.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    bench.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs")
    bench.add_argument("--compile", action="store_true", help="torch.compile every model copy")
    bench.add_argument(
        "--preset-base",
        action="store_true",
        help="give each preset its own base optimizer (nusam: AdamW, ...) instead of one shared momentum SGD",
    )
    bench.add_argument("--input-shape", default="3,32,32", help="input shape C,H,W (default: 3,32,32)")
    bench.add_argument("--num-classes", type=int, default=10)
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--results-dir", default="results", help="where results go (default: ./results)")
    return parser


def _suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite file and its ``--set`` overrides, alike for ``run`` and ``validate``."""
    parser.add_argument("suite", help="path to a suite YAML file")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a suite key, e.g. --set epochs=2 --set seeds=[0]",
    )


def _all_runs_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all-runs",
        action="store_true",
        help=f"list every expanded run (default: beyond {SUMMARY_OVER} runs, the first and last "
        f"{SUMMARY_ENDS} and the count of each axis value)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as error:  # SuiteError, PluginError, UnknownNameError: nothing has trained
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before or after training (during it, ``_run`` reports and returns 130)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _load(args: argparse.Namespace):
    from harness.plugins import Registry
    from harness.suite import load_suite

    registry = Registry.from_plugins()
    nproc = getattr(args, "nproc", None)
    overrides = list(args.overrides) + ([f"nproc={nproc}"] if nproc is not None else [])
    return registry, load_suite(args.suite, registry, overrides, smoke=args.smoke)


def _print_runs(suite, *, every: bool) -> None:
    """The expanded runs as a table: all of them, or (beyond ``SUMMARY_OVER`` unless ``every``) the first
    and last ``SUMMARY_ENDS`` and a count per axis value, since printing 20,000 rows took most of a
    ``validate``."""
    from rich.console import Console
    from rich.table import Table

    runs = suite.runs
    summarised = not every and len(runs) > SUMMARY_OVER
    title = f"suite {suite.name}: {len(runs)} runs"
    if summarised:
        title += f" (the first and last {SUMMARY_ENDS}; --all-runs lists every run)"
    table = Table(title=title, title_justify="left")
    columns = ("run_id", "method", "optimizer", "scheduler", "model", "dataset", "noise", "seed", "epochs")
    for column in columns:
        table.add_column(column)
    for index, run in enumerate(runs[:SUMMARY_ENDS] + runs[-SUMMARY_ENDS:] if summarised else runs):
        if summarised and index == SUMMARY_ENDS:
            table.add_row(f"... {len(runs) - 2 * SUMMARY_ENDS} more", *("..." for _ in columns[1:]))
        table.add_row(
            run.run_id,
            run.method,
            _with_params(run.optimizer, run.optimizer_params),
            _with_params(run.scheduler, run.scheduler_params),
            run.model,
            run.dataset,
            f"{run.noise_rate:g}",
            str(run.seed),
            str(run.epochs),
        )
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    if summarised:
        print(_axis_counts(runs))


def _axis_counts(runs) -> str:
    """One line per grid axis: each value and its number of runs (a long axis: how many values, and its ends)."""
    axes = {
        "method": lambda run: run.method,
        "model": lambda run: _with_params(run.model, run.model_params),
        "dataset": lambda run: _with_params(run.dataset, run.dataset_params),
        "noise rate": lambda run: f"{run.noise_rate:g}",
        "batch size": lambda run: str(run.batch_size),
        "seed": lambda run: str(run.seed),
    }
    lines = []
    for axis, value_of in axes.items():
        counts = Counter(value_of(run) for run in runs)
        if len(counts) <= 2 * SUMMARY_ENDS:
            shown = ", ".join(f"{value} ({count})" for value, count in counts.items())
        else:
            values = list(counts)
            shown = f"{len(values)} values: {', '.join(values[:3])}, ..., {values[-1]}"
        lines.append(f"  {axis}: {shown}")
    return "runs per axis value:\n" + "\n".join(lines)


def _with_params(name: str, params) -> str:
    shown = ", ".join(f"{k}={v}" for k, v in params.items())
    return f"{name}({shown})" if shown else name


def _validate(args: argparse.Namespace) -> int:
    _, suite = _load(args)
    _print_runs(suite, every=args.all_runs)
    print(f"{suite.path}: valid, {len(suite.runs)} runs")
    return EXIT_OK


def _executor(args: argparse.Namespace, registry, suite):
    """The executor from the suite's block, overridden by --executor / --workers."""
    name, params = suite.executor
    if args.executor and args.executor != name:
        name, params = args.executor, {}
    spec = registry.get("executor", name)
    params = dict(params)
    if args.workers is not None:
        if args.workers < 1 or "workers" not in spec.defaults:
            raise UsageError(
                f"--workers {args.workers}: expected an integer >= 1 for an executor that takes workers "
                f"({name!r} takes: {', '.join(spec.defaults) or 'no parameters'})"
            )
        params["workers"] = args.workers
    return registry.create("executor", name, **params)


def _writable(folder: Path) -> None:
    """Create ``folder`` and write a file in it, or raise ``UsageError`` naming it (before anything trains)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(f"--results-dir: cannot write results to {folder}: {error.strerror or error}") from None


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, ``timeout``, Slurm preemption) stops a suite the way Ctrl-C does: workers stopped,
    finished results kept, the summary printed, exit 130."""

    def interrupt(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the workers' stop
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _run(args: argparse.Namespace) -> int:
    from harness.leases import timeout_s as lease_timeout_s
    from harness.progress import SuiteProgress
    from harness.results import finished_run_ids, read_history, read_runs, set_aside_damaged, suite_dir
    from harness.suite import import_factories

    registry, suite = _load(args)
    if args.dry_run:
        _print_runs(suite, every=args.all_runs)
        return EXIT_OK
    executor = _executor(args, registry, suite)
    lease_timeout_s()  # a bad HARNESS_LEASE_TIMEOUT_S is refused before anything trains
    _writable(suite_dir(args.results_dir, suite.name))
    for moved in set_aside_damaged(args.results_dir, suite.name):  # unreadable: renamed, and trained again
        print(f"warning: {moved}", file=sys.stderr)
    done = set() if args.rerun else finished_run_ids(args.results_dir, suite.name)
    pending = [run for run in suite.runs if run.run_id not in done]
    skipped = len(suite.runs) - len(pending)
    import_factories(suite, registry, pending)  # validation read their paths; training needs them imported
    interrupted = False
    with SuiteProgress(suite.name, pending) as progress, _terminate_as_interrupt():
        try:
            executor.run(pending, results_dir=str(args.results_dir), events=progress)
        except KeyboardInterrupt:
            interrupted = True
    rows = read_runs(suite_dir(args.results_dir, suite.name), columns=["run_id", "status"])
    read_history(suite_dir(args.results_dir, suite.name))  # updates the folder's index: the next report reads it
    status_of = dict(zip(rows["run_id"], rows["status"], strict=True))
    others = progress.skipped_runs  # leased or finished by another process meanwhile: theirs to report
    statuses = Counter(status_of.get(run.run_id, "not run") for run in pending if run.run_id not in others)
    summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "nothing to train"
    left = f"; {len(others)} left to other processes (skipped)" if others else ""
    print(
        f"suite {suite.name}: {summary}; {skipped} already finished (skipped){left}; "
        f"results in {args.results_dir}/{suite.name}"
    )
    if interrupted:
        print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK if set(statuses) <= {"ok"} else EXIT_RUN_FAILED


def _plugins(args: argparse.Namespace) -> int:
    from harness.plugins import Registry

    registry = Registry.from_plugins()
    rows = [
        {
            "kind": spec.kind,
            "name": spec.name,
            "provider": spec.provider,
            "version": spec.version,
            "description": spec.description,
            "paper": spec.paper,
        }
        for spec in registry
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table()
    columns = ("kind", "name", "provider", "version", "description", "paper")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(row[c] for c in columns))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from harness.report import build

    report = build(args.results, args.out, reference=args.reference, on_skip=_print_skipped)
    print(report.markdown)
    print(f"wrote {len(report.files)} files to {report.out}: report.md, report.html, summary.parquet and the figures")
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from harness.compare import Gate, compare

    comparison = compare(args.base, args.new, [Gate.parse(text) for text in args.gates], on_skip=_print_skipped)
    print(comparison.markdown)
    return EXIT_RUN_FAILED if comparison.failures else EXIT_OK  # a skipped file is no failure


def _print_skipped(skipped) -> None:
    """A file ``report`` or ``compare`` did not read, on stderr: a warning when it cannot be read, else a note."""
    print(f"{skipped.level}: {skipped}", file=sys.stderr)


def _csv(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _bench(args: argparse.Namespace) -> int:
    import os

    from harness.bench import DEFAULT_METHODS, BenchConfig, run_bench

    cuda = args.device.startswith("cuda")
    models = _csv(args.model) or (["wrn-28-10", "vit-cifar"] if cuda else ["resnet18-cifar"])
    model_params = {}
    for item in args.model_params:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--model-param {item!r}: expected KEY=VALUE")
        try:
            model_params[key] = json.loads(value)
        except json.JSONDecodeError:
            model_params[key] = value
    try:
        threads = tuple(int(t) for t in _csv(args.threads)) or tuple(dict.fromkeys((1, os.cpu_count() or 1)))
        input_shape = tuple(int(d) for d in _csv(args.input_shape))
    except ValueError as error:
        raise UsageError(f"--threads and --input-shape take comma-separated integers ({error})") from error
    references = () if args.references.strip().lower() == "none" else tuple(_csv(args.references))
    config = BenchConfig(
        model=models[0],
        model_params=model_params,
        batch=args.batch or (128 if cuda else 64),
        methods=tuple(_csv(args.methods)) or DEFAULT_METHODS,
        references=references,
        threads=() if cuda else threads,
        device=args.device,
        repeats=args.repeats,
        warmup=args.warmup,
        steps=args.steps,
        precision=args.precision,
        channels_last=args.channels_last,
        compile=args.compile,
        preset_base=args.preset_base,
        input_shape=input_shape,
        num_classes=args.num_classes,
        seed=args.seed,
    )
    result = run_bench(config, args.results_dir, models=models)
    print(result.markdown)
    print("wrote " + ", ".join(str(path) for path in result.files))
    return EXIT_OK


COMMANDS = {
    "run": _run,
    "validate": _validate,
    "plugins": _plugins,
    "report": _report,
    "compare": _compare,
    "bench": _bench,
}

if __name__ == "__main__":
    sys.exit(main())
