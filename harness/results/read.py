"""Reading a results folder, and setting damaged files aside.

Reading (``read_folder``) never lets one file block the others: a damaged file (truncated, empty,
garbage), one the system refuses to open, one whose column types clash with the others' and a
``.parquet`` without the run (or history) columns are each skipped and named in what it returns. Rows
already read are kept in an index per folder and kind (``.index/run.parquet``, ``.index/history.parquet``),
so reading thousands of files costs a listing and the files that changed. ``set_aside_damaged``
renames damaged files only (never deletes them) so that ``harness run`` trains their runs again.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harness.errors import HarnessError
from harness.results.hyperparameters import with_hyperparameters
from harness.results.store import FINISHED_STATUSES, HISTORY_SCHEMA, RUN_SCHEMA, STEP_SCHEMA, suite_dir, write_atomic

#: The columns (and their kinds) that make a Parquet file a run, history or step-trace file. Any other
#: ``.parquet`` in a results folder (a report's summary.parquet, a table of one's own) is not results.
_TEXT = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


REQUIRED_COLUMNS = {
    "run": {"run_id": _TEXT, "status": _TEXT, "config": _TEXT},
    "history": {"run_id": _TEXT, "epoch": (pa.types.is_integer,)},
    "steps": {"run_id": _TEXT, "step": (pa.types.is_integer,)},
}

#: A suite folder's subfolder of each kind of per-run file beside the run files (``harness.results.store``).
SUBFOLDERS = {"history": "history", "steps": "steps"}


#: The columns the harness writes, by kind: a file whose type for one of them cannot be unified with the
#: harness's is kept out of a read, so that a stray table never shadows the real run files.
SCHEMAS = {"run": RUN_SCHEMA, "history": HISTORY_SCHEMA, "steps": STEP_SCHEMA}


#: The index of a folder's files of one kind, inside the folder it indexes (never read as results, and one
#: file per kind, so that reading ``history/`` as run files leaves its history index alone): the rows of
#: every file read so far, each tagged with its file's key (name, size, mtime, inode); the keys, the kind
#: and each file's Arrow schema are in the schema metadata (so files without rows, such as a crash's empty
#: history, count too).
INDEXES = {kind: Path(".index") / f"{kind}.parquet" for kind in SCHEMAS}


_INDEX_VERSION = 2


_FILE = "__harness_file"


#: Files read before their tables are combined (bounds the memory of many small tables), and by how many threads.
_BATCH = 256


_READERS = min(4, os.cpu_count() or 1)


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A ``.parquet`` file of a results folder that was not read, and why.

    ``problem`` is ``damaged`` (it cannot be parsed: truncated, empty, garbage; ``harness run`` sets it
    aside), ``unreadable`` (the system refused to open it, e.g. permissions: named, never moved), ``clash``
    (a column's type cannot be unified with the other files': named, never moved) or ``foreign`` (not a
    ``kind`` file at all). The first two are warnings, the others notes.
    """

    path: Path
    reason: str
    problem: str
    kind: str = "run"
    version: str = ""  # the file's key when it was read (``set_aside_damaged`` checks it)

    @property
    def damaged(self) -> bool:
        return self.problem == "damaged"

    @property
    def level(self) -> str:
        """``warning`` for a results file that could not be read, ``note`` for one left out on purpose."""
        return "warning" if self.problem in ("damaged", "unreadable") else "note"

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class FolderRows:
    """The rows of a folder's readable run (or history) files, and the files it skipped."""

    rows: pd.DataFrame
    skipped: tuple[Skipped, ...]


