"""Suite validation, overrides and grid expansion (harness/suite/) through ``harness.cli.main``.

The rule: every bad suite fails with exit code 2, a message on stderr naming the file, the key path,
the bad value and what was expected, and trains nothing (the results folder stays empty).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from harness.cli import EXIT_OK, EXIT_USAGE, main
from harness.errors import SuiteError
from harness.plugins import Registry
from harness.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "suites" / "quickstart.yaml"

GOOD = """\
name: tiny
description: a valid two-run suite every bad case starts from
defaults:
  epochs: 1
  batch_size: 64
methods: [erm, sam]
models: [small-cnn]
datasets: [digits]
seeds: [0]
"""

NOISY_DATASET_PLUGIN = """
from harness import DatasetSpec, hookimpl

@hookimpl
def register_datasets():
    return [DatasetSpec("noisy-digits", "harness_vision.digits:load_digits",
                        defaults={"test_fraction": 0.2, "noise_rate": 0.0})]
"""


def _edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new)


def _defaults(line: str) -> str:
    """GOOD with one more line under ``defaults:``."""
    return _edit("  epochs: 1\n", f"  epochs: 1\n  {line}\n")


def _write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def resolved_defaults(spec) -> dict:
    """A spec's defaults as a run's configuration lists them: later parameters only when set otherwise."""
    return {key: value for key, value in spec.defaults.items() if key not in spec.later_params}


def _assert_nothing_written(results: Path) -> None:
    assert not results.exists() or not any(results.rglob("*")), sorted(results.rglob("*"))


# Each case: id, suite text (None: the file does not exist), --set overrides, and the fragments the
# error on stderr must contain besides the file path (the key path, the bad value, what was expected).
BAD_SUITES = [
    ("unknown-top-level-key", GOOD.replace("models:", "model:"), [], ["model: unknown key", "did you mean 'models'"]),
    (
        "misspelled-defaults-key",
        _edit("  epochs: 1", "  epoch: 1"),
        [],
        ["defaults.epoch: unknown key", "did you mean 'epochs'"],
    ),
    ("epochs-zero", _edit("epochs: 1", "epochs: 0"), [], ["defaults.epochs: 0 is invalid", "integer >= 1"]),
    (
        "batch-size-negative",
        _edit("batch_size: 64", "batch_size: -1"),
        [],
        ["defaults.batch_size: -1 is invalid", "integer >= 1"],
    ),
    ("epochs-wrong-type", _edit("epochs: 1", "epochs: ten"), [], ["defaults.epochs: 'ten' is invalid", "integer"]),
    (
        "negative-rho",
        _edit("[erm, sam]", "[erm, {preset: sam, scheduler: {rho: -0.1}}]"),
        [],
        ["methods[1].scheduler.rho: -0.1 is invalid", ">= 0"],
    ),
    (
        "rho-on-optimizer",
        _edit("[erm, sam]", "[erm, {preset: sam, optimizer: {rho: 0.1}}]"),
        [],
        [
            "methods[1].optimizer.rho",
            "unknown parameter of optimizer 'sam'",
            "'rho' is a parameter of the scheduler 'constant', set it there",
        ],
    ),
    (
        "unknown-preset",
        _edit("[erm, sam]", "[erm, sma]"),
        [],
        ["methods[1].preset", "'sma'", "did you mean 'sam'", "known presets"],
    ),
    (
        "unknown-model",
        _edit("[small-cnn]", "[resnet-9000]"),
        [],
        ["models[0].name", "'resnet-9000'", "known models", "small-cnn"],
    ),
    ("unknown-dataset", _edit("[digits]", "[digit]"), [], ["datasets[0].name", "'digit'", "did you mean 'digits'"]),
    ("noise-rate-one", GOOD + "noise_rates: [0.0, 1.0]\n", [], ["noise_rates[1]: 1.0 is invalid", ">= 0.0 and < 1.0"]),
    (
        "noise-rate-negative",
        GOOD + "noise_rates: [-0.1]\n",
        [],
        ["noise_rates[0]: -0.1 is invalid", ">= 0.0 and < 1.0"],
    ),
    (
        "duplicate-method-names",
        _edit("[erm, sam]", "[sam, erm, {preset: sam, scheduler: {rho: 0.1}}]"),
        [],
        ["methods[2].name: 'sam' is invalid", "methods[0]", "distinct 'name:'"],
    ),
    ("missing-methods", _edit("methods: [erm, sam]\n", ""), [], ["methods: missing", "non-empty list of methods"]),
    ("invalid-yaml", GOOD + "seeds: [0, 1\n", [], ["not valid YAML: line 11, column 1: expected ','"]),
    ("invalid-set-value", GOOD, ["methods=[sam"], ["--set 'methods=[sam': the value is not valid YAML: line 1,"]),
    ("file-does-not-exist", None, [], ["cannot read the suite file"]),
    ("yaml-list-not-mapping", "- erm\n- sam\n", [], ["(top level): ['erm', 'sam'] is invalid", "a mapping"]),
    (
        "bad-base-optimizer",
        _defaults("base_optimizer: {name: momentom, lr: 0.1}"),
        [],
        ["defaults.base_optimizer.name: 'momentom' is invalid", "timm optimizer name", "did you mean 'momentum'"],
    ),
    ("lr-zero", _defaults("base_optimizer: {lr: 0}"), [], ["defaults.base_optimizer.lr: 0 is invalid", "> 0"]),
    (
        "lr-negative-in-method",
        _edit("[erm, sam]", "[erm, {preset: sam, base_optimizer: {lr: -0.5}}]"),
        [],
        ["methods[1].base_optimizer.lr: -0.5 is invalid", "> 0"],
    ),
    (
        "unknown-lr-schedule",
        _defaults("lr_schedule: {name: cosin}"),
        [],
        ["defaults.lr_schedule.name: 'cosin' is invalid", "did you mean 'cosine'", "multistep"],
    ),
    ("set-without-equals", GOOD, ["epochs"], ["--set 'epochs'", "expected key=value"]),
    ("set-unknown-key", GOOD, ["epoch=2"], ["--set 'epoch=2'", "unknown key 'epoch'", "did you mean 'epochs'"]),
    ("set-bad-value", GOOD, ["epochs=0"], ["with --set epochs=0", "defaults.epochs: 0 is invalid"]),
    (
        "set-into-a-list",
        GOOD,
        ["methods.rho=0.1"],
        ["--set 'methods.rho=0.1'", "methods is ['erm', 'sam'], not a mapping"],
    ),
    (
        "inline-method-without-optimizer-name",
        _edit("[erm, sam]", "[erm, {name: mine, optimizer: {eps: 0.1}}]"),
        [],
        ["methods[1].optimizer.name: missing", "an optimizer name"],
    ),
    (
        "duplicate-seeds",
        _edit("seeds: [0]", "seeds: [0, 1, 0]"),
        [],
        ["seeds[2]: 0 is invalid", "seeds[0]", "same run id"],
    ),
    (
        "duplicate-models",
        _edit("[small-cnn]", "[mlp, {name: mlp, hidden: 128}]"),
        [],
        ["models[1]: 'mlp' is invalid", "models[0]"],
    ),
    (
        "model-param-wrong-type",
        _edit("[small-cnn]", "[{name: mlp, hidden: 3.5}]"),
        [],
        ["models[0].hidden: 3.5 is invalid", "an integer"],
    ),
    (
        "seed-too-large",
        _edit("seeds: [0]", "seeds: [4294967296]"),
        [],
        ["seeds[0]: 4294967296 is invalid", "<= 4294967295"],
    ),
    (
        "betas-not-a-pair",
        _defaults("base_optimizer: {name: adamw, lr: 0.001, betas: 0.9}"),
        [],
        ["defaults.base_optimizer.betas: 0.9 is invalid", "two numbers"],
    ),
    (
        "decay-milestones-not-a-list",
        _defaults("lr_schedule: {name: multistep, decay_milestones: 5}"),
        [],
        ["defaults.lr_schedule.decay_milestones: 5 is invalid", "list of epochs"],
    ),
    (
        "warmup-steps-fractional",
        _defaults("lr_schedule: {name: cosine, warmup_steps: 2.5}"),
        [],
        ["defaults.lr_schedule.warmup_steps: 2.5 is invalid", "integer"],
    ),
    (
        "warmup-steps-and-epochs",
        _defaults("lr_schedule: {name: cosine, warmup_steps: 10, warmup_epochs: 1}"),
        [],
        ["defaults.lr_schedule.warmup_steps: 10 is invalid", "not both"],
    ),
]


@pytest.mark.parametrize(
    ("text", "overrides", "fragments"),
    [pytest.param(text, overrides, fragments, id=case) for case, text, overrides, fragments in BAD_SUITES],
)
def test_bad_suite_exits_2_naming_file_and_key_and_trains_nothing(tmp_path, capsys, text, overrides, fragments):
    suite = tmp_path / "missing.yaml" if text is None else _write(tmp_path, text)
    results = tmp_path / "results"
    argv = ["run", str(suite), "--results-dir", str(results)]
    for override in overrides:
        argv += ["--set", override]

    code = main(argv)

    captured = capsys.readouterr()
    assert code == EXIT_USAGE, captured
    assert "Traceback" not in captured.err
    assert captured.err.startswith(f"error: {suite}"), captured.err
    for fragment in fragments:
        assert fragment in captured.err, (fragment, captured.err)
    _assert_nothing_written(results)


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]], ids=["validate", "dry-run"])
def test_validate_and_dry_run_reject_a_bad_suite_too(tmp_path, capsys, command):
    suite = _write(tmp_path, _edit("epochs: 1", "epochs: 0"))
    results = tmp_path / "results"
    argv = [command[0], str(suite), *command[1:]]
    if command[0] == "run":
        argv += ["--results-dir", str(results)]

    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(suite) in err and "defaults.epochs: 0 is invalid" in err
    _assert_nothing_written(results)


def test_suite_file_that_is_not_utf8_is_a_suite_error(tmp_path, capsys):
    suite = tmp_path / "binary.yaml"
    suite.write_bytes(b"name: \xff\xfe\x00\n")
    assert main(["validate", str(suite)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(suite) in err and "UTF-8" in err


def test_noise_rate_on_a_dataset_entry_is_refused_in_favour_of_the_grid(tmp_path, registry):
    suite = _write(tmp_path, _edit("[digits]", "[{name: digits, noise_rate: 0.1}]"))
    with pytest.raises(SuiteError, match=r"datasets\[0\]\.noise_rate: 0\.1 is invalid.*noise_rates"):
        load_suite(suite, registry)


# Grid expansion -------------------------------------------------------------------------------

GRID = """\
name: grid
defaults:
  epochs: 3
