"""Extensions (``harness.suite.domains``): a preset that declares its paper's models refuses a run on another
model unless the suite states the extension (on the method entry or by a condition); the text is a label
(no run id changes) carried into the result row, ``harness validate`` and the report."""

from __future__ import annotations

import re

import pytest

from harness import PresetSpec, hookimpl
from harness.cli import main
from harness.cli.listing import SUMMARY_OVER, print_runs
from harness.errors import SuiteError
from harness.plugins import Registry, get_plugin_manager
from harness.results.columns import identity
from harness.results.store import write_run
from harness.suite import load_suite

from .conftest import write_suite

WHY = "paper-sam on a CNN: the paper trains MLPs only"


class DomainPlugin:
    """``paper-sam``: SAM whose paper's experiments are MLPs only (a fixture preset with a domain)."""

    @staticmethod
    @hookimpl
    def register_presets():
        return [PresetSpec("paper-sam", optimizer="sam", scheduler_params={"rho": 0.05}, models=("mlp",), paper="p9")]


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry(get_plugin_manager(plugins=[DomainPlugin()]))


BASE = """
name: ext
defaults: {epochs: 1}
methods: [erm, paper-sam]
models: [mlp, small-cnn]
datasets: [digits]
seeds: [0, 1]
"""
BY_CONDITION = f"""
conditions:
  - when: {{method: paper-sam, model: small-cnn}}
    set: {{extension: "{WHY}"}}
    why: "p9 Sec. 5 trains MLPs only"
"""


def _runs(tmp_path, registry, text):
    suite = load_suite(write_suite(tmp_path / f"s{abs(hash(text)) % 10**8}.yaml", text), registry)
    return {(run.method, run.model, run.seed): run for run in suite.runs}


def test_a_preset_outside_its_papers_models_without_an_extension_is_refused(tmp_path, registry):
    path = write_suite(tmp_path / "plain.yaml", BASE)
    with pytest.raises(SuiteError) as error:
        load_suite(path, registry)
    message = str(error.value)
    assert message.startswith(f"{path}: methods[1].extension: missing is invalid; expected a text saying why")
    assert "'paper-sam' runs on model 'small-cnn'" in message and "mlp only (p9)" in message
    assert "never the paper's method" in message


def test_a_method_that_swaps_the_presets_scheduler_is_not_the_papers_method_and_is_not_checked(tmp_path, registry):
    text = BASE.replace("[erm, paper-sam]", "[erm, {preset: paper-sam, name: base-only, scheduler: {name: never}}]")
    runs = _runs(tmp_path, registry, text)
    assert {run.extension for run in runs.values()} == {""} and ("base-only", "small-cnn", 0) in runs


def test_a_condition_labels_only_the_runs_it_matches_and_changes_no_run_id(tmp_path, registry):
    runs = _runs(tmp_path, registry, BASE + BY_CONDITION)
    assert {key for key, run in runs.items() if run.extension} == {("paper-sam", "small-cnn", s) for s in (0, 1)}
    assert all(run.extension == WHY for run in runs.values() if run.model == "small-cnn" and run.method != "erm")
    on_the_method = BASE.replace("[erm, paper-sam]", f'[erm, {{preset: paper-sam, extension: "{WHY}"}}]')
    labelled = _runs(tmp_path, registry, on_the_method)
    assert {key for key, run in labelled.items() if run.extension} == {k for k in runs if k[0] == "paper-sam"}
    assert {key: run.run_id for key, run in labelled.items()} == {key: run.run_id for key, run in runs.items()}
    assert identity(runs["paper-sam", "small-cnn", 0])["extension"] == WHY


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("[erm, paper-sam]", "[erm, {preset: paper-sam, extension: 3}]"),
            r"methods\[1\]\.extension: 3 is invalid; expected a text",
        ),
        ((f'extension: "{WHY}"', "extension: [1]"), r"conditions\[0\]\.set\.extension: \[1\] is invalid"),
        (("extension:", "extensio:"), r"conditions\[0\]\.set\.extensio: unknown key \(did you mean 'extension'\?\)"),
    ],
)
def test_a_bad_extension_names_the_file_key_and_value(tmp_path, registry, change, expected):
    path = write_suite(tmp_path / "bad.yaml", (BASE + BY_CONDITION).replace(*change))
    with pytest.raises(SuiteError, match=rf"bad\.yaml: {expected}"):
        load_suite(path, registry)


