"""A hostile or careless suite: names that would leave the results folder, YAML bombs, deep nesting,
duplicate keys, a huge grid (issue 16).

Every bad suite is an exit-2 error naming the file, the key and the value, in bounded time, memory and
message length, and nothing is written anywhere; the write side refuses a path outside the results
folder even for a run that never went through validation.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.cli.listing import SUMMARY_ENDS
from harness.errors import UnsafePathError, short_repr
from harness.execution import lease_path, log_path, run_payload, run_worker
from harness.paths import MAX_NAME, NAME_RULE, inside
from harness.results.store import write_run
from harness.suite import MAX_RUNS, load_suite
from harness.suite.yaml_loader import MAX_ALIASED, MAX_BYTES, MAX_DEPTH

GOOD = """\
name: tiny
description: a valid two-run suite every bad case starts from
defaults:
  epochs: 1
  batch_size: 32
methods: [erm, sam]
models: [small-cnn]
datasets: [{name: digits, limit_train: 64, limit_test: 64}]
seeds: [0]
"""
MESSAGE_CHARS = 2000  # the most an error message may take, whatever the size of the value it shows
SECONDS = 10  # generous for CI: each case takes well under a second here (printed with -s)
RSS_MB = 500  # the interpreter, PyYAML and the plugin registry take about 30 MB


def _edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


def _files_below(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


# names that become paths ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../../escaped", "{tmp}/absolute", "sub/dir", "nul\0byte", ".hidden", "-dash", "x" * (MAX_NAME + 1), "tab\t"],
    ids=["parent", "absolute", "slash", "nul", "dot", "dash", "too-long", "tab"],
)
def test_a_method_name_that_is_not_a_plain_file_name_exits_2_and_nothing_is_written(tmp_path, capsys, name):
    name = name.format(tmp=tmp_path)
    around = tmp_path / "a" / "b"
    results = around / "results"
    suite = around / "suite.yaml"
    around.mkdir(parents=True)
    suite.write_text(_edit("[erm, sam]", f"[erm, {{preset: sam, name: {json.dumps(name)}}}]"))

    code = main(["run", str(suite), "--results-dir", str(results)])

    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert err.startswith(f"error: {suite}: methods[1].name: {short_repr(name)} is invalid"), err
    assert NAME_RULE in err
    assert _files_below(tmp_path) == {suite}  # nothing at all, inside the results folder or around it


@pytest.mark.parametrize("name", ["quick\n", "x" * (MAX_NAME + 1), "a/b"], ids=["newline", "too-long", "slash"])
def test_a_suite_name_that_is_not_a_plain_file_name_exits_2(tmp_path, capsys, name):
    suite = tmp_path / "suite.yaml"
    suite.write_text(_edit("name: tiny", f"name: {json.dumps(name)}"))

    assert main(["validate", str(suite)]) == EXIT_USAGE

    err = capsys.readouterr().err
    assert f"{suite}: name: {short_repr(name)} is invalid; expected a suite name" in err and NAME_RULE in err


@pytest.mark.parametrize("name", ["history", "steps", "logs", "checkpoints", "report"])
def test_a_suite_named_like_a_folder_the_harness_writes_exits_2(tmp_path, capsys, name):
    # A suite "history" was no longer found in its results folder (read as a history folder); "report" is
    # where `harness report RESULTS_DIR` writes by default.
    suite = tmp_path / "suite.yaml"
    suite.write_text(_edit("name: tiny", f"name: {name}"))

    assert main(["validate", str(suite)]) == EXIT_USAGE

    expected = f"name: '{name}' is invalid; expected a suite name other than history, steps, logs, checkpoints, report"
    assert expected in capsys.readouterr().err


def test_every_shipped_method_and_suite_name_follows_the_rule(registry):
    """The rule refuses no shipped suite (their run ids are unchanged: the rule only refuses)."""
    for path in sorted((Path(__file__).resolve().parents[1] / "suites").glob("*.yaml")):
        for smoke in (False, True):
            assert load_suite(path, registry, smoke=smoke).runs


@pytest.mark.parametrize("part", ["..", ".", "", "/etc", "a/b", "a\\b", "a\0b"])
def test_inside_refuses_anything_but_one_plain_path_component(tmp_path, part):
    with pytest.raises(UnsafePathError, match="single file or folder name"):
        inside(tmp_path, "suite", part)
    assert inside(tmp_path, "suite", "run-s0-abc.parquet") == tmp_path / "suite" / "run-s0-abc.parquet"


@pytest.fixture
def hostile_run(tmp_path, registry):
    """A valid run whose method name was changed afterwards, as a plugin or a hand-built payload could."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(GOOD)
    run = load_suite(suite, registry).runs[0]
    suite.unlink()
    return dataclasses.replace(run, method="../../escaped")


