"""Suite features beyond validation: batch-size axis, --smoke, model/dataset checks, paper references,
and family specs (``timm:<name>``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness import DatasetSpec, ModelSpec, hookimpl
from harness.cli import main
from harness.errors import SuiteError
from harness.plugins import Registry, get_plugin_manager
from harness.results.reference import lookup, model_key_matches, read_table
from harness.suite import SMOKE_BATCH, SMOKE_EXAMPLES, load_suite

from .conftest import write_suite

ROOT = Path(__file__).resolve().parents[1]


def suite_dir(tmp_path: Path) -> Path:
    """A folder with the reference table beside the suite, as in suites/."""
    shutil.copytree(ROOT / "suites" / "reference", tmp_path / "reference")
    return tmp_path


class ShapePlugin:
    """A dataset that describes itself and a model that only takes 3-channel 32x32 images."""

    @staticmethod
    def describe(channels=3, limit_train=0, limit_test=0, noise_rate=0.0):
        return (channels, 32, 32), 10

    @staticmethod
    def check(*, num_classes, input_shape, width=4):
        if tuple(input_shape[1:]) != (32, 32) or input_shape[0] != 3:
            raise ValueError(f"needs input shape (3, 32, 32), got {tuple(input_shape)}")

    @hookimpl
    def register_datasets(self):
        return [
            DatasetSpec(
                "images",
                "math:sqrt",
                defaults={"channels": 3, "limit_train": 0, "limit_test": 0, "noise_rate": 0.0},
                describe=self.describe,
            )
        ]

    @hookimpl
    def register_models(self):
        return [
            ModelSpec("rgb-net", "math:sqrt", defaults={"width": 4}, check=self.check),
            ModelSpec("family:", "math:sqrt", defaults={"model": "x", "depth": 1}, suffix_param="model"),
        ]


@pytest.fixture
def shape_registry() -> Registry:
    return Registry(get_plugin_manager(plugins=[ShapePlugin()]))


GRID = """
    name: grid
    defaults: {epochs: 3, batch_size: 128}
    methods: [erm, sam]
    models: [rgb-net]
    datasets: [images]
    seeds: [0, 1, 2]
    noise_rates: [0.0, 0.4, 0.8]
    batch_sizes: [128, 1024]