def test_preset_models_must_be_names():
    with pytest.raises(ValueError, match="models 'mlp' is invalid"):
        PresetSpec("x", optimizer="sam", models="mlp")


def test_validate_marks_each_extension_and_counts_them_in_a_summary(tmp_path, registry, capsys):
    path = write_suite(tmp_path / "shown.yaml", BASE + BY_CONDITION)
    suite = load_suite(path, registry)
    print_runs(suite, every=False)
    out = capsys.readouterr().out
    for run in suite.runs:
        assert (f"{run.run_id}: [extension: {WHY}]" in out) == bool(run.extension)
    many = load_suite(path, registry, [f"seeds={list(range(SUMMARY_OVER))}"])
    print_runs(many, every=False)
    out = capsys.readouterr().out
    assert f"extensions:\n  {SUMMARY_OVER} runs: [extension: {WHY}]\n" in out
    assert out.count("[extension:") == 1  # counted, not listed per run


def test_the_report_marks_the_extension_and_says_why(tmp_path, registry):
    suite = load_suite(write_suite(tmp_path / "rep.yaml", BASE + BY_CONDITION), registry)
    results = tmp_path / "results"
    for run in suite.runs:
        row = {**identity(run), "status": "ok", "error": "", "test_acc": 0.8 + run.seed / 100, "train_time_s": 1.0}
        write_run(results, suite.name, row, [])
    out = tmp_path / "report"
    assert main(["report", str(results), "-o", str(out), "--reference", "erm"]) == 0
    markdown = (out / "report.md").read_text()
    accuracy = markdown.split("### Cost")[0]  # the accuracy table (the cost table repeats each row's labels)
    assert re.findall(r"\| (mlp|small-cnn) +\| 0 +\| (paper-sam[^|]*?) +\|", accuracy) == [
        ("mlp", "paper-sam"),  # on mlp it is the paper's method
        ("small-cnn", "paper-sam (extension)"),
    ]
    assert f"not the paper's method): paper-sam on small-cnn (digits): {WHY}." in markdown
    assert f"paper-sam on small-cnn (digits): {WHY}" in (out / "report.html").read_text()


def test_the_shipped_nusam_preset_is_the_papers_method_on_vits_and_mixers_only(tmp_path):
    """nuSAM's paper (002) trains ViTs and MLP-Mixers only (seed_nusam.md 1): the built-in preset
    declares them, so a CNN run needs an extension, and every shipped suite that runs nusam on a CNN
    states one."""
    shipped = Registry(get_plugin_manager())
    assert set(shipped.get("preset", "nusam").models) == {"vit-cifar", "mixer-cifar"}
    text = "name: nu\nmethods: [nusam]\nmodels: [small-cnn]\ndatasets: [digits]\nseeds: [0]\n"
    with pytest.raises(SuiteError, match=r"methods\[0\]\.extension: missing"):
        load_suite(write_suite(tmp_path / "nu.yaml", text), shipped)
    for name in ("cifar_noise", "digits_noise", "sam_family_smoke"):
        suite = load_suite(f"suites/{name}.yaml", shipped)
        nusam = [run for run in suite.runs if run.method == "nusam"]
        assert nusam and all("ViTs and MLP-Mixers only" in run.extension for run in nusam), name
    vit = load_suite("suites/vit_cifar.yaml", shipped)
    assert [run.extension for run in vit.runs if run.method == "nusam"] == [""] * 24
