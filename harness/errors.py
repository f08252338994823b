"""Exceptions of the harness. Every message says what was wrong, where, and what would be right."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 8, 8, 120, 120
SHORT_REPR_CHARS = 240


class HarnessError(Exception):
    """Base class of every error the harness raises on purpose."""


class PluginError(HarnessError):
    """A plugin could not be loaded, or its registrations contradict another plugin's."""


class DuplicateNameError(PluginError):
    """Two providers registered the same name for the same kind of component."""


class UnknownNameError(HarnessError, KeyError):
    """A name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class SuiteError(HarnessError):
    """A suite file is invalid. Each problem names the file, the key path, the value and what was expected.

    One error may list several problems (``SuiteError(first, second, ...)``): validation goes on past
    an independent check's problem (``harness.suite.checks.Problems``), so one ``harness validate``
    shows them all rather than one per edit. ``str()`` gives one problem a line.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


class UsageError(HarnessError):
    """A command-line option is wrong."""


class EngineUnavailable(UsageError):
    """The engine an executor runs on (a Slurm controller, a Ray cluster) cannot be reached: nothing was run.

    The CLI treats it as a usage error (exit 2); the contract kit skips the executor's rule, saying why."""


class UnsafePathError(HarnessError):
    """A name would make a path leave the results folder (``harness.paths.inside``)."""


class ProtocolError(HarnessError):
    """A plugin broke the step protocol (for example a perturbed step with a single gradient evaluation)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix naming the closest candidate, or '' when none is close."""
    matches = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def short_repr(value: object) -> str:
    """``repr(value)`` in at most ``SHORT_REPR_CHARS`` characters (deep, long and late parts elided: ``...``).

    Error messages show the user's value; a value of any size (a generated list, an aliased YAML block)
    must not make the message, or the time to build it, grow with it: ``reprlib`` visits only the
    first few items of each level, and the result is cut to length.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= SHORT_REPR_CHARS else text[: SHORT_REPR_CHARS - 3] + "..."