methods: [erm, sam]
models: [small-cnn, {name: mlp, hidden: 64}]
datasets: [digits]
seeds: [0, 1, 2]
"""


def test_grid_expands_methods_models_datasets_seeds(tmp_path, registry):
    suite = load_suite(_write(tmp_path, GRID), registry)

    assert suite.name == "grid"
    assert len(suite.runs) == 2 * 2 * 1 * 3
    assert len({run.run_id for run in suite.runs}) == 12
    combos = {(run.method, run.model, run.dataset, run.seed) for run in suite.runs}
    assert combos == {
        (method, model, "digits", seed)
        for method in ("erm", "sam")
        for model in ("small-cnn", "mlp")
        for seed in (0, 1, 2)
    }
    for run in suite.runs:
        assert run.run_id.startswith(f"{run.method}-s{run.seed}-")
        assert run.epochs == 3 and run.noise_rate == 0.0


def test_run_id_is_stable_and_changes_with_a_hyperparameter(tmp_path, registry):
    path = _write(tmp_path, GRID)
    first = [run.run_id for run in load_suite(path, registry).runs]
    again = [run.run_id for run in load_suite(path, Registry.from_plugins()).runs]
    assert first == again

    changed = load_suite(path, registry, ["defaults.base_optimizer.lr=0.01"]).runs
    assert not set(first) & {run.run_id for run in changed}

    text = GRID.replace("[erm, sam]", "[erm, {preset: sam, scheduler: {rho: 0.1}}]")
    rho = _write(tmp_path, text, "rho.yaml")
    by_rho = load_suite(rho, registry).runs
    erm_ids = {run.run_id for run in by_rho if run.method == "erm"}
    sam_ids = {run.run_id for run in by_rho if run.method == "sam"}
    assert erm_ids == {rid for rid in first if rid.startswith("erm-")}  # untouched runs keep their ids
    assert len(sam_ids) == 6 and not sam_ids & set(first)


@pytest.mark.parametrize("override", ["epochs=2", "defaults.epochs=2"])
def test_set_epochs_short_and_long_form(tmp_path, registry, override):
    suite = load_suite(_write(tmp_path, GRID), registry, [override])
    assert {run.epochs for run in suite.runs} == {2}


def test_set_seeds_replaces_the_seed_axis(tmp_path, registry):
    suite = load_suite(_write(tmp_path, GRID), registry, ["seeds=[5]"])
    assert {run.seed for run in suite.runs} == {5}
    assert len(suite.runs) == 4


def test_set_creates_nested_keys_and_parses_values_as_yaml(tmp_path, registry):
    suite = load_suite(
        _write(tmp_path, GRID), registry, ["base_optimizer.lr=0.2", "lr_schedule.name=constant", "device=cpu"]
    )
    run = suite.runs[0]
    assert run.base_optimizer["lr"] == 0.2 and run.base_optimizer["name"] == "momentum"
    assert run.lr_schedule["name"] == "constant"
    assert run.device == "cpu"


def test_preset_override_lands_in_scheduler_params(tmp_path, registry):
    text = GRID.replace("[erm, sam]", "[sam, {preset: sam, name: sam-big, scheduler: {rho: 0.1}}]")
    suite = load_suite(_write(tmp_path, text), registry)

    big = [run for run in suite.runs if run.method == "sam-big"]
    plain = [run for run in suite.runs if run.method == "sam"]
    assert len(big) == len(plain) == 6
    for run in big:
        assert run.preset == "sam"
        assert run.optimizer == "sam" and run.scheduler == "constant"
        assert dict(run.scheduler_params) == {"rho": 0.1}
    assert {run.scheduler_params["rho"] for run in plain} == {0.05}


def test_a_preset_with_another_scheduler_keeps_only_the_parameters_that_scheduler_takes(tmp_path, registry):
    methods = (
        "[{preset: sam, name: sam-every-5, scheduler: {name: periodic, k: 5}},"
        " {preset: sam, name: unperturbed, scheduler: {name: never}}]"
    )
    suite = load_suite(_write(tmp_path, GRID.replace("[erm, sam]", methods)), registry)
    every_5 = next(run for run in suite.runs if run.method == "sam-every-5")
    assert every_5.scheduler == "periodic" and every_5.scheduler_params["rho"] == 0.05  # the preset's rho
    assert every_5.scheduler_params["k"] == 5
    off = next(run for run in suite.runs if run.method == "unperturbed")
    assert off.scheduler == "never" and dict(off.scheduler_params) == {}  # rho dropped, not refused


def test_plugin_defaults_are_merged_into_resolved_params(tmp_path, registry):
    suite = load_suite(_write(tmp_path, GRID), registry)
    sam_mlp = next(run for run in suite.runs if run.method == "sam" and run.model == "mlp")

    assert dict(sam_mlp.optimizer_params) == resolved_defaults(registry.get("optimizer", "sam"))
    assert sam_mlp.optimizer_params["eps"] == 1e-12 and sam_mlp.optimizer_params["norm"] == "l2"
    assert dict(sam_mlp.scheduler_params) == {"rho": 0.05}  # preset 'sam'
    assert dict(sam_mlp.model_params) == {"hidden": 64, "depth": 2, "dropout": 0.0}
    assert dict(sam_mlp.dataset_params) == dict(registry.get("dataset", "digits").defaults)
    config = sam_mlp.config()
    assert config["model"] == {"name": "mlp", "hidden": 64, "depth": 2, "dropout": 0.0}
    assert config["base_optimizer"] == {
        "name": "momentum",
        "lr": 0.05,
        "momentum": 0.9,
        "weight_decay": 5.0e-4,
    }

    erm = next(run for run in suite.runs if run.method == "erm")
    assert erm.scheduler == "never" and dict(erm.scheduler_params) == {}


def test_inline_method_resolves_with_constant_scheduler_by_default(tmp_path, registry):
    text = GRID.replace("[erm, sam]", "[{name: my-sam, optimizer: {name: sam}, scheduler: {rho: 0.2}}]")
    run = load_suite(_write(tmp_path, text), registry).runs[0]
    assert (run.method, run.preset, run.optimizer, run.scheduler) == ("my-sam", "", "sam", "constant")
    assert dict(run.scheduler_params) == {"rho": 0.2}
    assert dict(run.optimizer_params) == resolved_defaults(registry.get("optimizer", "sam"))


def test_noise_rates_expand_on_a_dataset_that_supports_them(tmp_path, add_entry_points):
    add_entry_points({"noisy": NOISY_DATASET_PLUGIN})
    registry = Registry.from_plugins()
    text = GRID.replace("[digits]", "[noisy-digits]") + "noise_rates: [0.0, 0.2, 0.4]\n"
    suite = load_suite(_write(tmp_path, text), registry)

    assert len(suite.runs) == 2 * 2 * 3 * 3
    assert len({run.run_id for run in suite.runs}) == len(suite.runs)
    assert {run.noise_rate for run in suite.runs} == {0.0, 0.2, 0.4}
    for run in suite.runs:
        assert run.dataset_params["noise_rate"] == run.noise_rate


# validate and run --dry-run on the shipped quickstart -------------------------------------------------


@pytest.mark.parametrize("command", [["validate"], ["run", "--dry-run"]], ids=["validate", "dry-run"])
def test_quickstart_validates_and_prints_every_run_id(tmp_path, capsys, monkeypatch, registry, command):
    monkeypatch.chdir(tmp_path)  # the default --results-dir is ./results
    results = tmp_path / "results"
    argv = [command[0], str(QUICKSTART), *command[1:]]
    if command[0] == "run":
        argv += ["--results-dir", str(results)]

    assert main(argv) == EXIT_OK

    out = capsys.readouterr().out
    runs = load_suite(QUICKSTART, registry).runs
    assert len(runs) == 6
    for run in runs:
        assert run.run_id in out
    _assert_nothing_written(results)


PLAIN_DATASET_PLUGIN = """
from harness import DatasetSpec, hookimpl

