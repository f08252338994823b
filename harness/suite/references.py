"""A suite's ``reference:`` block: published numbers (suites/reference/paper_results.csv) attached to runs.

``reference_blocks`` checks each block (the paper and table it cites exist in the table; the method and
model names it maps are the suite's and the paper's) and reads the table once; ``with_reference``
gives a run every published cell that matches it, one per block (``harness.results.reference``
reads and matches), so a run two papers report is compared with both. A block's optional ``differs``
says where the paper's setting differs from the suite's; each cited row's ``reported`` (``final`` or
``best``) is checked, since it picks the measured column the report compares with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from harness.contract.run_spec import REPORTED, RunSpec
from harness.errors import SuiteError, did_you_mean, short_repr
from harness.suite.checks import MISSING, Checker


def reference_blocks(
    checker: Checker, raw: Any, path: str, methods: list[dict[str, Any]], models: list[tuple[str, dict]]
) -> list[tuple[dict[str, Any], list[dict[str, str]]]]:
    """Validate the ``reference`` block: each entry cites a paper table and maps names to the paper's."""
    from harness.results.reference import DEFAULT_TABLE, REFERENCE_KEYS, model_key_name, read_table

    if raw in (None, []):
        return []
    table_path = Path(path).resolve().parent / DEFAULT_TABLE
    try:
        rows = read_table(table_path)
    except OSError as error:
        raise checker.fail("reference", "...", f"the reference table at {table_path} ({error.strerror})") from None
    method_names = [m["name"] for m in methods]
    model_names = [m[0] for m in models]
    blocks = []
    for i, entry in enumerate(checker.listed("reference", raw)):
        key = f"reference[{i}]"
        block = checker.mapping(key, entry)
        checker.keys(key, block, REFERENCE_KEYS)
        for required in ("paper", "table", "methods", "models"):
            if required not in block:
                raise checker.fail(f"{key}.{required}", MISSING, "a value (see the README's reference section)")
        if not isinstance(block.get("differs", ""), str):
            raise checker.fail(f"{key}.differs", block["differs"], "a text saying where the paper's setting differs")
        cited = [r for r in rows if r["paper"] == block["paper"] and r["table"] == block["table"]]
        if not cited:
            known = sorted({f"{r['paper']} {r['table']}" for r in rows})
            raise checker.fail(
                f"{key}.table", f"{block['paper']} {block['table']}", f"a table of {table_path}: {known}"
            )
        _check_reported(table_path, cited)
        for mapping_key, names, column in (("methods", method_names, "method"), ("models", model_names, "model")):
            mapping = checker.mapping(f"{key}.{mapping_key}", block[mapping_key])
            paper_names = sorted({r[column] for r in cited})
            for ours, theirs in mapping.items():
                if (model_key_name(str(ours)) if mapping_key == "models" else ours) not in names:
                    raise checker.fail(
                        f"{key}.{mapping_key}.{ours}",
                        ours,
                        f"one of this suite's {mapping_key}{did_you_mean(ours, names)}",
                    )
                if theirs not in paper_names:
                    raise checker.fail(
                        f"{key}.{mapping_key}.{ours}",
                        theirs,
                        f"a {column} of {block['paper']} {block['table']}{did_you_mean(str(theirs), paper_names)}: "
                        f"{', '.join(paper_names)}",
                    )
        blocks.append((block, rows))
    return blocks


def _check_reported(table_path: Path, cited: list[dict[str, str]]) -> None:
    """Every cited row says ``final`` or ``best`` (or nothing: ``final``), so its cell finds its measured column."""
    from harness.results.reference import reported

    for row in cited:
        if reported(row) not in REPORTED:
            raise SuiteError(
                f"{table_path}: {row['paper']} {row['table']} ({row['method']}, {row['model']}, noise "
                f"{row['label_noise']}): reported {short_repr(row['reported'])} is invalid; expected "
                f"{' or '.join(REPORTED)} (what the paper reports: the final or the best test accuracy)"
            )


def with_reference(run: RunSpec, references: list[tuple[dict[str, Any], list[dict[str, str]]]]) -> RunSpec:
    """``run`` with every published cell that matches it, one per reference block (in the suite's order)."""
    from harness.results.reference import lookup

    found = (
        lookup(
            rows,
            block,
            method=run.method,
            model=run.model,
            model_params=run.model_params,
            dataset=run.dataset,
            noise_rate=run.noise_rate,
        )
        for block, rows in references
    )
    cells = tuple(cell for cell in found if cell is not None)
    return dataclasses.replace(run, references=cells) if cells else run