def read_folder(folder: str | Path, kind: str = "run") -> FolderRows:
    """Every row of the ``kind`` (``run`` or ``history``) files directly in ``folder``, in file-name order.

    A file that cannot be parsed (truncated, empty, garbage) is skipped as damaged; one the system refuses
    to open (permissions) as unreadable; one without the columns of ``REQUIRED_COLUMNS[kind]`` as not a
    results file; one whose column types cannot be unified with ``SCHEMAS[kind]`` and the other files'
    (``pa.unify_schemas(..., promote_options="permissive")``: an int beside a double is promoted, a string
    beside a double is not) as a clash. None stops the others from being read.

    A file is read once: its rows are kept in ``folder/.index/<kind>.parquet``, valid for as long as the
    file's size, mtime (in nanoseconds) and inode are unchanged (a rewrite, always a rename, changes the
    inode), so reading a folder again costs a directory listing, one Parquet file and the files added or
    changed since. The index is rewritten when files were added, changed or removed (unless the folder is
    read-only). Columns and their types are those of the files present now, unified.
    """
    folder = Path(folder)
    listing = _listing(folder)
    index, indexed = _load_index(folder, kind)
    current = set(listing.values())
    valid = {key: schema for key, schema in indexed.items() if key in current}
    kept = index.filter(pc.is_in(index[_FILE], value_set=pa.array(list(valid), pa.string())))
    known = {key.split("\0", 1)[0] for key in valid}
    skipped: list[Skipped] = []
    new = [(folder / name, listing[name]) for name in sorted(set(listing) - known)]
    table, read = _combine(kept, valid, new, kind, skipped)
    files = {**valid, **read}
    if read or len(valid) != len(indexed):
        _save_index(folder, kind, table, files)
    if not files:
        return FolderRows(pd.DataFrame(columns=SCHEMAS[kind].names), tuple(skipped))
    rows = table.sort_by(_FILE).drop_columns([_FILE]).combine_chunks().to_pandas()
    return FolderRows(with_hyperparameters(rows) if kind == "run" else rows, tuple(skipped))


def read_run_file(path: str | Path) -> pd.DataFrame:
    """The rows of one run file, read directly (not through its folder): raises on a file that cannot be read."""
    return pq.read_table(path).to_pandas()


