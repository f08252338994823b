"""Names that become parts of file paths, and the one way results-folder paths are built from them.

A suite name names a folder and a method name starts every run id, the stem of the run's Parquet,
history, log and lease files. ``NAME_RULE`` is what a suite must satisfy (``harness.suite`` checks it
when the suite loads, before anything runs); ``inside`` is the write side's last line of defence: it
joins plain path components only, so no name that slipped past validation (``..``, ``/etc``, a NUL)
can put a file outside the results folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.errors import UnsafePathError

MAX_NAME = 100
NAME_RULE = f"letters, digits and '_.-', starting with a letter or digit, at most {MAX_NAME} characters"
_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MAX_NAME - 1}}}")


def is_safe_name(value: object) -> bool:
    """Whether ``value`` is a string that follows ``NAME_RULE`` (and so is a safe file-name component)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def inside(root: str | Path, *parts: str) -> Path:
    """``root / part / ...``, refusing any part that is not a single plain path component.

    Raises ``UnsafePathError`` for an empty part, ``.`` or ``..``, or one holding a separator or a NUL
    (an absolute part holds one): the result is then always below ``root``, lexically, whatever
    symlinks the user has placed there on purpose.
    """
    for part in parts:
        if part in ("", ".", "..") or any(bad in part for bad in ("/", "\\", "\0")):
            raise UnsafePathError(
                f"refusing to build a path below {root} from {part!r}: expected a single file or folder name "
                "(no '/', '\\', NUL, '.' or '..'), which keeps every file inside the results folder"
            )
    return Path(root).joinpath(*parts)
