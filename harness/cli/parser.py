"""The ``harness`` command's argument parser: every subcommand, its options and their help."""

from __future__ import annotations

import argparse

from harness import __version__
from harness.cli.listing import SUMMARY_ENDS, SUMMARY_OVER


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Benchmark sharpness-aware minimization variants.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="train every run of a suite and write Parquet results")
    _run_arguments(run)
    run.add_argument(
        "--no-tuning",
        action="store_true",
        help="on a suite with a tuning: block, train its runs at their fixed settings instead of tuning them",
    )
    tune = commands.add_parser(
        "tune",
        help="run a suite's tuning studies (equal budgets, selection on the validation split), then the finals",
    )
    _run_arguments(tune)

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
    report.add_argument(
        "--claims",
        action="append",
        default=[],
        metavar="FILE",
        help="a claims file to judge besides the shipped one and the plugins' (repeatable)",
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
        "train_time_s:+10%% (new > 1.1 x base), grad_evals:0 (any change); claim:ID (or claim:all) when NEW_DIR "
        "does not reproduce a claim BASE_DIR reproduced, or contradicts it",
    )
    compare.add_argument(
        "--claims",
        action="append",
        default=[],
        metavar="FILE",
        help="a claims file for claim: gates besides the shipped one and the plugins' (repeatable)",
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


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite and how to train it, alike for ``run`` and ``tune``."""
    _suite_arguments(parser)
    parser.add_argument("--results-dir", default="results", help="where results go (default: ./results)")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded runs and train nothing")
    _all_runs_argument(parser)
    parser.add_argument("--rerun", action="store_true", help="train runs again even if their results exist")
    parser.add_argument(
        "--executor",
        help="how runs are executed: local (default), submitit, ray, ... (overrides the suite's executor block)",
    )
    parser.add_argument("--workers", type=int, help="parallel workers of the executor (local: processes)")
    parser.add_argument(
        "--nproc", type=int, help="train each run data-parallel over N processes with DDP (same as --set nproc=N)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a quick wiring check: 1 epoch, first seed, highest noise rate, batch <= 32, <= 64 examples, "
        "every method, model and dataset once (not their product); "
        "results go to <suite>-smoke",
    )


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
