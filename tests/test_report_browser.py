"""The HTML report in a real browser: headless Chromium loads every embedded figure and shows the main table.

Needs Chromium (Debian package ``chromium``; ``.ci/run`` installs it). Without a browser on PATH the
tests are skipped, and the skip reason says so.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main

from .test_report import write_synthetic

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
)


@pytest.fixture(scope="module")
def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        reason = (
            f"no headless browser: none of {', '.join(BROWSERS)} is on PATH; "
            "install one (apt-get install -y chromium, as .ci/run does) to run the HTML report test"
        )
        print(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main(["report", str(write_synthetic(tmp_path_factory.mktemp("results"))), "-o", str(out)]) == 0
    return out


def chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [browser, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"{browser} exited {result.returncode}: {result.stderr[-2000:]}"
    return result


def images_loaded(dom: str) -> tuple[int, int]:
    match = re.search(r'<body[^>]*data-images-loaded="(\d+)/(\d+)"', dom)
    assert match, "the page's load handler did not run: no data-images-loaded on <body>"
    return int(match[1]), int(match[2])


def test_every_figure_loads_and_the_main_table_is_there(browser, report, tmp_path):
    dom = chromium(browser, tmp_path / "profile", "--dump-dom", (report / "report.html").as_uri()).stdout
    figures = sorted(report.glob("*.png"))
    assert len(figures) == 6
    assert images_loaded(dom) == (len(figures), len(figures))
    summary = re.search(r'<table id="summary">.*?</table>', dom, re.S)
    assert summary, 'no <table id="summary"> in the rendered page'
    assert summary[0].count("<tr>") == 1 + 6  # the header and one row per condition and method
    assert 'class="text best"' in summary[0] or 'class="best"' in summary[0]
    assert '<table id="failures">' in dom
    claims = re.findall(r'<table id="claims">.*?</table>', dom, flags=re.S)
    assert claims, "no Claims section in the rendered page"
    assert "sam-beats-erm-clean" in claims[0] and re.search(
        r"<td[^>]*>(reproduced|not reproduced|inconclusive)</td>", claims[0]
    )


def test_a_broken_figure_is_detected(browser, report, tmp_path):
    html = (report / "report.html").read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    dom = chromium(browser, tmp_path / "profile", "--dump-dom", broken.as_uri()).stdout
    assert images_loaded(dom) == (5, 6)


def test_screenshot_of_the_page(browser, report, tmp_path):
    shot = tmp_path / "page.png"
    chromium(
        browser,
        tmp_path / "profile",
        "--window-size=1400,2400",
        f"--screenshot={shot}",
        (report / "report.html").as_uri(),
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (1400, 2400)