"""


def test_batch_sizes_expand_as_an_axis(tmp_path, shape_registry):
    suite = load_suite(write_suite(tmp_path / "s.yaml", GRID), shape_registry)
    assert len(suite.runs) == 2 * 3 * 3 * 2
    assert {run.batch_size for run in suite.runs} == {128, 1024}
    assert len({run.run_id for run in suite.runs}) == len(suite.runs)


def test_smoke_shrinks_epochs_seeds_noise_batches_and_data(tmp_path, shape_registry):
    suite = load_suite(write_suite(tmp_path / "s.yaml", GRID), shape_registry, smoke=True)
    assert suite.name == "grid-smoke"
    assert len(suite.runs) == 2  # 2 methods on the one model and dataset, highest noise, min batch, first seed
    for run in suite.runs:
        assert run.epochs == 1 and run.seed == 0 and run.noise_rate == 0.8 and run.batch_size == SMOKE_BATCH
        assert run.dataset_params["limit_train"] == SMOKE_EXAMPLES == run.dataset_params["limit_test"]


def test_smoke_builds_every_method_model_and_dataset_once_not_their_product(tmp_path, shape_registry):
    text = GRID.replace("methods: [erm, sam]", "methods: [erm, sam, gsam]")
    text = text.replace("models: [rgb-net]", "models: [{name: rgb-net, width: 4}, {name: rgb-net, width: 8}, family:x]")
    text = text.replace("datasets: [images]", "datasets: [images, {name: images, limit_train: 10}]")
    full = load_suite(write_suite(tmp_path / "s.yaml", text), shape_registry).runs
    smoke = load_suite(write_suite(tmp_path / "s.yaml", text), shape_registry, smoke=True).runs
    assert len(full) == 3 * 3 * 2 * 3 * 2 * 3 and len(smoke) == 3 + 2 + 1
    seen = [(run.method, run.model, run.model_params.get("width"), run.dataset_params["limit_train"]) for run in smoke]
    assert seen == [
        ("erm", "rgb-net", 4, SMOKE_EXAMPLES),  # every method on the first model and dataset
        ("sam", "rgb-net", 4, SMOKE_EXAMPLES),
        ("gsam", "rgb-net", 4, SMOKE_EXAMPLES),
        ("erm", "rgb-net", 8, SMOKE_EXAMPLES),  # each other model with the first method
        ("erm", "family:x", None, SMOKE_EXAMPLES),
        ("erm", "rgb-net", 4, 10),  # the other dataset with the first method and model
    ]
    assert len({run.run_id for run in smoke}) == 6


def test_a_model_that_cannot_take_the_dataset_fails_validation(tmp_path, shape_registry):
    text = GRID.replace("datasets: [images]", "datasets: [{name: images, channels: 1}]")
    with pytest.raises(
        SuiteError,
        match=r"s.yaml: models\[0\] x datasets\[0\]: model 'rgb-net' cannot train on "
        r"dataset 'images' \(input shape \(1, 32, 32\), 10 classes\): needs input",
    ):
        load_suite(write_suite(tmp_path / "s.yaml", text), shape_registry)


def test_family_specs_resolve_any_suffix(tmp_path, shape_registry):
    text = GRID.replace("models: [rgb-net]", "models: [family:resnet50, {name: 'family:vit', depth: 3}]")
    runs = load_suite(write_suite(tmp_path / "s.yaml", text), shape_registry).runs
    models = {(run.model, run.model_params["model"], run.model_params["depth"]) for run in runs}
    assert models == {("family:resnet50", "resnet50", 1), ("family:vit", "vit", 3)}
    with pytest.raises(ValueError, match="ending in ':'"):
        ModelSpec("family", "math:sqrt", defaults={"model": "x"}, suffix_param="model")


def test_model_keys_select_by_parameters():
    assert model_key_matches("vit-cifar[size=S]", "vit-cifar", {"size": "S"})
    assert not model_key_matches("vit-cifar[size=S]", "vit-cifar", {"size": "B"})
    assert model_key_matches("resnet32", "resnet32", {})
    assert not model_key_matches("resnet32", "resnet18-cifar", {})


def test_lookup_finds_the_published_cell_and_converts_errors():
    rows = read_table(ROOT / "suites" / "reference" / "paper_results.csv")
    table4 = {
        "paper": "003_dc502e6d0d8ca36d",
        "table": "Table 4",
        "methods": {"sam": "sam"},
        "models": {"resnet32": "resnet32"},
    }
    found = lookup(rows, table4, method="sam", model="resnet32", model_params={}, dataset="cifar10", noise_rate=0.4)
    expected = next(
        r
        for r in rows
        if r["paper"] == "003_dc502e6d0d8ca36d"
        and r["table"] == "Table 4"
        and r["method"] == "sam"
        and float(r["label_noise"]) == 0.4
    )
    assert found.test_acc == pytest.approx(float(expected["value"]) / 100)
    table1 = {
        "paper": "003_dc502e6d0d8ca36d",
        "table": "Table 1",
        "methods": {"sam": "sam"},
        "models": {"wrn-28-10": "wrn28_10"},
    }
    error_row = next(
        r
        for r in rows
        if r["table"] == "Table 1"
        and r["paper"].startswith("003")
        and r["method"] == "sam"
        and r["dataset"] == "cifar10"
    )
    found = lookup(rows, table1, method="sam", model="wrn-28-10", model_params={}, dataset="cifar10", noise_rate=0.0)
    assert found.test_acc == pytest.approx(1 - float(error_row["value"]) / 100)  # test_error -> accuracy
    assert (
        lookup(rows, table4, method="erm", model="resnet32", model_params={}, dataset="cifar10", noise_rate=0.4) is None
    )


REFERENCED = """
    name: referenced
    defaults: {epochs: 1}
    methods: [erm, sam]
    models: [rgb-net]
    datasets: [{name: images}]
    noise_rates: [0.2, 0.4]
    reference:
      - paper: 003_dc502e6d0d8ca36d
        table: Table 4
        methods: {erm: sgd, sam: sam}
        models: {rgb-net: resnet32}
        datasets: {images: cifar10}