def test_the_write_side_refuses_a_run_id_that_leaves_the_results_folder(tmp_path, hostile_run):
    results = tmp_path / "a" / "b" / "results"
    row = {"run_id": hostile_run.run_id, "suite": hostile_run.suite, "status": "ok"}

    for write in (
        lambda: write_run(results, hostile_run.suite, row, [{"epoch": 1}]),
        lambda: write_run(results, "../escaped", {**row, "run_id": "fine"}, []),
        lambda: log_path(results, hostile_run),
        lambda: lease_path(results, hostile_run),
        lambda: run_worker(run_payload(hostile_run), str(results)),
    ):
        with pytest.raises(UnsafePathError, match="single file or folder name"):
            write()
    assert _files_below(tmp_path) == set()


# YAML bombs, deep nesting, duplicate keys ---------------------------------------------------------------


def _laughs(levels: int = 9) -> str:
    """A flow sequence holding a billion-laughs chain: level k refers 9 times to level k - 1 (9**levels)."""
    chain = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    chain += [f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, levels)]
    return f"[{', '.join(chain)}]"


def _validate_in_a_subprocess(tmp_path: Path, argv: list[str]) -> tuple[int, str, float, float]:
    """``harness validate`` in a fresh process: exit code, stderr, seconds and peak RSS in MB.

    A process, not ``main``, so a case that hangs or eats memory (as on the old code) is killed after
    ``SECONDS`` and fails the test instead of the test run. Its peak memory is its own ``VmHWM``, sampled
    while it runs (``ru_maxrss`` would count the pytest process it was forked from); 0 without /proc.
    """
    err = tmp_path / "stderr.txt"
    peak_kb = 0
    with err.open("wb") as stream:
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "validate", *argv],
            stdout=subprocess.DEVNULL,
            stderr=stream,
            cwd=tmp_path,
        )
        while process.poll() is None:
            peak_kb = max(peak_kb, _high_water_kb(process.pid))
            if time.perf_counter() - start > SECONDS:
                process.send_signal(signal.SIGKILL)
                process.wait()
                break
            time.sleep(0.01)
        seconds = time.perf_counter() - start
    return process.returncode, err.read_text(errors="replace"), seconds, peak_kb / 1024