def _listing(folder: Path) -> dict[str, str]:
    """``{file name: key}`` of the ``*.parquet`` files in ``folder`` (none when it is not a folder)."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except OSError as error:
        raise HarnessError(f"{folder}: cannot list the results folder ({error.strerror or error})") from error
    listing = {}
    for entry in entries:
        if entry.name.endswith(".parquet") and not entry.name.startswith(".") and entry.is_file():
            try:
                listing[entry.name] = _version(entry.name, entry.stat())
            except FileNotFoundError:  # removed since the listing
                continue
    return listing


def _version(name: str, stat: os.stat_result) -> str:
    """A file's key in the index: its name, size, mtime in nanoseconds and inode (``write_atomic`` renames a
    new file over the old one, so a rewrite changes the inode even where mtimes are coarse)."""
    return f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}"


def _load_index(folder: Path, kind: str) -> tuple[pa.Table, dict[str, pa.Schema]]:
    """The folder's index of ``kind`` files and ``{file key: the file's schema}``; empty when there is none or
    it cannot be used (damaged, of another version or kind, malformed metadata): it is then rebuilt."""
    empty = pa.table({_FILE: pa.array([], pa.string())}), {}
    try:
        index = pq.read_table(folder / INDEXES[kind])
        about = json.loads((index.schema.metadata or {}).get(b"harness_index", b"{}"))
        if about["version"] != _INDEX_VERSION or about["kind"] != kind or _FILE not in index.column_names:
            return empty
        schemas = [pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text))) for text in about["schemas"]]
        files = {str(key): schemas[number] for key, number in about["files"].items()}
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return empty
    return index.replace_schema_metadata(None), files


def _save_index(folder: Path, kind: str, table: pa.Table, files: Mapping[str, pa.Schema]) -> None:
    """Write the index atomically; a folder that cannot be written (read-only results) just has none."""
    schemas = _distinct(files.values())
    about = {
        "version": _INDEX_VERSION,
        "kind": kind,
        "schemas": [base64.b64encode(schema.serialize().to_pybytes()).decode() for schema in schemas],
        "files": {key: next(i for i, o in enumerate(schemas) if o.equals(schema)) for key, schema in files.items()},
    }
    try:
        write_atomic(table.replace_schema_metadata({"harness_index": json.dumps(about)}), folder / INDEXES[kind])
    except OSError:
        pass


def _distinct(schemas: Iterable[pa.Schema]) -> list[pa.Schema]:
    """One of each distinct schema (most files of a folder share a few)."""
    found: list[pa.Schema] = []
    for schema in schemas:
        if not any(schema is other or schema.equals(other) for other in found):
            found.append(schema)
    return found


def _combine(
    index: pa.Table, indexed: Mapping[str, pa.Schema], files: list[tuple[Path, str]], kind: str, skipped: list[Skipped]
) -> tuple[pa.Table, dict[str, pa.Schema]]:
    """The index's rows (of the files ``indexed``, present now) and those of ``files`` (path, key), read now,
    as one table whose columns and types are those of these files, unified, with ``{key: schema}`` of the
    files read; the files not read are added to ``skipped``."""
    present = _distinct(indexed.values())
    checked = pa.unify_schemas([SCHEMAS[kind], *present], promote_options="permissive")  # they passed the check
    parts, batch, read = [], [], {}
    for path, key, table in _read_files(files, kind):
        if table is None:
            continue
        if isinstance(table, Skipped):
            skipped.append(dataclasses.replace(table, version=key))
            continue
        if not any(table.schema is other or table.schema.equals(other) for other in present):
            try:
                checked = pa.unify_schemas([checked, table.schema], promote_options="permissive")
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                reason = f"{_clash(checked, table.schema, kind)}; left out of this read (the file is kept)"
                skipped.append(Skipped(path, reason, "clash", kind, key))
                continue
            present.append(table.schema)
        read[key] = table.schema
        batch.append((key, table))
        if len(batch) == _BATCH:
            parts.append(_tagged(batch))
            batch = []
    parts.append(_tagged(batch))
    if not present:
        return parts[-1], read
    schema = pa.unify_schemas(present, promote_options="permissive").append(pa.field(_FILE, pa.string()))
    kept = index.select([name for name in schema.names if name in index.column_names])
    return pa.concat_tables([_conform(part, schema) for part in (kept, *parts)]), read


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly the columns of ``schema`` (missing ones null), cast to its types."""
    columns = [
        table[field.name] if field.name in table.column_names else pa.nulls(table.num_rows, field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, names=schema.names).cast(schema)


def _clash(schema: pa.Schema, other: pa.Schema, kind: str) -> str:
    """``its column types clash: column x is string here, double in the run files`` (each column that does)."""
    clashes = []
    for field in other:
        if field.name in schema.names and not _unifiable(schema.field(field.name), field):
            clashes.append(f"{field.name} is {field.type} here, {schema.field(field.name).type} in the {kind} files")
    return f"its column types clash: column {'; column '.join(clashes)}"


def _unifiable(first: pa.Field, second: pa.Field) -> bool:
    try:
        pa.unify_schemas([pa.schema([first]), pa.schema([second])], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return False
    return True


def _read_files(files: list[tuple[Path, str]], kind: str) -> Iterator[tuple[Path, str, pa.Table | Skipped | None]]:
    """``(path, key, _read_file(path))`` of each file in order, read by a few threads (pyarrow reads without
    the GIL: 1.5 times as fast on 2 cores); consumed as they come, so that batches bound the memory."""
    if not files:
        return
    with ThreadPoolExecutor(_READERS) as pool:
        tables = pool.map(lambda file: _read_file(file[0], kind), files)
        for (path, key), table in zip(files, tables, strict=True):
            yield path, key, table


def _tagged(batch: list[tuple[str, pa.Table]]) -> pa.Table:
    """The tables of ``batch`` as one, each row tagged with its file's key (one allocation per batch)."""
    if not batch:
        return pa.table({_FILE: pa.array([], pa.string())})
    table = pa.concat_tables([table for _, table in batch], promote_options="permissive").combine_chunks()
    keys = pa.array([key for key, table in batch for _ in range(table.num_rows)], pa.string())
    return table.append_column(_FILE, keys)


def _read_file(path: Path, kind: str) -> pa.Table | Skipped | None:
    """The table in ``path``; ``Skipped`` when it cannot be parsed (damaged), the system refuses to open it
    (unreadable: a permission, an I/O error; never damage, since another user's file is not ours to move),
    or it is not a ``kind`` file; None when it is gone."""
    try:
        with pq.ParquetFile(path) as parquet:
            problem = _not_results(parquet.schema_arrow, REQUIRED_COLUMNS[kind])
            if problem:
                return Skipped(path, f"not a {kind} file ({problem}); ignored", "foreign", kind)
            return parquet.read(use_threads=False)  # faster for files of one or a few rows
    except FileNotFoundError:  # removed since the listing
        return None
    except OSError as error:
        return Skipped(path, f"cannot be opened ({_one_line(error)}); skipped, left in place", "unreadable", kind)
    except pa.ArrowException as error:
        return Skipped(path, f"cannot be read ({_one_line(error)}); skipped", "damaged", kind)


def _not_results(schema: pa.Schema, required: Mapping[str, tuple]) -> str:
    """What keeps ``schema`` from being a results file's ('' when nothing does)."""
    missing = [name for name in required if name not in schema.names]
    if missing:
        return f"no column {', '.join(missing)}"
    wrong = [
        f"{name} is {schema.field(name).type}"
        for name, kinds in required.items()
        if not any(test(schema.field(name).type) for test in kinds)
    ]
    return f"column {', '.join(wrong)}" if wrong else ""


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = f"{type(error).__name__}: {' '.join(str(error).split())}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_runs(folder: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The run rows of one suite folder (``RESULTS_DIR/<suite>``) as a DataFrame; ``read_folder`` says
    which files it skipped. A column in ``columns`` that no file has is all null."""
    rows = read_folder(folder, "run").rows
    return rows.reindex(columns=list(columns)) if columns is not None else rows


def read_history(folder: str | Path) -> pd.DataFrame:
    """The history rows of one suite folder (its ``history/`` files)."""
    return read_folder(Path(folder) / SUBFOLDERS["history"], "history").rows


def read_steps(folder: str | Path) -> pd.DataFrame:
    """The step-trace rows of one suite folder (its ``steps/`` files; none without ``trace_every``)."""
    return read_folder(Path(folder) / SUBFOLDERS["steps"], "steps").rows


def finished_run_ids(results_dir: str | Path, suite: str) -> set[str]:
    """Ids of runs already recorded with a status in ``FINISHED_STATUSES`` (skipped on resume)."""
    runs = read_runs(suite_dir(results_dir, suite), columns=["run_id", "status"])
    return set(runs.loc[runs["status"].isin(FINISHED_STATUSES), "run_id"])


@dataclasses.dataclass(frozen=True)
class SetAside:
    """A damaged file moved out of the way (``set_aside_damaged``)."""

    path: Path
    moved_to: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}; moved to {self.moved_to.name}: its run counts as not finished"


def set_aside_damaged(results_dir: str | Path, suite: str) -> list[SetAside]:
    """Rename every damaged run, history or step-trace file of the suite folder to ``<name>.corrupt-<UTC time>``.

    Damaged means it cannot be parsed (``Skipped.damaged``); a file the system refuses to open, or whose
    column types clash, is never moved. A run whose history (or step-trace) file is damaged has its run file
    set aside too, so both are written again when the run trains again (``harness run`` does it, since the run is no
    longer finished). Nothing is deleted. A file rewritten since it was read (a run that trained
    meanwhile) stays; one already gone (another driver moved it first) counts as handled.
    """
    folder = suite_dir(results_dir, suite)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    moves = []
    for skipped in read_folder(folder, "run").skipped:
        if skipped.damaged and _unchanged(skipped.path, skipped.version):
            moves.append(_move(skipped.path, stamp, skipped.reason))
    runs = _listing(folder)  # before the history is read: a run file written after it is a new run's
    for kind in ("history", "steps"):
        for skipped in read_folder(folder / SUBFOLDERS[kind], kind).skipped:
            if skipped.damaged and _unchanged(skipped.path, skipped.version):
                moves.append(_move(skipped.path, stamp, skipped.reason))
                run_file = folder / skipped.path.name
                if _unchanged(run_file, runs.get(run_file.name)):
                    moves.append(_move(run_file, stamp, f"its {kind} file {skipped.path} cannot be read"))
    return [move for move in moves if move is not None]


def _unchanged(path: Path, version: str | None) -> bool:
    """Whether ``path`` is still the ``version`` that was read (not rewritten since by a run that trained)."""
    try:
        return _version(path.name, path.stat()) == version
    except FileNotFoundError:
        return False


def _move(path: Path, stamp: str, reason: str) -> SetAside | None:
    """Rename ``path`` aside; None when it is already gone (set aside by another driver)."""
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        path.rename(target)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise HarnessError(
            f"{path}: {reason.removesuffix('; skipped')}, and it cannot be moved aside to {target.name} "
            f"({error.strerror or error}); move it away, then run again"
        ) from error
    return SetAside(path, target, reason.removesuffix("; skipped"))
