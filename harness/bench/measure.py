"""How ``harness bench`` times its candidates: interleaved rounds of step blocks, and peak device memory.

Timing (shared/STYLE.md's discipline, MLCommons AlgoPerf's): every candidate first takes its ``warmup``
untimed steps; then ``repeats`` rounds, each timing one block of ``steps`` consecutive steps of every
candidate, round-robin with the order rotated every round, so drift (other load, clocks) hits all
candidates alike. A block of ``steps`` steps (a multiple of LookSAM's and SAM-k's period k=5 by default)
holds whole periods, so the per-step time of a periodic method is its average. On CPU a block is timed
with ``time.perf_counter``; on CUDA with a pair of CUDA events recorded on an empty queue and resolved
after each round.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.bench.candidate import Candidate
from harness.run.timing import synchronize


@dataclass
class Rounds:
    """Per candidate name, one value per timed round: seconds per step, share of perturbed steps, and
    gradient evaluations per step (from the candidate's ``state``; the warm-up counts in none of them)."""

    times: dict[str, list[float]]
    fractions: dict[str, list[float]]
    evaluations: dict[str, list[float]]


def time_rounds(
    candidates: Sequence[Candidate], *, repeats: int, steps: int, device: torch.device, label: str = ""
) -> Rounds:
    """Time ``candidates`` as the module docstring says. Progress (a line per round, ``label``) goes to stderr."""
    candidates = list(candidates)
    began = time.perf_counter()
    _progress(f"{label}: warming up {len(candidates)} candidates")
    for candidate in candidates:
        for _ in range(candidate.warmup):
            candidate.step()
    synchronize(device)
    names = [c.name for c in candidates]
    rounds = Rounds(times={n: [] for n in names}, fractions={n: [] for n in names}, evaluations={n: [] for n in names})
    cuda = device.type == "cuda"
    for round_ in range(repeats):
        shift = round_ % len(candidates)
        order = candidates[shift:] + candidates[:shift]
        gc.collect()
        events = []
        for candidate in order:
            state = candidate.state
            perturbed, evaluations = state.perturbed_steps, state.grad_evals
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                # an empty queue first: queued work of the previous candidate would hide host overhead
                synchronize(device)
                start.record()
                for _ in range(steps):
                    candidate.step()
                end.record()
                events.append((candidate.name, start, end))
            else:
                started = time.perf_counter()
                for _ in range(steps):
                    candidate.step()
                rounds.times[candidate.name].append((time.perf_counter() - started) / steps)
            rounds.fractions[candidate.name].append((state.perturbed_steps - perturbed) / steps)
            rounds.evaluations[candidate.name].append((state.grad_evals - evaluations) / steps)
        if cuda:
            synchronize(device)
            for name, start, end in events:
                rounds.times[name].append(start.elapsed_time(end) / 1000.0 / steps)
        _progress(f"{label}: round {round_ + 1}/{repeats} timed ({time.perf_counter() - began:.0f} s)")
    return rounds


def peak_memory(
    build: Callable[[str], Candidate | None], names: Sequence[str], *, steps: int, device: torch.device
) -> dict[str, int]:
    """CUDA: peak bytes allocated by each candidate's model, state and steps, one candidate at a time.

    ``build(name)`` builds a fresh candidate, which takes its warm-up (at least one step) and ``steps``
    steps. Empty on other devices.
    """
    if device.type != "cuda":
        return {}
    peaks: dict[str, int] = {}
    # One throwaway step first: cuDNN's autotuning and cuBLAS's workspaces are allocated once and kept,
    # and would otherwise count in the first candidate's peak only.
    warm = build(names[0]) if names else None
    if warm is not None:
        warm.step()
    del warm
    for name in names:
        gc.collect()
        torch.cuda.empty_cache()
        synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        candidate = build(name)
        if candidate is None:
            continue
        for _ in range(max(candidate.warmup, 1) + steps):
            candidate.step()
        synchronize(device)
        peaks[name] = int(torch.cuda.max_memory_allocated(device) - before)
        del candidate
    gc.collect()
    torch.cuda.empty_cache()
    return peaks


def _progress(line: str) -> None:
    print(f"bench {line}", file=sys.stderr, flush=True)
