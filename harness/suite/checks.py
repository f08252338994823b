"""The value checks of suite validation: each error names the file, the key path, the value and the rule.

``Checker`` formats every ``SuiteError`` the same way (``<file> (with --set ...): <key>: <value> is
invalid; expected <rule>``); ``Problems`` gathers the problems of independent checks into one error, so
a suite's every problem shows at once; ``unique`` refuses a repeated grid-axis entry, which would give
two runs the same run id. ``MISSING`` stands for a key the suite does not set.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from harness.errors import SHORT_REPR_CHARS, SuiteError, did_you_mean, short_repr
from harness.paths import NAME_RULE, is_safe_name

MISSING = object()


class Checker:
    """Validation helpers that format every error with the file and the key path."""

    def __init__(self, path: str, overrides: Sequence[str]) -> None:
        self.source = path + (f" (with --set {' '.join(overrides)})" if overrides else "")

    def fail(self, key: str, value: Any, expected: str) -> SuiteError:
        shown = "missing" if value is MISSING else short_repr(value)
        return SuiteError(f"{self.source}: {key}: {shown} is invalid; expected {expected}")

    def mapping(self, key: str, value: Any) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, value, "a mapping (key: value pairs)")
        return dict(value)

    def keys(self, key: str, value: Mapping[str, Any], allowed: Sequence[str], hints: str = "") -> None:
        """Refuse every key of ``value`` not in ``allowed``: one problem per unknown key, all in one error."""
        problems = []
        for name in value:
            if name not in allowed:
                shown = str(name) if len(str(name)) <= SHORT_REPR_CHARS else short_repr(name)  # a 1 MiB key
                where = f"{key}.{shown}" if key else shown
                problems.append(
                    f"{self.source}: {where}: unknown key{did_you_mean(shown, allowed)}; "
                    f"expected one of: {', '.join(allowed)}{hints}"
                )
        if problems:
            raise SuiteError(*problems)

    def integer(self, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if not ok or (maximum is not None and value > maximum):
            upper = f" and <= {maximum}" if maximum is not None else ""
            raise self.fail(key, value, f"an integer >= {minimum}{upper}")
        return value

    def number(
        self, key: str, value: Any, minimum: float, *, below: float | None = None, strict: bool = False
    ) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > minimum if strict else value >= minimum) and (below is None or value < below)
        if not ok:
            bound = f"> {minimum}" if strict else f">= {minimum}"
            upper = f" and < {below}" if below is not None else ""
            raise self.fail(key, value, f"a number {bound}{upper}")
        return float(value)

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value

    def name(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(key, value, "a non-empty name (string)")
        return value

    def path_name(self, key: str, value: Any, what: str) -> str:
        """A name that becomes part of file paths: ``harness.paths.NAME_RULE``, so none can leave the folder."""
        if not is_safe_name(value):
            raise self.fail(key, value, f"{what} of {NAME_RULE}")
        return value

    def listed(self, key: str, value: Any) -> list[Any]:
        if isinstance(value, (str, int, float, Mapping)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(key, value, "a non-empty list")
        return value


class Problems:
    """The problems of independent checks, gathered so that one ``SuiteError`` lists them all.

    A check whose input does not depend on another's result runs inside ``check()`` (or, for each entry
    of a list, ``each``): its ``SuiteError`` is recorded and validation goes on. ``raise_any()`` then
    raises one error with every problem (at most ``MAX_SHOWN``), before the checks that need the
    earlier results valid. A user fixing a suite sees all its problems in one ``harness validate``.
    """

    #: Problems listed in one error; a generated axis of 20,000 bad seeds must not print 20,000 lines.
    MAX_SHOWN = 20

    def __init__(self, checker: Checker) -> None:
        self.checker = checker
        self.found: list[str] = []

    def add(self, error: SuiteError) -> None:
        """Record every problem of ``error``."""
        self.found.extend(error.problems)

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Record a ``SuiteError`` the block raises, and go on after the block."""
        try:
            yield
        except SuiteError as error:
            self.add(error)

    def each(self, key: str, raw: Any, check: Callable[[str, Any], Any]) -> list[Any] | None:
        """``check(f"{key}[i]", entry)`` for every entry of the list ``raw`` (``Checker.listed``), each entry's
        problem recorded; the results, or None when the list or any entry is invalid."""
        try:
            entries = self.checker.listed(key, raw)
        except SuiteError as error:
            self.add(error)
            return None
        results: list[Any] = []
        for i, entry in enumerate(entries):
            with self.check():
                results.append(check(f"{key}[{i}]", entry))
        return results if len(results) == len(entries) else None

    def raise_any(self) -> None:
        """Raise one ``SuiteError`` listing every problem recorded so far, if there is one."""
        if not self.found:
            return
        shown = self.found[: self.MAX_SHOWN]
        left = len(self.found) - len(shown)
        if left:
            shown.append(f"{self.checker.source}: and {left} more problems; fix these and validate again")
        raise SuiteError(*shown)


def unique(checker: Checker, key: str, values: Sequence[Any], *, what: str, field: str = "") -> None:
    """Refuse a repeated entry of a grid axis: it would expand into runs with the same run id.

    One pass with a dict of hashable forms (``_frozen``), so a generated axis of 20,000 seeds costs
    milliseconds rather than the seconds of comparing every pair.
    """
    first_at: dict[Any, int] = {}
    for later, value in enumerate(values):
        earlier = first_at.setdefault(_frozen(value), later)
        if earlier != later:
            shown = value[0] if isinstance(value, tuple) else value
            hint = " (give it a distinct 'name:')" if field == ".name" else " (remove one)"
            raise checker.fail(
                f"{key}[{later}]{field}",
                shown,
                f"a {what} that is not repeated: {key}[{earlier}] is the same, and a repeat would give "
                f"runs with the same run id{hint}",
            )


def _frozen(value: Any) -> Any:
    """A hashable form of YAML data that is equal exactly when the data is (``1 == 1.0`` stays equal)."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(item) for item in value)
    if isinstance(value, (set, frozenset)):  # YAML's !!set
        return frozenset(value)
    return value
