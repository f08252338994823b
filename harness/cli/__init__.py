"""The ``harness`` command: run, tune, validate, plugins, report, compare, bench.

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

from harness.cli.listing import print_runs
from harness.cli.parser import build_parser
from harness.errors import HarnessError, SuiteError, UsageError

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``harness`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as error:  # SuiteError, PluginError, UnknownNameError: nothing has trained
        for problem in error.problems if isinstance(error, SuiteError) else (str(error),):
            print(f"error: {problem}", file=sys.stderr)  # a suite's problems: one line each, all of them
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


def _validate(args: argparse.Namespace) -> int:
    from harness.cli.listing import print_studies
    from harness.suite.claims import is_claims_file

    if is_claims_file(args.suite):  # suites/reference/claims.yaml: validated like a suite
        return _validate_claims(args.suite)
    _, suite = _load(args)
    print_runs(suite, every=args.all_runs)
    if suite.tuning is not None:
        print_studies(suite)
    print(f"{suite.path}: valid, {len(suite.runs)} runs")
    return EXIT_OK


def _validate_claims(path: str) -> int:
    from harness.plugins import Registry
    from harness.suite.claims import load_claims

    claims = load_claims(path, Registry.from_plugins())
    for claim in claims:
        versus = f" vs {claim.against}" if claim.against else ""
        bound = f"{claim.metric} {claim.describe_bound()}"
        print(f"  {claim.id}: {claim.method}{versus}, {bound} ({claim.paper} {claim.table})")
    print(f"{path}: valid, {len(claims)} claims")
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
    registry, suite = _load(args)
    if suite.tuning is not None and not args.no_tuning:
        return _tune_loaded(args, registry, suite)
    if args.dry_run:
        print_runs(suite, every=args.all_runs)
        return EXIT_OK
    execute = _Execution(args, registry, suite)
    interrupted = execute.all(suite.runs)
    return execute.finish(interrupted)


def _tune(args: argparse.Namespace) -> int:
    registry, suite = _load(args)
    if suite.tuning is None:
        raise UsageError(
            f"{suite.path}: no tuning: block; expected a suite with one (README, Tuning), or use harness run"
        )
    return _tune_loaded(args, registry, suite)


def _tune_loaded(args: argparse.Namespace, registry, suite) -> int:
    """Every study's trials, then its finals (``harness.tune.driver``); Ctrl-C stops and a rerun resumes."""
    from harness.cli.listing import print_studies
    from harness.tune.driver import describe, run_studies

    if args.dry_run:
        print_studies(suite)
        return EXIT_OK
    if args.rerun:
        raise UsageError(
            "--rerun: a tuning study resumes from its journal and rows; delete the suite's folder to restart it"
        )
    execute = _Execution(args, registry, suite)

    def batch(runs) -> None:
        if execute.all(runs):
            raise KeyboardInterrupt

    try:
        outcomes = run_studies(suite, registry, args.results_dir, batch)
    except KeyboardInterrupt:
        return execute.finish(True)
    for outcome in outcomes:
        print(describe(outcome))
    if not outcomes:
        print("tuning: the pending trials are other processes' runs; run the same command again once they finished")
    return execute.finish(False)


class _Execution:
    """Runs batches of a suite's runs through its executor, with progress; counts what became of them."""

    def __init__(self, args: argparse.Namespace, registry, suite) -> None:
        from harness.execution.leases import timeout_s as lease_timeout_s
        from harness.results.read import set_aside_damaged
        from harness.results.store import suite_dir

        self.args, self.registry, self.suite = args, registry, suite
        self.executor = _executor(args, registry, suite)
        lease_timeout_s()  # a bad HARNESS_LEASE_TIMEOUT_S is refused before anything trains
        self.folder = suite_dir(args.results_dir, suite.name)
        _writable(self.folder)
        for moved in set_aside_damaged(args.results_dir, suite.name):  # unreadable: renamed, and trained again
            print(f"warning: {moved}", file=sys.stderr)
        self.pending: list = []
        self.others: set[str] = set()
        self.skipped = 0

    def all(self, runs) -> bool:
        """Train the runs of ``runs`` not finished yet (all of them with ``--rerun``); True when interrupted."""
        from harness.execution.progress import SuiteProgress
        from harness.results.read import finished_run_ids
        from harness.suite import import_factories

        done = set() if self.args.rerun else finished_run_ids(self.args.results_dir, self.suite.name)
        pending = [run for run in runs if run.run_id not in done]
        self.skipped += len(runs) - len(pending)
        self.pending += pending
        import_factories(self.suite, self.registry, pending)  # validation read their paths; training needs them
        with SuiteProgress(self.suite.name, pending) as progress, _terminate_as_interrupt():
            try:
                self.executor.run(pending, results_dir=str(self.args.results_dir), events=progress)
            except KeyboardInterrupt:
                return True
            finally:
                self.others |= set(progress.skipped_runs)  # leased or finished by another process meanwhile
        return False

    def finish(self, interrupted: bool) -> int:
        """Print the summary line; the exit code."""
        from harness.results.read import read_history, read_runs

        rows = read_runs(self.folder, columns=["run_id", "status"])
        read_history(self.folder)  # updates the folder's index: the next report reads it
        status_of = dict(zip(rows["run_id"], rows["status"], strict=True))
        statuses = Counter(
            status_of.get(run.run_id, "not run") for run in self.pending if run.run_id not in self.others
        )
        summary = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "nothing to train"
        left = f"; {len(self.others)} left to other processes (skipped)" if self.others else ""
        print(
            f"suite {self.suite.name}: {summary}; {self.skipped} already finished (skipped){left}; "
            f"results in {self.args.results_dir}/{self.suite.name}"
        )
        if interrupted:
            print("interrupted: finished runs are kept; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        return EXIT_OK if set(statuses) <= {"ok", "pruned"} else EXIT_RUN_FAILED  # a pruned trial did its job


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
    from harness.plugins import Registry
    from harness.report.build import build
    from harness.suite.claims import all_claims

    claims = all_claims(Registry.from_plugins(), args.claims)
    report = build(args.results, args.out, reference=args.reference, on_skip=_print_skipped, claims=claims)
    print(report.markdown)
    written = "report.md, report.html, summary.parquet, claims.parquet and the figures"
    print(f"wrote {len(report.files)} files to {report.out}: {written}")
    return EXIT_OK


def _compare(args: argparse.Namespace) -> int:
    from harness.report.compare import compare, parse_gate

    gates = [parse_gate(text) for text in args.gates]
    claims = []
    if any(text.strip().startswith("claim:") for text in args.gates):
        from harness.plugins import Registry
        from harness.suite.claims import all_claims

        claims = all_claims(Registry.from_plugins(), args.claims)
    comparison = compare(args.base, args.new, gates, on_skip=_print_skipped, claims=claims)
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
    "tune": _tune,
    "validate": _validate,
    "plugins": _plugins,
    "report": _report,
    "compare": _compare,
    "bench": _bench,
}
