"""Worker processes load the same plugins as the driver that checked the suite.

A fresh worker process finds the installed ``sam_harness`` entry points itself. The driver may know
more: entry points added at run time (tests register plugins that way, on ``sys.path`` folders the
spawned worker inherits). ``driver_entry_points`` lists what the driver loads, and
``use_entry_points`` makes a worker's registry load those too, so a suite that validated in the
driver trains with the same components in its workers.

This goes through ``harness.plugins._entry_points``, the core's one place that lists entry points;
nothing else in the core is touched.
"""

from __future__ import annotations

from importlib import metadata

from harness import plugins as core_plugins


def driver_entry_points() -> list[tuple[str, str]]:
    """``(name, "module:attr")`` of every ``sam_harness`` entry point this process loads."""
    return [(entry_point.name, entry_point.value) for entry_point in core_plugins._entry_points()]


def use_entry_points(entry_points: list[tuple[str, str]]) -> None:
    """Make this (worker) process also load the driver's entry points that it does not see itself."""
    own = core_plugins._entry_points()
    seen = {(entry_point.name, entry_point.value) for entry_point in own}
    extra = [
        metadata.EntryPoint(name=name, value=value, group=core_plugins.ENTRY_POINT_GROUP)
        for name, value in entry_points
        if (name, value) not in seen
    ]
    if extra:
        merged = sorted([*own, *extra], key=lambda entry_point: entry_point.name)
        core_plugins._entry_points = lambda: merged