def _high_water_kb(pid: int) -> int:
    """The process's peak resident memory so far (``VmHWM``), or 0 where /proc does not say."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


DESCRIPTION = "description: a valid two-run suite every bad case starts from"
BOMB = "aliases (*name) expand to more than"
ALIAS_CHAIN = ", ".join(["&n0 [1]"] + [f"&n{k} [*n{k - 1}]" for k in range(1, 80)])  # 80 levels, none written
PATHOLOGICAL = [
    ("bomb-in-description", _edit(DESCRIPTION, f"description: {_laughs()}"), [], BOMB),
    ("bomb-as-a-method", _edit("[erm, sam]", f"[erm, {_laughs()}]"), [], BOMB),
    ("bomb-in-defaults-epochs", _edit("epochs: 1", f"epochs: {_laughs()}"), [], BOMB),
    ("bomb-in-a-dataset-parameter", _edit("limit_test: 64", f"limit_test: {_laughs()}"), [], BOMB),
    ("bomb-in-a-set-value", GOOD, ["--set", f"description={_laughs()}"], BOMB),
    ("50000-nested-brackets", GOOD + f"metrics: {'[' * 50_000}{']' * 50_000}\n", [], f"deeper than {MAX_DEPTH} levels"),
    ("nesting-through-aliases", GOOD + f"reference: [{ALIAS_CHAIN}]\n", [], f"deeper than {MAX_DEPTH} levels"),
    ("recursive-alias", _edit(DESCRIPTION, "description: &self [*self]"), [], "refers to a value that contains it"),
    ("larger-than-the-limit", GOOD + ("# padding\n" * (MAX_BYTES // 10 + 1)), [], f"more than {MAX_BYTES:,} bytes"),
    # PyYAML builds these scalars with int() and datetime(), whose ValueError was a traceback (exit 1)
    ("integer-of-5000-digits", _edit("epochs: 1", f"epochs: {'9' * 5000}"), [], "line 4, column 11: the value cannot"),
    ("impossible-date", _edit(DESCRIPTION, "description: 2024-02-30"), [], "line 2, column 14: the value cannot"),
    ("impossible-date-in-a-set-value", GOOD, ["--set", "description=2023-13-01"], "the value cannot be read"),
    # a grid of 20 million runs grew past gigabytes before any error
    (
        "a-grid-of-20-million-runs",
        _edit("seeds: [0]", f"seeds: {list(range(1000))}\nnoise_rates: {[i / 1000 for i in range(100)]}")
        + f"batch_sizes: {list(range(1, 101))}\n",
        [],
        f"the grid expands to 20,000,000 runs (2 methods x 1 models x 1 datasets x 100 noise_rates x 100 "
        f"batch_sizes x 1000 seeds); expected at most {MAX_RUNS:,} runs",
    ),
    # names and values of any size in other messages (a 900 KB parameter name, component name, --set target)
    ("a-huge-parameter-name", _edit("limit_test: 64", f"? {'p' * 900_000}\n   : 1"), [], "unknown parameter"),
    ("a-huge-model-name", _edit("[small-cnn]", f"[{'m' * 900_000}]"), [], "unknown model 'mmmm"),
    (
        "a-set-below-a-huge-value",
        _edit(DESCRIPTION, f"description: {'d' * 900_000}"),
        ["--set", "description.x=1"],
        "not a mapping",
    ),
]


@pytest.mark.parametrize(
    ("text", "extra", "fragment"),
    [pytest.param(text, extra, fragment, id=case) for case, text, extra, fragment in PATHOLOGICAL],
)
def test_pathological_yaml_exits_2_quickly_in_little_memory_with_a_short_message(tmp_path, text, extra, fragment):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)

    code, err, seconds, rss_mb = _validate_in_a_subprocess(tmp_path, [str(suite), *extra])

    print(f"{seconds:.2f} s, {rss_mb:.0f} MB, {len(err)} characters: {err[:200]!r}")
    assert code == EXIT_USAGE, err[-2000:]
    assert err.startswith(f"error: {suite}") and fragment in err, err[:2000]
    assert "Traceback" not in err and len(err) < MESSAGE_CHARS
    assert seconds < SECONDS and rss_mb < RSS_MB


def test_a_suite_that_reuses_a_block_through_aliases_is_fine(tmp_path, registry):
    """Aliases themselves are welcome: only their expansion past ``MAX_ALIASED`` values is refused."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        _edit(
            "[erm, sam]",
            "[{preset: sam, name: a, scheduler: &rho {rho: 0.1}}, {preset: sam, name: b, scheduler: *rho}]",
        )
    )
    assert [run.scheduler_params["rho"] for run in load_suite(suite, registry).runs] == [0.1, 0.1]
    assert MAX_ALIASED >= 1000


