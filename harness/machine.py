"""The machine a measurement ran on, named for the record: processor, device and load average.

Cheap to import (torch is imported only to name a CUDA device), so benchmark scripts and reports can
use it without paying for torch.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def processor_name() -> str:
    """The CPU's model name (/proc/cpuinfo; the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA; the CPU's model name and core count otherwise."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"{processor_name()} ({os.cpu_count()} CPUs)"


def load_average() -> float | None:
    """The 1-minute load average (None where the platform has none): how quiet the machine was."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def provenance() -> dict[str, Any]:
    """Where and when a benchmark record was measured: CPU, core count, Python, host and UTC time."""
    return {
        "cpu": processor_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "host": platform.node(),
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def append_record(path: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``record`` to the JSON list of records at ``path`` (created with its folder); return them all."""
    records = json.loads(path.read_text()) if path.exists() else []
    records.append(record)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1) + "\n")
    return records
