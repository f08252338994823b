"""``run_bench``: every setting measured, then written as Parquet and Markdown (``markdown``).

Output: ``RESULTS_DIR/bench/<timestamp>-<config hash>.parquet`` (one row per candidate and setting:
model x threads), the same as Markdown (``.md``), and ``RESULTS_DIR/bench/bench.md`` (a copy of the
latest Markdown). The Markdown states what was measured, not whether it meets a target: targets are a
benchmark script's (``benchmarks/step_cost.py`` checks the performance issue's).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from harness.bench.config import COMMON_BASE, BenchConfig
from harness.bench.rows import BENCH_SCHEMA, measure_setting
from harness.plugins import Registry
from harness.results.store import write_atomic

MIB = 1024 * 1024


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return format(value, spec)


def settings(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, Any], list[dict[str, Any]]]:
    """The rows grouped by setting, ``(model, threads)``, in the order they were measured."""
    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["threads"]), []).append(row)
    return groups


def markdown(rows: Sequence[dict[str, Any]], config: BenchConfig, notes: Sequence[str] = ()) -> str:
    """The bench report: one table per setting (model x threads)."""
    if not rows:
        return "# harness bench\n\nNothing was measured.\n"
    first = rows[0]
    lines = [
        "# harness bench",
        "",
        f"Device: {first['device_name']} ({first['device']}); torch {first['torch_version']}; host "
        f"{first['host']}; precision {config.precision}"
        f"{', channels_last' if config.channels_last else ''}{', torch.compile' if config.compile else ''}; "
        f"batch {config.batch}; {config.repeats} rounds of {config.steps} steps per candidate after "
        f"{config.warmup} warm-up steps, interleaved; base optimizer "
        f"{'per preset' if config.preset_base else json.dumps(COMMON_BASE)} for every candidate.",
        "",
        "Step time: median over rounds (IQR). Ratios: median of per-round paired ratios. Theory: 1 + share of "
        "steps with a second pass (measured %SAM for stochastic schedulers); excess: median over rounds of "
        "(ratio to ERM - theory), each round with its own %SAM. Extra state: held bytes beyond the base "
        "optimizer's.",
    ]
    for (model, threads), group in settings(rows).items():
        load = group[0]["load_avg_before"], group[0]["load_avg_after"]
        title = f"## {model} ({group[0]['parameters']:,} parameters), batch {group[0]['batch_size']}"
        if threads is not None:
            title += f", {threads} thread{'s' if threads != 1 else ''}"
        lines += [
            "",
            title,
            "",
            f"Load average (1 min) {_fmt(load[0], '.2f')} before, {_fmt(load[1], '.2f')} after.",
            "",
            "| method | step ms | IQR ms | / erm | theory | excess | / sam | %SAM | img/s | state MiB | extra MiB "
            "| peak MiB | vs counterpart |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in group:
            versus = ""
            if row["counterpart_ratio"] is not None:
                versus = f"{row['counterpart']} / {row['method']} = {row['counterpart_ratio']:.3f}"
            lines.append(
                f"| {row['method']} | {row['step_time_median_s'] * 1e3:.1f} | {row['step_time_iqr_s'] * 1e3:.1f} | "
                f"{_fmt(row['ratio_to_erm'], '.3f')} | {_fmt(row['theoretical_ratio'], '.2f')} | "
                f"{_fmt(row.get('excess_over_theory'), '+.3f')} | "
                f"{_fmt(row['ratio_to_sam'], '.3f')} | {_fmt(row['sam_fraction'], '.0%')} | "
                f"{_fmt(row['throughput_samples_per_s'], '.1f')} | {row['optimizer_state_bytes'] / MIB:.2f} | "
                f"{row['extra_state_bytes'] / MIB:.2f} | "
                f"{_fmt(None if row['peak_device_bytes'] is None else row['peak_device_bytes'] / MIB, '.0f')} | "
                f"{versus} |"
            )
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


@dataclass
class BenchResult:
    rows: list[dict[str, Any]]
    markdown: str
    files: list[Path]


def run_bench(
    config: BenchConfig,
    results_dir: str | Path = "results",
    models: Sequence[str] | None = None,
    registry: Registry | None = None,
) -> BenchResult:
    """Measure every (model, thread count) setting, write Parquet and Markdown, return the rows."""
    registry = registry or Registry.from_plugins()
    models = list(models or [config.model])
    for model in models:
        BenchConfig(**{**asdict(config), "model": model}).check(registry)
    device = torch.device(config.device)
    thread_counts: list[int | None] = list(config.threads) if device.type == "cpu" and config.threads else [None]
    digest = hashlib.sha1(
        json.dumps({**asdict(config), "models": models}, sort_keys=True, default=str).encode()
    ).hexdigest()[:10]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    bench_id = f"{stamp}-{digest}"
    previous_threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for model in models:
            for threads in thread_counts:
                setting_rows, setting_notes = measure_setting(config, registry, model, threads, bench_id)
                rows += setting_rows
                notes += setting_notes
    finally:
        torch.set_num_threads(previous_threads)
    text = markdown(rows, config, list(dict.fromkeys(notes)))
    folder = Path(results_dir) / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [{name: row.get(name) for name in BENCH_SCHEMA.names} for row in rows], schema=BENCH_SCHEMA
    )
    parquet = folder / f"{bench_id}.parquet"
    write_atomic(table, parquet)
    report = folder / f"{bench_id}.md"
    report.write_text(text)
    latest = folder / "bench.md"
    latest.write_text(text)
    return BenchResult(rows=rows, markdown=text, files=[parquet, report, latest])
