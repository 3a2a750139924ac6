"""The report in a real browser: headless Chromium (Debian's ``chromium``) through Playwright.

Checks that the matrix renders with the right counts, that the status filter and links work,
that a cell's plots are drawn when it is opened or scrolled to, however late the page's data is
unpacked, without moving anything on the page, and that the page logs no console error; saves a
screenshot to reports/parity-report.png.
Skipped, with the reason, where Playwright or Chromium is missing (CI installs both: the
``dev`` extra and ``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from equiv.report.render import write_report

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "report" / "parity_mixed.json"
sys.path.insert(0, str(FIXTURE.parent))
from full_run import full_run_document  # noqa: E402

# As root, in a container: no sandbox, no GPU, and nothing that reaches out to the network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("EQUIV_CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium for the module, with a fresh profile."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium here (apt-get install -y chromium)")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")),  # a fresh --user-data-dir
            executable_path=executable,
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context
        finally:
            context.close()


def open_report(context, out: Path, document: dict, init_script: str | None = None):
    """Render ``document`` into ``out`` and open it from disk in a new tab (which runs
    ``init_script`` before the page's own); the tab and the errors it logs (console errors,
    page errors, failed requests: there should be none)."""
    write_report(out, document)
    messages: list[str] = []
    tab = context.new_page()
    if init_script:
        tab.add_init_script(init_script)
    tab.set_default_timeout(30_000)
    tab.on(
        "console",
        lambda m: messages.append(f"{m.type}: {m.text}") if m.type == "error" else None,
    )
    tab.on("pageerror", lambda e: messages.append(f"page error: {e}"))
    tab.on("requestfailed", lambda r: messages.append(f"request failed: {r.url}"))
    tab.goto((out / "parity.html").as_uri(), wait_until="load")
    return tab, messages


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    document = json.loads(FIXTURE.read_text())
    tab, messages = open_report(browser, tmp_path_factory.mktemp("report"), document)
    yield tab, document, messages
    tab.close()


def test_matrix_counts_match_the_summary(page):
    tab, document, messages = page
    summary = document["summary"]
    cells = tab.locator("table.matrix td.cell[data-status]")
    assert cells.count() == summary["total"]
    for status in ("pass", "fail", "error", "timeout", "skip", "explained"):
        shown = tab.locator(f'table.matrix td.cell[data-status="{status}"]').count()
        assert shown == summary[status], status
        if summary[status]:
            chip = tab.locator(f'button[data-filter="{status}"] b').inner_text()
            assert int(chip) == summary[status]
    assert tab.locator("table.matrix").count() == 2  # float64 and float32
    assert tab.locator("#problems tbody tr").count() == summary["total"] - summary["pass"]
    assert not messages


def test_filter_link_and_screenshot(page):
    tab, document, messages = page
    passing = tab.locator('table.matrix td.cell[data-status="pass"]').first
    detail = tab.locator('details.cell-detail[data-status="pass"]').first
    assert detail.is_visible()
    tab.locator('button[data-filter="pass"]').click()
    assert tab.locator('button[data-filter="pass"]').get_attribute("aria-pressed") == "false"
    assert float(passing.evaluate("e => getComputedStyle(e).opacity")) < 0.5
    assert not detail.is_visible()
    tab.locator('button[data-only="all"]').click()
    assert detail.is_visible() and not detail.evaluate("e => e.open")
    # a square links to its details, and opens them
    passing.locator("a").click()
    tab.wait_for_function("id => document.getElementById(id).open", arg=detail.get_attribute("id"))
    tab.evaluate("window.scrollTo(0, 0)")
    reports = ROOT / "reports"
    reports.mkdir(exist_ok=True)
    tab.screenshot(path=str(reports / "parity-report.png"), full_page=True)
    assert (reports / "parity-report.png").stat().st_size > 10_000
    assert not messages


def test_plots_are_drawn_when_opened_or_scrolled_to(page):
    tab, document, messages = page
    closed = tab.locator('details.cell-detail[data-status="pass"]:not([open])').last
    detail = tab.locator(f'[id="{closed.get_attribute("id")}"]')
    assert detail.locator("canvas").count() == 0
    detail.locator("summary").click()
    assert detail.evaluate("d => d.open")  # the click landed on the summary
    plots = detail.locator('.plot-host[data-plot="errors"][data-drawn="1"] canvas')
    plots.first.wait_for()
    assert plots.count() == 3  # loss, gradients, parameters
    branching = tab.locator('[id="cell-dynamic_branching-torch.compile-float64"]')
    branching.scroll_into_view_if_needed()
    branching.locator('.plot-host[data-plot="branches"][data-drawn="1"] canvas').wait_for()
    speed = tab.locator('[id="speed-two_layer_mlp"]')
    speed.scroll_into_view_if_needed()
    speed.locator('.plot-host[data-plot="bench"][data-drawn="1"] canvas').wait_for()
    assert not messages


def test_a_full_run_page_opens_in_under_2_s(browser, tmp_path_factory):
    """Issue 10: the report of a full run (156 cells) opens in under 2 s in headless
    Chromium (it took 9 s with an SVG per cell). The limit is the target itself, asserted on
    the page's own navigation timing (from navigation start to the end of the load event,
    without the browser's start). Measured: 0.7-1.4 s on a 2-core machine with a full
    matrix running beside it (load average 3-5); the old page took 8 s there."""
    document = full_run_document()
    tab, messages = open_report(browser, tmp_path_factory.mktemp("full"), document)
    timing = tab.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
    assert timing["loadEventEnd"] < 2000, timing
    assert tab.locator("table.matrix td.cell[data-status]").count() == 156
    # plots are drawn on demand: not those of open cells out of view
    drawn = tab.locator(".plot-host[data-drawn]").count()
    assert drawn < tab.locator("details[open] .plot-host").count()
    closed = tab.locator('details.cell-detail[data-status="pass"]:not([open])').last
    detail = tab.locator(f'[id="{closed.get_attribute("id")}"]')
    detail.locator("summary").click()
    assert detail.evaluate("d => d.open")  # the click landed on the summary
    detail.locator('.plot-host[data-drawn="1"] canvas').first.wait_for(timeout=5_000)
    assert not messages
    tab.close()


#: Holds the page's plot data back until the test calls ``window.releasePlotData()``: the
#: unpacking (``Response.json`` of the ``DecompressionStream``) ends as late as a test wants.
HOLD_PLOT_DATA = """
window.plotDataHeld = new Promise(function (release) { window.releasePlotData = release; });
var unpackJson = Response.prototype.json;
Response.prototype.json = function () {
  var parsed = unpackJson.call(this);
  return window.plotDataHeld.then(function () { return parsed; });
};
"""

#: Each plot host's height and the top of what follows it (its caption), in page coordinates.
LAYOUT = """() => Array.from(document.querySelectorAll('.plot-host')).map(function (h) {
  var next = h.nextElementSibling;
  return [h.getAttribute('data-plot-for') + ' ' + h.getAttribute('data-plot'),
          h.getBoundingClientRect().height,
          next ? next.getBoundingClientRect().top + window.scrollY : null];
})"""

ALL_DRAWN = "() => !document.querySelector('.plot-host[data-drawn=\"pending\"]')"


def open_a_cell_with_its_data_held(browser, tmp_path_factory):
    """The fixture's page with its plot data held back (HOLD_PLOT_DATA), one closed passing
    cell opened, and its error plot waiting for the data: (tab, messages, cell, plot host)."""
    document = json.loads(FIXTURE.read_text())
    tab, messages = open_report(
        browser, tmp_path_factory.mktemp("held"), document, init_script=HOLD_PLOT_DATA
    )
    closed = tab.locator('details.cell-detail[data-status="pass"]:not([open])').last
    detail = tab.locator(f'[id="{closed.get_attribute("id")}"]')
    detail.locator("summary").click()
    assert detail.evaluate("d => d.open")
    host = detail.locator('.plot-host[data-plot="errors"]')
    tab.wait_for_function(
        "h => h.getAttribute('data-drawn') === 'pending'", arg=host.element_handle()
    )
    return tab, messages, detail, host


def test_a_plot_is_drawn_however_late_its_data_is_unpacked(browser, tmp_path_factory):
    """The flaky failure under ``pytest -n``: the click on a cell's summary missed it, because
    plots above it, drawn as the click scrolled them into view, pushed it down between the
    mouse's press and its release (the data is unpacked asynchronously: late on a loaded
    machine), and the cell never opened. Here the data is held back until the cell is open and
    its plot is waiting for it: the plot is drawn when the data comes, in the room the page
    kept for it, so that nothing on the page moves."""
    tab, messages, detail, host = open_a_cell_with_its_data_held(browser, tmp_path_factory)
    before = tab.evaluate(LAYOUT)
    tab.evaluate("window.releasePlotData()")
    detail.locator('.plot-host[data-plot="errors"][data-drawn="1"] canvas').first.wait_for()
    tab.wait_for_function(ALL_DRAWN)
    assert host.locator("canvas").count() == 3
    assert tab.evaluate(LAYOUT) == before
    assert not messages
    tab.close()


@pytest.mark.parametrize("width", [1400, 800])
def test_drawing_a_plot_moves_nothing_on_the_page(browser, tmp_path_factory, width):
    """Every plot of a full run (legends of one to four lines, panels side by side and, at 800
    px, wrapped), drawn at once: each is drawn into the room its host had before, so that
    nothing below it moves, and fits its panel."""
    tab, messages = open_report(
        browser, tmp_path_factory.mktemp("layout"), full_run_document(), HOLD_PLOT_DATA
    )
    tab.set_viewport_size({"width": width, "height": 1000})
    tab.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    tab.evaluate("window.dispatchEvent(new Event('beforeprint'))")  # draws every open plot
    hosts = tab.locator(".plot-host").count()
    assert tab.locator('.plot-host[data-drawn="pending"]').count() == hosts
    before = tab.evaluate(LAYOUT)
    tab.evaluate("window.releasePlotData()")
    tab.wait_for_function(ALL_DRAWN)
    assert tab.locator('.plot-host[data-drawn="1"]').count() == hosts
    assert tab.evaluate(LAYOUT) == before
    overflowing = tab.evaluate(
        """() => Array.from(document.querySelectorAll('.plot-panel')).filter(function (p) {
          var u = p.querySelector('.uplot');
          return u && (u.offsetWidth > p.clientWidth || p.scrollHeight > p.clientHeight);
        }).length"""
    )
    assert overflowing == 0
    assert not messages
    tab.close()


def test_a_cell_closed_before_its_data_comes_is_drawn_when_reopened(browser, tmp_path_factory):
    """A cell opened and closed again before the data is unpacked: its plots are not drawn
    hidden (at a made-up width) but when the cell is opened again, at the width they have."""
    tab, messages, detail, host = open_a_cell_with_its_data_held(browser, tmp_path_factory)
    detail.locator("summary").click()
    assert not detail.evaluate("d => d.open")
    tab.evaluate("window.releasePlotData()")
    tab.wait_for_function(ALL_DRAWN)
    assert host.locator("canvas").count() == 0
    detail.locator("summary").click()
    host.locator("canvas").first.wait_for()
    widths = host.evaluate(
        "h => Array.from(h.querySelectorAll('.plot-panel'), p => "
        "[p.clientWidth, p.querySelector('.uplot').offsetWidth])"
    )
    assert len(widths) == 3 and all(box == drawn for box, drawn in widths), widths
    assert not messages
    tab.close()
