"""What was run and where (``harness.report.run_settings``, ``harness.report.provenance``): every cell by hand."""

from __future__ import annotations

import json

import pandas as pd

from harness.cli import main
from harness.report.provenance import NO_COMMIT, provenance_table
from harness.report.run_settings import hyperparameter_table, run_settings_table

from .test_report import markdown_rows, write_synthetic

BASE = {"name": "momentum", "lr": 0.05, "momentum": 0.9}


def config(method: str, model: str, optimizer: dict, scheduler: dict, seed: int = 0) -> str:
    return json.dumps(
        {
            "suite": "s",
            "method": method,
            "preset": method,
            "seed": seed,
            "noise_rate": 0.0,
            "epochs": 15,
            "batch_size": 64,
            "device": "auto",
            "optimizer": optimizer,
            "scheduler": scheduler,
            "base_optimizer": BASE,
            "lr_schedule": {"name": "cosine", "warmup_epochs": 1},
            "model": {"name": model, "channels": 32 if model == "small-cnn" else 64},
            "dataset": {"name": "digits", "noise_rate": 0.0, "augment": False},
            "host": "ignored: provenance",
        }
    )


def runs() -> pd.DataFrame:
    gsam = ({"name": "gsam", "alpha": 0.01, "adaptive": False}, {"name": "lr_linked", "rho_max": 0.04, "rho_min": 0.02})
    looksam = ({"name": "looksam", "alpha": 0.7}, {"name": "periodic", "rho": 0.05, "k": 5, "offset": 0})
    rows = [
        ("gsam", model, config("gsam", model, *gsam, seed=seed)) for model in ("small-cnn", "mlp") for seed in (0, 1)
    ]
    rows.append(("looksam", "small-cnn", config("looksam", "small-cnn", *looksam)))
    return pd.DataFrame(rows, columns=["method", "model", "config"]).assign(suite="s")


def by_method(table) -> dict[str, dict[str, str]]:
    return {row[1]: dict(zip(table.columns, row, strict=True)) for row in table.rows}


def test_each_methods_resolved_hyperparameters():
    table = hyperparameter_table(runs())
    rows = by_method(table)
    assert table.columns == [
        "suite", "method", "optimizer", "scheduler", "rho", "alpha", "k", "base optimizer", "lr", "epochs",
        "batch size", "other hyperparameters",
    ]  # fmt: skip
    gsam, looksam = rows["gsam"], rows["looksam"]
    assert (gsam["optimizer"], gsam["scheduler"], gsam["rho"]) == ("gsam", "lr_linked", "rho_max=0.04, rho_min=0.02")
    assert (gsam["alpha"], gsam["k"], gsam["base optimizer"], gsam["lr"]) == ("0.01", "-", "momentum", "0.05")
    assert (gsam["epochs"], gsam["batch size"]) == ("15", "64")
    assert gsam["other hyperparameters"] == (
        "base_optimizer.momentum=0.9, lr_schedule.name=cosine, lr_schedule.warmup_epochs=1, optimizer.adaptive=false"
    )
    assert (looksam["rho"], looksam["alpha"], looksam["k"]) == ("0.05", "0.7", "5")
    assert looksam["other hyperparameters"].endswith("lr_schedule.warmup_epochs=1, scheduler.offset=0")


def test_run_settings_list_each_value_of_a_setting_that_differs_between_conditions():
    table = run_settings_table(runs())
    settings = {row[1]: row[2] for row in table.rows}
    assert settings == {"dataset.augment": "false", "device": "auto", "model.channels": "32 | 64"}
    assert all(row[0] == "s" for row in table.rows)  # the labels, seed, host and the condition are no setting


def test_provenance_per_suite_and_folder_with_no_commit_invented():
    frame = pd.DataFrame(
        {
            "suite": "s",
            "source": ["/a", "/a", "/b"],
            "host": ["n1", "n2", "n1"],
            "device": ["cuda", "cuda", "cpu"],
            "device_name": ["NVIDIA H100", "NVIDIA H100", ""],
            "torch_version": "2.4.0",
            "harness_version": ["0.5.0", "0.5.0", "0.4.0"],
            "plugin_versions": [
                json.dumps({"optimizer": "sam-harness 0.5.0", "model": "timm-models 1.0"}),
                json.dumps({"optimizer": "sam-harness 0.5.0"}),
                json.dumps({"optimizer": "sam-harness 0.4.0"}),
            ],
            "started_at": pd.to_datetime(["2026-12-01 09:12", "2026-12-01 08:00", "2026-12-03 10:00"], utc=True),
            "finished_at": pd.to_datetime(["2026-12-01 10:00", "2026-12-02 17:40", None], utc=True),
        }
    )
    table = provenance_table(frame)
    a, b = (dict(zip(table.columns, row, strict=True)) for row in table.rows)
    assert (a["folder"], a["runs"], a["dates (UTC)"]) == ("/a", "2", "2026-12-01 08:00 to 2026-12-02 17:40")
    assert (a["host"], a["device"], a["device name"], a["torch"]) == ("n1, n2", "cuda", "NVIDIA H100", "2.4.0")
    assert a["plugins"] == "sam-harness 0.5.0, timm-models 1.0" and a["commit"] == NO_COMMIT
    assert (b["dates (UTC)"], b["device name"], b["harness"]) == ("2026-12-03 10:00 to ?", "-", "0.4.0")
    frame["git_commit"] = ["abc123", "def456+dirty", None]  # the column of runs since it was recorded
    a, b = (dict(zip(table.columns, row, strict=True)) for row in provenance_table(frame).rows)
    assert (a["commit"], b["commit"]) == ("abc123, def456+dirty", NO_COMMIT)


def test_the_report_shows_hyperparameters_and_provenance(tmp_path):
    folder = write_synthetic(tmp_path / "results")
    assert main(["report", str(folder), "-o", str(tmp_path / "out")]) == 0
    markdown = (tmp_path / "out" / "report.md").read_text()
    rows = {r["method"]: r for r in markdown_rows(markdown, "| suite ", after="## Hyperparameters")}
    assert sorted(rows) == ["asam", "erm", "sam"]
    assert (rows["sam"]["optimizer"], rows["sam"]["rho"], rows["sam"]["epochs"]) == ("sam", "0.05", "200")
    (provenance,) = markdown_rows(markdown, "| suite ", after="## Provenance")
    assert provenance["runs"] == "29" and provenance["host"] == ", ".join(f"machine-{s}" for s in range(5))
    assert provenance["commit"] == NO_COMMIT
