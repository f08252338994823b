"""One row per candidate and setting (model x thread count): what ``harness bench`` records, and its schema."""

from __future__ import annotations

import gc
import json
import socket
import statistics
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import torch

from harness.bench.candidate import held_bytes
from harness.bench.config import COUNTERPARTS, BenchConfig
from harness.bench.measure import peak_memory, time_rounds
from harness.bench.ratios import excess_over_theory, paired_ratio, quartiles
from harness.bench.setting import Bench
from harness.machine import device_name, load_average
from harness.plugins import Registry


def measure_setting(
    config: BenchConfig, registry: Registry, model_name: str, threads: int | None, bench_id: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per candidate) for one model and one thread count, and the notes on what did not run."""
    if threads is not None:
        torch.set_num_threads(threads)
    bench = Bench(config, registry, model_name)
    device = bench.device
    names = [*config.methods, *[r for r in config.references if r not in config.methods]]
    peaks = peak_memory(bench.build, names, steps=config.steps, device=device)
    load_before = load_average()
    candidates = [c for c in (bench.build(name) for name in names) if c is not None]
    label = f"{model_name}, {threads or torch.get_num_threads()} thread(s)"
    rounds = time_rounds(candidates, repeats=config.repeats, steps=config.steps, device=device, label=label)
    load_after = load_average()
    times = rounds.times
    parameters = sum(p.numel() for p in candidates[0].model.parameters())
    started = datetime.now(timezone.utc)
    erm = "erm" if "erm" in times else "bare-erm"
    rows = []
    for candidate in candidates:
        name = candidate.name
        q1, median, q3 = quartiles(times[name])
        fraction = statistics.mean(rounds.fractions[name])
        expected = candidate.expected_fraction if candidate.expected_fraction is not None else fraction
        to_erm = paired_ratio(times, name, erm)
        excess = excess_over_theory(times, name, erm, candidate.expected_fraction, rounds.fractions[name])
        to_sam = paired_ratio(times, name, "sam")
        counterpart = COUNTERPARTS.get(name)
        versus = paired_ratio(times, counterpart, name) if counterpart else None
        state_bytes, extra_bytes = held_bytes(candidate)
        rows.append(
            {
                "bench_id": bench_id,
                "model": model_name,
                "parameters": parameters,
                "batch_size": config.batch,
                "device": str(device),
                "device_name": device_name(device),
                "threads": torch.get_num_threads() if device.type == "cpu" else None,
                "precision": config.precision,
                "channels_last": config.channels_last,
                "compiled": config.compile,
                "method": name,
                "kind": candidate.kind,
                "optimizer": candidate.optimizer_name,
                "scheduler": candidate.scheduler_name,
                "base_optimizer": json.dumps(candidate.base_settings, sort_keys=True),
                "repeats": config.repeats,
                "warmup": candidate.warmup,
                "steps_per_repeat": config.steps,
                "step_time_median_s": median,
                "step_time_q1_s": q1,
                "step_time_q3_s": q3,
                "step_time_iqr_s": q3 - q1,
                "ratio_to_erm": to_erm[0] if to_erm else None,
                "ratio_to_erm_iqr": to_erm[1] if to_erm else None,
                "ratio_to_sam": to_sam[0] if to_sam else None,
                "theoretical_ratio": 1.0 + expected,
                "excess_over_theory": excess,
                "sam_fraction": fraction,
                "grad_evals_per_step": statistics.mean(rounds.evaluations[name]),
                "throughput_samples_per_s": config.batch / median if median > 0 else None,
                "optimizer_state_bytes": state_bytes,
                "extra_state_bytes": extra_bytes,
                "peak_device_bytes": peaks.get(name),
                "counterpart": counterpart,
                "counterpart_ratio": versus[0] if versus else None,
                "counterpart_ratio_iqr": versus[1] if versus else None,
                "load_avg_before": load_before,
                "load_avg_after": load_after,
                "host": socket.gethostname(),
                "torch_version": torch.__version__,
                "started_at": started,
            }
        )
    notes = list(dict.fromkeys(bench.notes))
    del candidates, bench
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows, notes


BENCH_SCHEMA = pa.schema(
    [
        ("bench_id", pa.string()),
        ("model", pa.string()),
        ("parameters", pa.int64()),
        ("batch_size", pa.int64()),
        ("device", pa.string()),
        ("device_name", pa.string()),
        ("threads", pa.int64()),
        ("precision", pa.string()),
        ("channels_last", pa.bool_()),
        ("compiled", pa.bool_()),
        ("method", pa.string()),
        ("kind", pa.string()),
        ("optimizer", pa.string()),
        ("scheduler", pa.string()),
        ("base_optimizer", pa.string()),
        ("repeats", pa.int64()),
        ("warmup", pa.int64()),
        ("steps_per_repeat", pa.int64()),
        ("step_time_median_s", pa.float64()),
        ("step_time_q1_s", pa.float64()),
        ("step_time_q3_s", pa.float64()),
        ("step_time_iqr_s", pa.float64()),
        ("ratio_to_erm", pa.float64()),
        ("ratio_to_erm_iqr", pa.float64()),
        ("ratio_to_sam", pa.float64()),
        ("theoretical_ratio", pa.float64()),
        ("excess_over_theory", pa.float64()),
        ("sam_fraction", pa.float64()),
        ("grad_evals_per_step", pa.float64()),
        ("throughput_samples_per_s", pa.float64()),
        ("optimizer_state_bytes", pa.int64()),
        ("extra_state_bytes", pa.int64()),
        ("peak_device_bytes", pa.int64()),
        ("counterpart", pa.string()),
        ("counterpart_ratio", pa.float64()),
        ("counterpart_ratio_iqr", pa.float64()),
        ("load_avg_before", pa.float64()),
        ("load_avg_after", pa.float64()),
        ("host", pa.string()),
        ("torch_version", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")),
    ]
)