@hookimpl
def register_datasets():
    return [DatasetSpec("plain-digits", "harness_vision.digits:load_digits", defaults={"test_fraction": 0.2})]
"""


def test_noise_on_a_dataset_without_noise_support_exits_2(tmp_path, capsys, add_entry_points):
    add_entry_points({"plain": PLAIN_DATASET_PLUGIN})
    suite = _write(
        tmp_path, GOOD.replace("datasets: [digits]", "datasets: [plain-digits]") + "noise_rates: [0.0, 0.2]\n"
    )
    results = tmp_path / "results"
    assert main(["run", str(suite), "--results-dir", str(results)]) == EXIT_USAGE
    err = capsys.readouterr().err
    for fragment in ["noise_rates[1]: 0.2 is invalid", "'plain-digits'", "does not support label noise"]:
        assert fragment in err, (fragment, err)
    _assert_nothing_written(results)


def test_a_plugin_whose_factory_cannot_be_imported_fails_validation_naming_it(tmp_path, add_entry_points, capsys):
    add_entry_points(
        {
            "typo": """
            from harness import OptimizerSpec, hookimpl

            @hookimpl
            def register_optimizers():
                return [OptimizerSpec("my-sam", "harness_sam.sam:MySam", defaults={"rho": 0.05})]
            """
        }
    )
    suite = _write(tmp_path, _edit("[erm, sam]", "[erm, {name: mine, optimizer: {name: my-sam}}]"))
    assert main(["validate", str(suite)]) == EXIT_USAGE
    error = capsys.readouterr().err
    assert (
        f"{suite}: optimizer 'my-sam'" in error and "'harness_sam.sam:MySam' cannot be loaded: AttributeError" in error
    )


def test_a_later_parameter_enters_the_run_id_only_when_set_to_something_else(tmp_path, registry):
    """``Spec.later_params``: adding a parameter to a released component keeps the ids of earlier runs."""
    spec = registry.get("optimizer", "sam")
    assert "zero_weight_ratio" in spec.later_params and spec.defaults["zero_weight_ratio"] == 1.0
    runs = {}
    for label, method in (
        ("plain", "sam"),
        ("default", "{preset: sam, optimizer: {zero_weight_ratio: 1.0}}"),
        ("other", "{name: zero, preset: sam, optimizer: {zero_weight_ratio: 0.0}}"),
    ):
        text = _edit("[erm, sam]", f"[{method}]")
        runs[label] = load_suite(_write(tmp_path, text, f"{label}.yaml"), registry).runs[0]
    assert "zero_weight_ratio" not in runs["plain"].optimizer_params
    assert runs["default"].run_id == runs["plain"].run_id
    assert runs["other"].optimizer_params["zero_weight_ratio"] == 0.0
    with pytest.raises(ValueError, match="later_params .'nope'. must be keys of its defaults"):
        type(spec)(name="x", factory="a.b:c", defaults={"rho": 0.1}, later_params=("nope",))


# Independent problems in one suite: a top-level key, a run setting, a method, a model parameter and a seed.
MANY_PROBLEMS = (
    GOOD.replace("description:", "descripton:")
    .replace("  epochs: 1\n", "  epoch: 1\n")
    .replace("[erm, sam]", "[erm, no-such-method]")
    .replace("[small-cnn]", "[{name: mlp, hidden: 3.5}]")
    .replace("seeds: [0]", "seeds: [0, zero]")
)
# What each problem's line says after the file path: the key path, the value or "unknown", what was expected.
EVERY_PROBLEM = [
    ("descripton: unknown key", "did you mean 'description'"),
    ("defaults.epoch: unknown key", "did you mean 'epochs'"),
    ("methods[1].preset: unknown preset 'no-such-method'", "known presets: "),
    ("models[0].hidden: 3.5 is invalid", "expected an integer"),
    ("seeds[1]: 'zero' is invalid", "expected an integer >= 0"),
]


@pytest.mark.parametrize("command", ["validate", "run"])
def test_every_independent_problem_is_reported_at_once(tmp_path, capsys, command):
    suite, results = _write(tmp_path, MANY_PROBLEMS), tmp_path / "results"
    argv = [command, str(suite)] + (["--results-dir", str(results)] if command == "run" else [])
    assert main(argv) == EXIT_USAGE
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(EVERY_PROBLEM), lines  # one line a problem, no traceback
    for line, (where, expected) in zip(lines, EVERY_PROBLEM, strict=True):
        assert line.startswith(f"error: {suite}: {where}"), line
        assert expected in line, (expected, line)
    _assert_nothing_written(results)


def test_a_bad_run_setting_does_not_hide_a_bad_method_or_another_setting(tmp_path, registry):
    text = _edit("  epochs: 1\n", "  epochs: 0\n  device: gpu\n").replace("[erm, sam]", "[erm, {preset: sam, x: 1}]")
    with pytest.raises(SuiteError) as error:
        load_suite(_write(tmp_path, text), registry)
    assert [problem.split(": ", 2)[1] for problem in error.value.problems] == [
        "defaults.epochs",
        "defaults.device",
        "methods[1].x",
    ]


def test_problems_beyond_the_first_twenty_are_counted_not_listed(tmp_path, registry):
    seeds = ", ".join(f"s{i}" for i in range(25))
    with pytest.raises(SuiteError) as error:
        load_suite(_write(tmp_path, _edit("seeds: [0]", f"seeds: [{seeds}]")), registry)
    problems = error.value.problems
    assert len(problems) == 21 and problems[19].startswith(f"{tmp_path / 'suite.yaml'}: seeds[19]: 's19' is invalid")
    assert problems[20] == f"{tmp_path / 'suite.yaml'}: and 5 more problems; fix these and validate again"


def test_checks_that_combine_parts_wait_for_valid_parts(tmp_path, registry):
    # A repeated seed is only refused once every seed is valid, and the grid's checks once every axis is:
    # the first problem shown is never one a fix of an earlier one would change.
    text = _edit("seeds: [0]", "seeds: [0, 0, -1]")
    with pytest.raises(SuiteError) as error:
        load_suite(_write(tmp_path, text), registry)
    assert len(error.value.problems) == 1 and "seeds[2]: -1 is invalid" in str(error.value)
