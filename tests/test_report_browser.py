"""The HTML report in a real browser: Debian's chromium, headless, driven by Playwright's sync API.

What a reader would see, checked where only a browser can: the page loads with no
console error or warning and no page error, makes no request but for itself, shows
every chart (a box with a size), reads in light and dark (text contrast, measured on
the computed colours), no two labels of a chart overlap (measured with the real
fonts), and a hostile report opens no dialog. Screenshots go to the test's tmp path,
and to ``AUTOGEN_RELIABILITY_SCREENSHOT_DIR`` when it is set (CI keeps them).

The browser is ``AUTOGEN_RELIABILITY_TEST_CHROMIUM`` if set, else /usr/bin/chromium.
Without it (or without the playwright package) the tests skip with one line saying
what is missing, unless ``AUTOGEN_RELIABILITY_TEST_CHROMIUM`` is set: then a missing
browser fails, as CI (.ci/run, scripts/ci-chromium.sh) wants. No browser is ever
downloaded: Playwright drives the installed one through ``executable_path``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from autogen_reliability.accounting import UsageEvent
from autogen_reliability.storage import UsageStore

from .report_fixtures import AGENTS, MODELS, hostile_report, make_report

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM_ENV = "AUTOGEN_RELIABILITY_TEST_CHROMIUM"
SCREENSHOT_ENV = "AUTOGEN_RELIABILITY_SCREENSHOT_DIR"
DEFAULT_CHROMIUM = Path("/usr/bin/chromium")
CHARTS = ("cost-per-day", "cost-by-agent", "tokens-by-model", "waste-by-outcome")


def _chromium() -> str:
    """The browser's path; skips (or fails, when CI asked for the browser) with one line if something is missing."""
    required = bool(os.environ.get(CHROMIUM_ENV))
    path = Path(os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM)
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "the playwright package is not installed (pip install -e '.[dev]'; it drives the installed chromium)"
    elif not path.is_file():
        missing = (
            f"no chromium at {path} (apt-get install chromium, or scripts/ci-chromium.sh; "
            f"{CHROMIUM_ENV}=PATH names another)"
        )
    if missing is None:
        return str(path)
    if required:
        pytest.fail(f"browser check: {missing}", pytrace=False)
    pytest.skip(f"browser check skipped: {missing}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless chromium for this module's tests (root needs --no-sandbox)."""
    executable = _chromium()
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only where a browser runs

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class _Watch:
    """Everything the page did besides drawing: requests, console messages, page errors, dialogs."""

    def __init__(self, page: Page) -> None:
        self.requests: list[str] = []
        self.failed: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(request.url))
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type in {"error", "warning"}:
            self.console.append(f"{message.type}: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


Scheme = Literal["light", "dark"]


def _open(browser: Browser, html: str, path: Path, scheme: Scheme, *, width: int = 1200) -> tuple[Page, _Watch]:
    path.write_text(html, encoding="utf-8")
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    # Anything but the page itself is refused here as well as counted, so a request can leave nothing behind.
    url = path.resolve().as_uri()
    context.route("**/*", lambda route: route.continue_() if route.request.url == url else route.abort())
    page = context.new_page()
    watch = _Watch(page)
    page.goto(url, wait_until="load")
    return page, watch


def _luminance(colour: str) -> float:
    red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", colour)[:3])

    def linear(channel: float) -> float:
        return channel / 12.92 if channel <= 0.04045 else ((channel + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def _contrast(first: str, second: str) -> float:
    lighter, darker = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


# The computed colours of what the page writes text on and with (getComputedStyle; SVG text uses fill).
_COLOURS = """() => {
  const style = (selector, property) => getComputedStyle(document.querySelector(selector))[property];
  return {
    body: style('body', 'backgroundColor'),
    panel: style('.panel', 'backgroundColor'),
    text: style('body', 'color'),
    muted: style('.card .detail', 'color'),
    heading: style('h1', 'color'),
    chart_text: style('svg.chart text.value', 'fill'),
    axis_text: style('svg.chart .axis text', 'fill'),
    warn_value: style('.card.warn .value', 'color'),
    warn_card: style('.card.warn', 'backgroundColor'),
  };
}"""

# Every pair of labels of one chart whose boxes overlap, measured by the browser with the fonts it has.
_OVERLAPS = """(id) => {
  const boxes = [...document.getElementById(id).querySelectorAll('text')]
    .map((node) => [node.textContent, node.getBoundingClientRect()]);
  const found = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const [a, p] = boxes[i], [b, q] = boxes[j];
      const x = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const y = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (x > 0.5 && y > 0.5) found.push(`${a} / ${b}`);
    }
  }
  return found;
}"""


# Every label of a chart that reaches past the drawing's edges (clipped there), and every two legend items that overlap.
_OUTSIDE = """(id) => {
  const svg = document.getElementById(id), frame = svg.getBoundingClientRect();
  const found = [...svg.querySelectorAll('text')]
    .filter((node) => {
      const box = node.getBoundingClientRect();
      return box.left < frame.left - 0.5 || box.right > frame.right + 0.5;
    })
    .map((node) => node.textContent);
  const items = [...svg.querySelectorAll('g.legend-item')]
    .map((node) => [node.textContent, node.getBoundingClientRect()]);
  for (let i = 0; i < items.length; i++) {
    for (let j = i + 1; j < items.length; j++) {
      const [a, p] = items[i], [b, q] = items[j];
      const x = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const y = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (x > 0.5 && y > 0.5) found.push(`legend: ${a} / ${b}`);
    }
  }
  return found;
}"""


def _ledger_html(tmp_path: Path, events: list[UsageEvent]) -> str:
    """The HTML report of a SQLite ledger holding ``events``, written and read through the store."""
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        store.write(events)
        return store.report(None).to_html()


def _save(page: Page, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / name).write_bytes(shot.read_bytes())
    return shot


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_report_reads_in_a_browser(browser: Browser, tmp_path: Path, scheme: Scheme) -> None:
    report = make_report(days=14, models=MODELS[:6], agents=AGENTS[:5])
    page, watch = _open(browser, report.to_html(), tmp_path / "usage-report.html", scheme)
    try:
        assert watch.console == []
        assert watch.errors == []
        assert watch.failed == []
        assert watch.requests == [(tmp_path / "usage-report.html").resolve().as_uri()]
        for chart in CHARTS:
            box = page.locator(f"svg#{chart}").bounding_box()
            assert box is not None, chart
            assert box["width"] > 300, (chart, box)
            assert box["height"] > 60, (chart, box)
            assert page.evaluate(_OVERLAPS, chart) == [], chart
        # The whole page fits the window's width: a table scrolls in its own box, if anything.
        assert page.evaluate("document.documentElement.scrollWidth") <= 1200

        colours = page.evaluate(_COLOURS)
        background = _luminance(colours["body"])
        assert background < 0.05 if scheme == "dark" else background > 0.8, colours
        for name, minimum in (("text", 7), ("heading", 7), ("muted", 4.5), ("chart_text", 7), ("axis_text", 4.5)):
            assert _contrast(colours[name], colours["panel"]) >= minimum, (name, colours)
        assert _contrast(colours["warn_value"], colours["warn_card"]) >= 4.5, colours
        _save(page, tmp_path, f"usage-report-{scheme}.png")
    finally:
        page.context.close()


def test_sixty_days_and_twenty_models_keep_their_labels_apart(browser: Browser, tmp_path: Path) -> None:
    report = make_report(days=60, models=MODELS, agents=AGENTS)
    page, watch = _open(browser, report.to_html(), tmp_path / "long.html", "light")
    try:
        assert watch.console == watch.errors == []
        for chart in CHARTS:
            assert page.evaluate(_OVERLAPS, chart) == [], chart
        assert page.locator("#cost-per-day g.column").count() == 60
        _save(page, tmp_path, "usage-report-60-days.png")
    finally:
        page.context.close()


def test_a_phone_sized_window_scrolls_tables_not_the_page(browser: Browser, tmp_path: Path) -> None:
    page, watch = _open(browser, make_report().to_html(), tmp_path / "narrow.html", "light", width=420)
    try:
        assert watch.console == watch.errors == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        for chart in CHARTS:
            box = page.locator(f"svg#{chart}").bounding_box()
            assert box is not None
            assert box["x"] >= 0
            assert box["x"] + box["width"] <= 420, (chart, box)
        _save(page, tmp_path, "usage-report-narrow.png")
    finally:
        page.context.close()


def test_a_hostile_report_runs_nothing_in_a_browser(browser: Browser, tmp_path: Path) -> None:
    page, watch = _open(browser, hostile_report().to_html(), tmp_path / "hostile.html", "light")
    try:
        assert watch.dialogs == []
        assert watch.console == []
        assert watch.errors == []
        assert len(watch.requests) == 1  # the page; no image, no script
        assert page.locator("script, img, iframe").count() == 0
        assert page.locator("svg").count() == len(CHARTS)
        assert "<script>alert(1)</script>" in page.locator("h1").inner_text()
        _save(page, tmp_path, "usage-report-hostile.png")
    finally:
        page.context.close()


def test_names_of_capitals_and_ideographs_stay_inside_their_charts(browser: Browser, tmp_path: Path) -> None:
    # Capitals and CJK ideographs are wider than the average letter: the labels were laid out as if they were
    # not, so "CUSTOMER_SUPPORT_AGENT" lost its first letters past the chart's left edge, and a long capitalised
    # model's legend entry ran over the next one.
    agents = ["CUSTOMER_SUPPORT_AGENT", "数据分析智能体研究员助手负责人", "writer"]
    models = ["WIZARDLM-2-8X22B-INSTRUCT-MOE-PREVIEW-EDITION", "Meta-Llama-3.1-405B-Instruct-Turbo", "gpt-4o"]
    start = datetime(2025, 5, 1, 9, tzinfo=UTC)
    events = [
        UsageEvent(uuid.uuid4(), 1, start + timedelta(days=day, minutes=index), 300.0, agent=agent, model=model,
                   prompt_tokens=1000 * (index + 1), completion_tokens=100, cost_nanousd=1_000_000 * (index + 1))
        for day in range(3)
        for index, (agent, model) in enumerate((agent, model) for agent in agents for model in models)
    ]  # fmt: skip
    page, watch = _open(browser, _ledger_html(tmp_path, events), tmp_path / "wide.html", "light")
    try:
        assert watch.console == watch.errors == []
        for chart in CHARTS[:3]:
            assert page.evaluate(_OUTSIDE, chart) == [], chart
            assert page.evaluate(_OVERLAPS, chart) == [], chart
        _save(page, tmp_path, "usage-report-wide-names.png")
    finally:
        page.context.close()


def test_the_first_and_last_day_labels_stay_inside_the_chart(browser: Browser, tmp_path: Path) -> None:
    # Over a year: a column per day with usage, labelled with the full date; the last one was cut at the right edge.
    start = datetime(2025, 11, 1, 9, tzinfo=UTC)
    events = [
        UsageEvent(uuid.uuid4(), 1, start + timedelta(days=day), 300.0, agent="writer", model="gpt-4o",
                   prompt_tokens=10, completion_tokens=1, cost_nanousd=1_000_000_000 + day)
        for day in range(0, 400, 3)
    ]  # fmt: skip
    page, watch = _open(browser, _ledger_html(tmp_path, events), tmp_path / "year.html", "light")
    try:
        assert watch.console == watch.errors == []
        assert page.locator("#cost-per-day g.column").count() == 134
        assert page.evaluate(_OUTSIDE, "cost-per-day") == []
        _save(page, tmp_path, "usage-report-400-days.png")
    finally:
        page.context.close()


def test_a_printed_page_holds_every_column_of_the_breakdown(browser: Browser, tmp_path: Path) -> None:
    # On paper a table cannot be scrolled: what its box hides is not printed. The breakdown (two names and eleven
    # numbers) was wider than an A4 page, and Waste, Errors, Retries, Re-asks, p50 / p95 and Unpriced were cut off.
    report = make_report(days=14, models=MODELS[:6], agents=AGENTS[:5])
    page, watch = _open(browser, report.to_html(), tmp_path / "print.html", "light", width=718)  # A4, 1 cm margins
    try:
        page.emulate_media(media="print")
        assert watch.console == watch.errors == []
        hidden = page.evaluate(
            """() => [...document.querySelectorAll('section')]
              .filter((section) => section.scrollWidth > section.clientWidth + 0.5
                || [...section.querySelectorAll('table')].some((table) => table.closest('details') === null
                    && table.getBoundingClientRect().right > section.getBoundingClientRect().right + 0.5))
              .map((section) => section.id)"""
        )
        assert hidden == []
        assert page.evaluate("document.documentElement.scrollWidth") <= 718
        _save(page, tmp_path, "usage-report-print.png")
    finally:
        page.context.close()


def test_a_page_printed_from_a_dark_screen_prints_dark_text_on_white(browser: Browser, tmp_path: Path) -> None:
    # Browsers print no backgrounds by default: the dark scheme's near-white text and chart labels came out pale
    # on white paper. Print takes the light colours whatever the screen's scheme.
    report = make_report(days=7, models=MODELS[:3], agents=AGENTS[:3])
    page, watch = _open(browser, report.to_html(), tmp_path / "dark-print.html", "dark")
    try:
        on_screen = page.evaluate("getComputedStyle(document.body).color")
        page.emulate_media(media="print")
        assert watch.console == watch.errors == []
        printed = page.evaluate("getComputedStyle(document.body).color")
        label = page.evaluate("getComputedStyle(document.querySelector('svg.chart text')).fill")
        assert _luminance(on_screen) > 0.5  # the dark scheme is on for the screen
        for colour in (printed, label):
            assert _contrast(colour, "rgb(255, 255, 255)") >= 4.5, colour
    finally:
        page.context.close()