"""


def test_reference_values_are_carried_into_the_runs(tmp_path, shape_registry):
    folder = suite_dir(tmp_path)
    suite = load_suite(write_suite(folder / "s.yaml", REFERENCED), shape_registry)
    rows = read_table(folder / "reference" / "paper_results.csv")
    for run in suite.runs:
        paper_method = {"erm": "sgd", "sam": "sam"}[run.method]
        cell = next(
            r
            for r in rows
            if r["table"] == "Table 4" and r["method"] == paper_method and float(r["label_noise"]) == run.noise_rate
        )
        (attached,) = run.references
        assert attached.test_acc == pytest.approx(float(cell["value"]) / 100)
        assert attached.source == f"003_dc502e6d0d8ca36d Table 4 ({paper_method})"
    plain = load_suite(write_suite(folder / "p.yaml", REFERENCED.split("    reference:")[0]), shape_registry)
    assert [r.run_id for r in plain.runs] == [r.run_id for r in suite.runs]  # references don't change run ids


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("table: Table 4", "table: Table 99"), r"reference\[0\].table: '003_dc502e6d0d8ca36d Table 99' is invalid"),
        (
            ("{erm: sgd, sam: sam}", "{erm: sgd, sma: sam}"),
            r"reference\[0\].methods.sma: 'sma' is invalid.*did you mean 'sam'",
        ),
        (
            ("{erm: sgd, sam: sam}", "{erm: sgd, sam: samm}"),
            r"reference\[0\].methods.sam: 'samm' is invalid.*a method of",
        ),
        (("models: {rgb-net: resnet32}", "models: {rgb-net: resnet99}"), r"reference\[0\].models.rgb-net: 'resnet99'"),
    ],
)
def test_bad_reference_blocks_name_the_key(tmp_path, shape_registry, change, message):
    folder = suite_dir(tmp_path)
    with pytest.raises(SuiteError, match=message):
        load_suite(write_suite(folder / "s.yaml", REFERENCED.replace(*change)), shape_registry)


def test_train_eval_setting_is_checked(tmp_path, capsys):
    suite = write_suite(
        tmp_path / "s.yaml",
        """
        name: s
        defaults: {train_eval: always}
        methods: [erm]
        models: [mlp]
        datasets: [digits]
    """,
    )
    assert main(["validate", str(suite)]) == 2
    assert "defaults.train_eval: 'always' is invalid; expected end" in capsys.readouterr().err


def test_smoke_caps_explicit_limits_and_keeps_batches_divisible_by_the_ranks(tmp_path, shape_registry):
    text = GRID.replace("datasets: [images]", "datasets: [{name: images, limit_train: 50000}]")
    text = text.replace("defaults: {epochs: 3, batch_size: 128}", "defaults: {epochs: 3, batch_size: 129, nproc: 3}")
    text = text.replace("batch_sizes: [128, 1024]", "batch_sizes: [129, 1026]")
    runs = load_suite(write_suite(tmp_path / "s.yaml", text), shape_registry, smoke=True).runs
    assert {run.dataset_params["limit_train"] for run in runs} == {SMOKE_EXAMPLES}
    assert {run.batch_size for run in runs} == {SMOKE_BATCH // 3 * 3}