def test_a_huge_value_shows_a_short_excerpt_in_the_error(tmp_path, capsys):
    """No bomb: 20,000 values written out are still shown in a few hundred characters."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(_edit("epochs: 1", f"epochs: [{', '.join(map(str, range(20_000)))}]"))

    assert main(["validate", str(suite)]) == EXIT_USAGE

    err = capsys.readouterr().err
    assert err.startswith(f"error: {suite}: defaults.epochs: [0, 1, 2, 3, 4, 5, 6, 7, ...] is invalid"), err[:300]
    assert len(err) < MESSAGE_CHARS


def test_a_huge_unknown_key_is_shown_short(tmp_path, capsys):
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        _edit("  epochs: 1\n", f"  epochs: 1\n  ? {'k' * 500_000}\n  : 1\n")
    )  # YAML's explicit key: a simple key is at most 1024 characters

    assert main(["validate", str(suite)]) == EXIT_USAGE

    err = capsys.readouterr().err
    assert "defaults.'kkkk" in err and "unknown key" in err and len(err) < MESSAGE_CHARS


@pytest.mark.parametrize(
    ("text", "extra", "key", "lines"),
    [
        (GOOD + "seeds: [1]\n", [], "seeds", (9, 10)),
        (_edit("  batch_size: 32\n", "  batch_size: 32\n  epochs: 50\n"), [], "epochs", (4, 6)),
        (GOOD, ["--set", "defaults={epochs: 1,\n epochs: 2}"], "epochs", (1, 2)),
    ],
    ids=["top-level", "nested", "in-a-set-value"],
)
def test_a_duplicate_key_exits_2_naming_the_key_and_both_lines(tmp_path, capsys, text, extra, key, lines):
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)

    assert main(["validate", str(suite), *extra]) == EXIT_USAGE

    err = capsys.readouterr().err
    assert err.startswith(f"error: {suite}") and "not valid YAML" in err, err
    assert f"duplicate key {key!r} (first at line {lines[0]}, again at line {lines[1]})" in err, err


def test_merge_keys_may_override_what_they_merge(tmp_path, registry):
    """``<<: *base`` then a key of base is YAML's override, not a duplicate."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        _edit(
            "[erm, sam]",
            "[{preset: sam, scheduler: &base {rho: 0.1}}, {preset: sam, name: b, scheduler: {<<: *base, rho: 0.2}}]",
        )
    )
    assert [run.scheduler_params["rho"] for run in load_suite(suite, registry).runs] == [0.1, 0.2]


# a large grid ---------------------------------------------------------------------------------------------


def _grid(tmp_path: Path, seeds: int) -> Path:
    suite = tmp_path / f"grid{seeds}.yaml"
    suite.write_text(_edit("seeds: [0]", f"seeds: [{', '.join(map(str, range(seeds)))}]"))
    return suite


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]], ids=["validate", "dry-run"])
def test_a_large_suite_is_summarised_unless_all_runs_is_asked(tmp_path, capsys, registry, command):
    suite = _grid(tmp_path, 30)  # 60 runs
    runs = load_suite(suite, registry).runs
    argv = [
        command[0],
        str(suite),
        *command[1:],
        *(["--results-dir", str(tmp_path / "r")] if command[0] == "run" else []),
    ]

    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    shown = [run.run_id for run in runs if run.run_id in out]
    assert shown == [run.run_id for run in (*runs[:SUMMARY_ENDS], *runs[-SUMMARY_ENDS:])]
    assert f"... {len(runs) - 2 * SUMMARY_ENDS} more" in out and "--all-runs" in out
    assert "method: erm (30), sam (30)" in out and "seed: 30 values: 0, 1, 2, ..., 29" in out

    assert main([*argv, "--all-runs"]) == EXIT_OK
    out = capsys.readouterr().out
    assert all(run.run_id in out for run in runs) and "more" not in out


def test_loading_grows_linearly_with_the_grid(tmp_path, registry):
    """Ten times the seeds take about ten times as long, not a hundred (every pair of seeds was compared)."""
    small, large = _grid(tmp_path, 3_000), _grid(tmp_path, 30_000)
    load_suite(small, registry)  # imports every factory once

    def seconds(path: Path) -> float:
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            load_suite(path, registry)
            best = min(best, time.perf_counter() - start)
        return best

    small_s, large_s = seconds(small), seconds(large)
    print(f"3,000 seeds: {small_s:.2f} s, 30,000 seeds: {large_s:.2f} s ({large_s / small_s:.1f}x)")
    assert large_s < 30 * small_s
