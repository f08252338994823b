"""The HTML report in a real browser: headless Chromium loads every embedded figure and shows the main table.

Needs Chromium (Debian package ``chromium``; ``.ci/run`` installs it). Without a browser on PATH the
tests are skipped, and the skip reason says so.
"""

from __future__ import annotations

import html
import json
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


#: Injected into a copy of the page: after load, marks ``<body data-layout="...">`` with the viewport's width,
#: the page's scroll width, each summary table's id and header count, every summary header cell whose box leaves
#: the viewport, and each table's rendered height by id.
MEASURE = """<script>
window.addEventListener("load", function () {
  var outside = [], tables = [], heights = [];
  document.querySelectorAll("table.summary").forEach(function (table) {
    var cells = table.querySelectorAll("th");
    tables.push(table.id + ":" + cells.length);
    cells.forEach(function (cell) {
      var box = cell.getBoundingClientRect();
      if (box.left < 0 || box.right > window.innerWidth) { outside.push(table.id + "/" + cell.textContent); }
    });
  });
  document.querySelectorAll("table[id]").forEach(function (table) {
    heights.push(table.id + ":" + Math.round(table.getBoundingClientRect().height));
  });
  document.body.setAttribute("data-layout", JSON.stringify({
    width: window.innerWidth, scroll: document.documentElement.scrollWidth,
    tables: tables, outside: outside, heights: heights}));
});
</script>"""


def layout(browser: str, profile: Path, page: Path, width: int) -> dict:
    """The page's measured layout (``MEASURE``) in a window ``width`` px wide."""
    dom = chromium(browser, profile, f"--window-size={width},1000", "--dump-dom", page.as_uri()).stdout
    match = re.search(r'data-layout="([^"]*)"', dom)
    assert match, "the measuring script did not run"
    return json.loads(html.unescape(match[1]))


def measured(report: Path, tmp_path: Path, *, print_style: bool = False) -> Path:
    """A copy of the report with ``MEASURE``; with ``print_style``, its print rules applied on screen."""
    text = (report / "report.html").read_text()
    if print_style:
        assert "@media print {" in text
        text = text.replace("@media print {", "@media all {")
    page = tmp_path / ("print.html" if print_style else "screen.html")
    page.write_text(text.replace("</body>", MEASURE + "</body>"))
    return page


def test_every_figure_loads_as_svg_and_the_summary_tables_are_there(browser, report, tmp_path):
    dom = chromium(browser, tmp_path / "profile", "--dump-dom", (report / "report.html").as_uri()).stdout
    figures = sorted(report.glob("*.png"))
    assert len(figures) == 6 and len(list(report.glob("*.pdf"))) == 6
    assert images_loaded(dom) == (len(figures), len(figures))
    sources = re.findall(r'<img src="(data:[^;]+);base64,', dom)
    assert sources == ["data:image/svg+xml"] * len(figures)  # vector figures, each decoded (above)
    for part in ("accuracy", "cost", "sharpness"):
        summary = re.search(rf'<table id="summary-{part}" class="summary">.*?</table>', dom, re.S)
        assert summary, f'no <table id="summary-{part}"> in the rendered page'
        assert summary[0].count("<tr>") == 1 + 6  # the header and one row per condition and method
    accuracy = re.search(r'<table id="summary-accuracy".*?</table>', dom, re.S)[0]
    assert accuracy.count('class="best"') == 2  # one best per condition
    assert '<table id="failures">' in dom
    claims = re.findall(r'<table id="claims">.*?</table>', dom, flags=re.S)
    assert claims, "no Claims section in the rendered page"
    assert "sam-beats-erm-clean" in claims[0] and re.search(
        r"<td[^>]*>(reproduced|not reproduced|inconclusive)</td>", claims[0]
    )


def test_every_summary_column_is_within_a_1400_px_window(browser, report, tmp_path):
    found = layout(browser, tmp_path / "profile", measured(report, tmp_path), 1400)
    assert found["width"] == 1400
    assert found["tables"] == ["summary-accuracy:12", "summary-cost:13", "summary-sharpness:6"]
    assert found["outside"] == [], f"summary columns outside the window: {found['outside']}"
    assert found["scroll"] <= found["width"]  # no horizontal scrollbar on the page


def test_the_print_layout_fits_every_summary_column_on_an_a4_landscape_page(browser, report, tmp_path):
    found = layout(browser, tmp_path / "profile", measured(report, tmp_path, print_style=True), 1040)
    assert found["outside"] == [], f"summary columns cut off in print: {found['outside']}"  # 277 mm at 96 dpi
    pdf = tmp_path / "report.pdf"
    chromium(
        browser,
        tmp_path / "profile",
        "--no-pdf-header-footer",
        f"--print-to-pdf={pdf}",
        (report / "report.html").as_uri(),
    )
    pages = re.findall(rb"/Type\s*/Page(?!s)", pdf.read_bytes())
    assert pdf.read_bytes().startswith(b"%PDF-") and len(pages) >= 2  # the tables, then the figures


def test_the_hyperparameter_and_provenance_sections_render(browser, report, tmp_path):
    found = layout(browser, tmp_path / "profile", measured(report, tmp_path), 1400)
    heights = dict(entry.rsplit(":", 1) for entry in found["heights"])
    for table in ("hyperparameters", "provenance"):  # the synthetic runs have no other settings
        assert int(heights[table]) > 40, f"the {table} table is not rendered: {found['heights']}"
    dom = chromium(browser, tmp_path / "profile", "--dump-dom", (report / "report.html").as_uri()).stdout
    section = re.search(r'<table id="hyperparameters">.*?</table>', dom, re.S)[0]
    assert section.count("<tr>") == 1 + 3 and "<td>0.05</td>" in section  # erm, sam, asam; sam's rho
    provenance = re.search(r'<table id="provenance">.*?</table>', dom, re.S)[0]
    assert "machine-0, machine-1" in provenance and "not recorded" in provenance


def test_a_broken_figure_is_detected(browser, report, tmp_path):
    html = (report / "report.html").read_text()
    broken = tmp_path / "broken.html"
    broken.write_text(html.replace("data:image/svg+xml;base64,PD94", "data:image/svg+xml;base64,AAAA", 1))
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
