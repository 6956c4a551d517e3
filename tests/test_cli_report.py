"""``autogen-reliability report``: every format, ``--out``, the filters, and every bad argument.

The command is judged against the library: what it prints must be what
``UsageStore.report(...)`` and the report's own renderers give for the same
arguments (the numbers themselves are tested in the report's tests). The time a
report was generated differs between two reports, so times of day are blanked
out before two renderings are compared; the filters' dates are the same in both.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autogen_reliability.storage import UsageStore

from .cli_ledger import PROJECT, assert_one_line_error, event, run_main, sample_events
from .conftest import run_cli, run_cli_in_terminal
from .report_html import parse

FORMATS = ("table", "json", "csv", "md", "html")
TIME_OF_DAY = re.compile(r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?")


@pytest.fixture
def ledger(store_url: str) -> str:
    """A ledger of each backend holding ``sample_events()``; its URL."""
    with UsageStore(store_url) as store:
        store.write(sample_events())
    return store_url


def made_by_the_library(url: str, output_format: str, **arguments: Any) -> str:
    """The report the command should print: the store's, rendered as the command renders it."""
    with UsageStore(url, create=False) as store:
        report = store.report(**arguments)
    if output_format == "table":
        buffer = io.StringIO()
        Console(file=buffer, width=200, color_system=None, force_terminal=False).print(report.to_rich())
        return buffer.getvalue()
    text: str = {
        "json": report.to_json,
        "csv": report.to_csv,
        "md": report.to_markdown,
        "html": report.to_html,
    }[output_format]()
    return text if text.endswith("\n") else text + "\n"


def assert_same_report(printed: str, expected: str, output_format: str) -> None:
    """The two renderings are equal but for when each report was generated."""
    if output_format == "json":
        mine, theirs = json.loads(printed), json.loads(expected)
        assert datetime.fromisoformat(mine.pop("generated_at")) <= datetime.fromisoformat(theirs.pop("generated_at"))
        assert mine == theirs
    else:
        assert TIME_OF_DAY.sub("hh:mm", printed) == TIME_OF_DAY.sub("hh:mm", expected)


@pytest.mark.parametrize("output_format", FORMATS)
def test_every_format_to_standard_output(
    output_format: str, ledger: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # piped, the table is 200 columns wide
    status, out, err = run_main(capsys, "report", "--project", PROJECT, "--format", output_format, "--db", ledger)
    assert (status, err) == (0, "")
    assert_same_report(out, made_by_the_library(ledger, output_format, project=PROJECT), output_format)


@pytest.mark.parametrize("output_format", FORMATS)
def test_every_format_to_a_file(
    output_format: str, ledger: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / f"usage-report.{output_format}"
    status, printed, err = run_main(
        capsys, "report", "--format", output_format, "--out", str(out), "--by", "model", "--db", ledger
    )
    assert (status, err) == (0, "")
    assert printed == f"wrote {out}\n"
    expected = made_by_the_library(ledger, output_format, group_by=("model",))
    assert_same_report(out.read_bytes().decode(), expected, output_format)  # as written: CSV's \r\n kept
    assert sorted(path.name for path in tmp_path.iterdir()) == [out.name]  # no temporary file left


def test_a_file_is_replaced_and_a_relative_path_is_printed_absolute(
    ledger: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("report.json").write_text("an older report\n")
    status, printed, err = run_main(capsys, "report", "--format", "json", "--out", "report.json", "--db", ledger)
    assert (status, err) == (0, "")
    assert printed == f"wrote {tmp_path / 'report.json'}\n"
    assert json.loads(Path("report.json").read_text())["filters"]["project"] is None


@pytest.mark.parametrize(
    ("until", "shown"),
    [
        ("2025-05-01T00:00:00.5Z", "2025-05-01 → 2025-05-01 00:00:00.5 (UTC)"),
        ("2025-05-01T00:00:00.000001Z", "2025-05-01 → 2025-05-01 00:00:00.000001 (UTC)"),
        ("2025-05-01T09:30:15.250+02:00", "2025-05-01 → 2025-05-01 07:30:15.25 (UTC)"),
        ("2025-05-01T09:30:15Z", "2025-05-01 → 2025-05-01 09:30:15 (UTC)"),
        ("2025-05-01T09:30Z", "2025-05-01 → 2025-05-01 09:30 (UTC)"),
        ("2025-05-02", "2025-05-01 → 2025-05-02 (UTC)"),
    ],
)
def test_the_period_shown_is_the_period_used(
    until: str, shown: str, ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half a second past midnight was shown as "2025-05-01 00:00": the bound, rounded away.
    status, out, err = run_main(
        capsys, "report", "--since", "2025-05-01", "--until", until, "--format", "md", "--db", ledger
    )
    assert (status, err) == (0, "")
    assert f"Period: {shown}. Generated " in out


def test_an_until_not_after_since_shows_both_to_the_fraction(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Shown as "--until (2025-05-01 00:00:00 UTC) must be after --since (2025-05-01 00:00:00 UTC)".
    period = ("--since", "2025-05-01T00:00:00.75Z", "--until", "2025-05-01T00:00:00.5Z")
    status, out, err = run_main(capsys, "report", *period, "--db", ledger)
    assert_one_line_error(
        status, out, err, 2, "--until (2025-05-01 00:00:00.5 UTC) must be after --since (2025-05-01 00:00:00.75 UTC)"
    )


def test_the_filters_reach_the_report(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=30), today + timedelta(days=1)
    status, out, err = run_main(
        capsys,
        "report",
        "--project", PROJECT,
        "--since", since.isoformat(),
        "--until", f"{until.isoformat()}T00:00:00+00:00",
        "--session", "ticket-1",
        "--agent", "critic",
        "--tag", "customer=globex",
        "--by", "agent,model,day,tag:customer",
        "--top", "3",
        "--format", "json",
        "--db", ledger,
    )  # fmt: skip
    assert (status, err) == (0, "")
    report = json.loads(out)
    midnight = datetime.combine(since, datetime.min.time(), tzinfo=UTC)
    assert report["filters"] == {
        "project": PROJECT,
        "since": midnight.isoformat(),
        "until": datetime.combine(until, datetime.min.time(), tzinfo=UTC).isoformat(),
        "session": "ticket-1",
        "agent": "critic",
        "tags": {"customer": "globex"},
    }
    assert report["group_by"] == ["agent", "model", "day", "tag:customer"]
    expected = made_by_the_library(
        ledger,
        "json",
        project=PROJECT,
        since=midnight,
        until=datetime.combine(until, datetime.min.time(), tzinfo=UTC),
        session="ticket-1",
        agent="critic",
        tags={"customer": "globex"},
        group_by=("agent", "model", "day", "tag:customer"),
        top=3,
    )
    assert_same_report(out, expected, "json")
    assert report["totals"]["cost_usd"] == "2.000000001"  # the critic's one call


def test_a_tag_key_is_read_without_the_spaces_around_it(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    # As --tag reads " customer=globex": the key, not " customer", which no call has.
    status, out, err = run_main(
        capsys,
        "report",
        "--by",
        "model, tag: customer ",
        "--tag",
        " customer=globex",
        "--format",
        "json",
        "--db",
        ledger,
    )
    assert (status, err) == (0, "")
    assert json.loads(out)["group_by"] == ["model", "tag:customer"]
    expected = made_by_the_library(ledger, "json", tags={"customer": "globex"}, group_by=("model", "tag:customer"))
    assert_same_report(out, expected, "json")
    assert "globex" in json.dumps(json.loads(out)["breakdown"])
    status, out, err = run_main(capsys, "report", "--by", "tag:customer,tag: customer", "--db", ledger)
    assert_one_line_error(status, out, err, 2, "argument --by: tag:customer listed twice")


def test_a_tag_given_twice_with_its_one_value_is_one_filter(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Two values of one key could never both match (a call has one): that is refused, not this.
    status, out, err = run_main(
        capsys, "report", "--tag", "customer=globex", "--tag", "customer=globex", "--format", "json", "--db", ledger
    )
    assert (status, err) == (0, "")
    assert json.loads(out)["filters"]["tags"] == {"customer": "globex"}
    assert_same_report(out, made_by_the_library(ledger, "json", tags={"customer": "globex"}), "json")


@pytest.mark.parametrize("key", ["clé", "顧客", "a\\b", "tab\tkey", "cost.center", "owner's"])
def test_a_tag_key_of_any_characters_filters_and_groups(
    key: str, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite finds a key in a JSON path as the ledger's JSON text writes it (é as \u00e9, \ as \\):
    # a key with such a character matched no call, and its breakdown column held only None.
    now = datetime.now(UTC) - timedelta(hours=1)
    with UsageStore(store_url) as store:
        store.write([event(now, tags={key: "été"}, cost_nanousd=7), event(now, tags={"other": "x"}, cost_nanousd=11)])
    status, out, err = run_main(capsys, "report", "--tag", f"{key}=été", "--format", "json", "--db", store_url)
    assert (status, err) == (0, "")
    assert (json.loads(out)["totals"]["calls"], json.loads(out)["totals"]["cost_usd"]) == (1, "0.000000007")
    status, out, err = run_main(capsys, "report", "--by", f"tag:{key}", "--format", "json", "--db", store_url)
    assert (status, err) == (0, "")
    groups = {group["key"][f"tag:{key}"]: group["cost_usd"] for group in json.loads(out)["breakdown"]}
    assert groups == {"été": "0.000000007", None: "0.000000011"}


def test_relative_times_count_back_from_now(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC)
    status, out, err = run_main(capsys, "report", "--since", "7d", "--until", "24h", "--format", "json", "--db", ledger)
    after = datetime.now(UTC)
    assert (status, err) == (0, "")
    filters = json.loads(out)["filters"]
    since, until = datetime.fromisoformat(filters["since"]), datetime.fromisoformat(filters["until"])
    assert before - timedelta(days=7) <= since <= after - timedelta(days=7)
    assert until - since == timedelta(days=6)  # one reading of the clock for both


def test_without_by_the_breakdown_is_by_agent_and_model(ledger: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run_main(capsys, "report", "--format", "json", "--db", ledger)
    assert (status, err) == (0, "")
    assert json.loads(out)["group_by"] == ["agent", "model"]


def test_the_report_from_the_command(ledger: str, tmp_path: Path) -> None:
    done = run_cli("report", "--project", PROJECT, "--db", ledger, env={"COLUMNS": "200"})
    assert (done.returncode, done.stderr) == (0, "")
    assert_same_report(done.stdout, made_by_the_library(ledger, "table", project=PROJECT), "table")

    out = tmp_path / "usage-report.html"
    done = run_cli("report", "--format", "html", "--out", str(out), "--db", ledger)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote {out}\n"
    page = out.read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html")
    assert "<script>x</script>" not in page  # the agent named so is text on the page, not markup

    done = run_cli("report", "--format", "csv", "--since", "2025-05-01", "--until", "2025-05-02", "--db", ledger)
    assert (done.returncode, done.stderr) == (0, "")


def test_the_html_cost_by_agent_shows_an_agent_without_a_price_as_unpriced(
    ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The agent's one call is on a model without a price: its cost is not known, not $0.00 (0.0% of the cost).
    status, out, err = run_main(capsys, "report", "--project", PROJECT, "--format", "html", "--db", ledger)
    assert (status, err) == (0, "")
    section = parse(out).by_id("cost-by-agent-section")
    rows = {
        row.find_all("td")[0].text(): [cell.text() for cell in row.find_all("td")[1:]]
        for row in section.find_all("tr")[1:]
    }
    assert rows["<script>x</script>"] == ["unpriced", "unpriced", "1"]
    assert rows["critic"] == ["$2.000000001", "99.9%", "1"]
    bar = next(
        bar
        for bar in section.find_all("g", cls="bar")
        if bar.find_all("text", cls="name")[0].text() == "<script>x</script>"
    )
    assert bar.find_all("text", cls="value")[0].text() == "unpriced"


def test_the_html_cost_per_day_shows_a_day_without_a_price_as_unpriced(
    store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Day 1 priced; day 2 only a rate-limited attempt (no price); day 3 only a model without a price, which
    # the chart leaves out. A day's cost that is not known is not $0.00.
    first = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=5)
    with UsageStore(store_url) as store:
        store.write(
            [
                event(first, cost_nanousd=1_500),
                event(first + timedelta(days=1), outcome="error", error_kind="rate_limit", cost_nanousd=None),
                event(first + timedelta(days=2), model="local-llm", cost_nanousd=None),
            ]
        )
    status, out, err = run_main(capsys, "report", "--format", "html", "--db", store_url)
    assert (status, err) == (0, "")
    rows = parse(out).by_id("cost-per-day-section").find_all("tr")
    assert [cell.text() for cell in rows[0].find_all("th")] == ["Day", "gpt-4o-mini", "Total"]
    days = {row.find_all("td")[0].text(): [cell.text() for cell in row.find_all("td")[1:]] for row in rows[1:]}
    assert days == {
        first.date().isoformat(): ["$0.0000015", "$0.0000015"],
        (first + timedelta(days=1)).date().isoformat(): ["unpriced", "unpriced"],
        (first + timedelta(days=2)).date().isoformat(): ["$0.00", "unpriced"],  # no gpt-4o-mini that day
    }


def test_the_summary_of_a_report_without_any_price_says_its_cost_is_unpriced(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every call on a model without a price: the cost is not known, not $0.00 (its breakdown's total says so).
    monkeypatch.delenv("COLUMNS", raising=False)
    with UsageStore(store_url) as store:
        store.write([event(datetime.now(UTC) - timedelta(hours=1), model="local-llm", cost_nanousd=None)])

    def report(output_format: str) -> str:
        status, out, err = run_main(capsys, "report", "--format", output_format, "--db", store_url)
        assert (status, err) == (0, "")
        return out

    assert re.search(r"^Cost +unpriced +Error rate", report("table"), re.MULTILINE)
    assert "| Cost | unpriced |" in report("md")
    card = next(card for card in parse(report("html")).find_all("div", cls="card") if "Cost" in card.text())
    assert card.text().startswith("Cost unpriced 1 unpriced attempts not included")


def test_waste_whose_every_attempt_has_no_price_is_unpriced_in_every_format(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A priced answer, and a failed attempt on a model without a price: the waste's cost is not known, so its
    # total says unpriced, as its outcome's line does, not a $0.00 (0.0% of the cost) that reads as no waste.
    monkeypatch.delenv("COLUMNS", raising=False)
    now = datetime.now(UTC) - timedelta(hours=1)
    with UsageStore(store_url) as store:
        store.write(
            [
                event(now, cost_nanousd=5_000_000),
                event(now, model="local-llm", outcome="error", error_kind="timeout", cost_nanousd=None),
            ]
        )

    def report(output_format: str) -> str:
        status, out, err = run_main(capsys, "report", "--format", output_format, "--db", store_url)
        assert (status, err) == (0, "")
        return out

    table = report("table")
    assert re.search(r"^Waste +unpriced +Unpriced +1$", table, re.MULTILINE), table
    assert "Waste: unpriced" in table
    assert re.search(r"^│ error +│ +1 │ +120 │ unpriced │ +1 │$", table, re.MULTILINE), table
    assert re.search(r"^│ Total +│ +1 │ +120 │ unpriced │ +1 │$", table, re.MULTILINE), table
    assert "$0.00 (0.0%)" not in table
    markdown = report("md")
    assert "| Waste | unpriced, 120 tokens |" in markdown
    assert "| error | 1 | 120 | unpriced | 1 |" in markdown
    assert "| **Total** | 1 | 120 | unpriced | 1 |" in markdown
    page = parse(report("html"))
    card = next(card for card in page.find_all("div", cls="card") if card.text().startswith("Waste"))
    assert card.text().startswith("Waste unpriced"), card.text()
    section = page.by_id("waste")
    assert section.find_all("h2")[0].text() == "Waste: unpriced"
    total = [cell.text() for cell in section.find_all("tfoot")[0].find_all("td")]
    assert total == ["Total", "1", "120", "unpriced", "unpriced", "1"]
    error = [cell.text() for cell in section.find_all("tbody")[0].find_all("tr")[0].find_all("td")]
    assert error == ["error", "1", "120", "unpriced", "unpriced", "1"]


def test_the_waste_of_a_group_whose_wasted_attempts_had_no_price_is_unpriced_in_every_format(
    store_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer's call was rate-limited (no price) then answered ($0.005): its waste is not known, though its
    # cost is. The critic's answer was re-asked at $0.002. A group's waste says unpriced when none of its
    # *wasted* attempts had a price, whatever its other attempts cost; a $0.000 would read as no waste.
    monkeypatch.delenv("COLUMNS", raising=False)
    now = datetime.now(UTC) - timedelta(hours=1)
    retried, reasked = uuid.uuid4(), uuid.uuid4()
    rate_limited = {"outcome": "error", "error_kind": "rate_limit", "prompt_tokens": 0, "completion_tokens": 0}
    with UsageStore(store_url) as store:
        store.write(
            [
                event(now, call_id=retried, session="ticket-1", cost_nanousd=None, **rate_limited),
                event(now + timedelta(seconds=2), call_id=retried, attempt=2, session="ticket-1",
                      cost_nanousd=5_000_000),
                event(now, call_id=reasked, session="ticket-2", agent="critic", model="gpt-4o", outcome="invalid",
                      cost_nanousd=2_000_000),
                event(now + timedelta(seconds=3), call_id=reasked, attempt=2, session="ticket-2", agent="critic",
                      model="gpt-4o", cost_nanousd=3_000_000),
            ]
        )  # fmt: skip

    def report(output_format: str, *arguments: str) -> str:
        status, out, err = run_main(capsys, "report", "--format", output_format, *arguments, "--db", store_url)
        assert (status, err) == (0, "")
        return out

    table = report("table")
    assert re.search(r"^│ writer +│ gpt-4o-mini +│ +1 │ +2 │ +120 │ \$0.005 │ unpriced │", table, re.MULTILINE), table
    assert re.search(r"^│ critic +│ gpt-4o +│ +1 │ +2 │ +240 │ \$0.005 │ +\$0.002 │", table, re.MULTILINE), table
    assert re.search(r"^│ Total +│ +│ +2 │ +4 │ +360 │ \$0.010 │ +\$0.002 │", table, re.MULTILINE), table
    assert re.search(r"^│ ticket-1 +│ +1 │ +2 │ +120 │ \$0.005 │ unpriced │", table, re.MULTILINE), table
    assert re.search(r"^│ ticket-2 +│ +1 │ +2 │ +240 │ \$0.005 │ +\$0.002 │", table, re.MULTILINE), table
    markdown = report("md")
    assert "| writer | gpt-4o-mini | 1 | 2 | 120 | $0.005 | unpriced |" in markdown
    assert "| critic | gpt-4o | 1 | 2 | 240 | $0.005 | $0.002 |" in markdown
    assert "| ticket-1 | 1 | 2 | 120 | $0.005 | unpriced | 1 |" in markdown
    page = parse(report("html"))
    rows = {
        cells[0]: cells[1:]
        for cells in ([cell.text() for cell in row.find_all("td")] for row in page.by_id("breakdown").find_all("tr"))
        if cells
    }
    waste_at = 6  # Calls, Attempts, Tokens, Cost, Share, Waste after the two key columns
    assert rows["writer"][waste_at] == "unpriced", rows
    assert rows["critic"][waste_at] == "$0.002", rows
    assert rows["Total"][waste_at - 1] == "$0.002", rows  # one cell for both key columns
    sessions = {
        cells[0]: cells[1:]
        for cells in ([cell.text() for cell in row.find_all("td")] for row in page.by_id("top-sessions").find_all("tr"))
        if cells
    }
    assert sessions["ticket-1"][4] == "unpriced", sessions
    assert sessions["ticket-2"][4] == "$0.002", sessions
    # The waste chart's bar of the rate-limited attempt: not a $0 beside the re-ask's $0.002.
    bars = {bar.find_all("title")[0].text() for bar in page.by_id("waste-by-outcome").find_all("g", cls="bar")}
    assert "error: unpriced · 1 attempts" in bars, bars
    assert "invalid: $0.00200 · 1 attempts" in bars, bars  # a chart label rounds to 3 figures
    # JSON and CSV keep their keys and values, and say how many wasted attempts had no price.
    data = json.loads(report("json"))
    writer = next(group for group in data["breakdown"] if group["key"]["agent"] == "writer")
    assert (writer["waste_cost_usd"], writer["waste_unpriced_attempts"], writer["unpriced_attempts"]) == ("0", 1, 1)
    assert data["totals"]["waste_unpriced_attempts"] == 1
    assert data["top_sessions"][0]["key"] == {"session": "ticket-1"}
    assert data["top_sessions"][0]["waste_unpriced_attempts"] == 1
    lines = report("csv").splitlines()
    header = lines[0].split(",")
    assert header[-2:] == ["waste_unpriced_attempts", "cache_write_tokens"]  # added last, in this order
    written = {line.split(",")[0]: dict(zip(header, line.split(","), strict=True)) for line in lines[1:]}
    assert (written["writer"]["waste_cost_usd"], written["writer"]["waste_unpriced_attempts"]) == ("0", "1")
    assert (written["critic"]["waste_cost_usd"], written["critic"]["waste_unpriced_attempts"]) == ("0.002", "0")
    # A report of the writer alone: its total line and its summary agree that the waste is unpriced.
    table = report("table", "--agent", "writer")
    assert re.search(r"^Waste +unpriced +Unpriced +1$", table, re.MULTILINE), table
    assert re.search(r"^│ Total +│ +│ +1 │ +2 │ +120 │ \$0.005 │ unpriced │", table, re.MULTILINE), table
    markdown = report("md", "--agent", "writer")
    assert "| **Total** |  | 1 | 2 | 120 | $0.005 | unpriced |" in markdown
    total = next(row for row in parse(report("html", "--agent", "writer")).by_id("breakdown").find_all("tr")
                 if row.text().startswith("Total"))  # fmt: skip
    assert [cell.text() for cell in total.find_all("td")][6] == "unpriced"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device every write to fails")
@pytest.mark.parametrize("output_format", ["table", "json"])
def test_a_standard_output_that_cannot_be_written_exits_1_with_one_line(output_format: str, ledger: str) -> None:
    # `report > usage.html` on a full disk: as --out says of a file it cannot write, not a traceback.
    command = [sys.executable, "-m", "autogen_reliability", "report", "--format", output_format, "--db", ledger]
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    assert_one_line_error(done.returncode, "", done.stderr, 1, "cannot write to standard output: No space left")


@pytest.mark.parametrize("columns", ["0", "5", "39", "-80", "wide", ""])
def test_a_columns_that_cannot_be_a_width_is_ignored(columns: str, ledger: str) -> None:
    # COLUMNS=0 printed nothing, COLUMNS=5 an empty table; piped, the table is as wide as in a file.
    done = run_cli("report", "--project", PROJECT, "--db", ledger, env={"COLUMNS": columns})
    assert (done.returncode, done.stderr) == (0, "")
    assert_same_report(done.stdout, made_by_the_library(ledger, "table", project=PROJECT), "table")
    done = run_cli("sessions", "--project", PROJECT, "--db", ledger, env={"COLUMNS": columns})
    assert (done.returncode, done.stderr) == (0, "")
    assert "ticket-1" in done.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ("--by", "agent,colour"),
            ("argument --by: unknown column 'colour'", "agent, model, provider, day", "tag:KEY"),
        ),
        (("--by", "tag:"), ("argument --by: 'tag:' names no tag; write tag:KEY",)),
        (("--by", "model,model"), ("argument --by: model listed twice",)),
        (("--by", ""), ("argument --by: unknown column ''",)),
        (("--format", "xml"), ("argument --format: invalid choice: 'xml'", "'table', 'json', 'csv', 'md', 'html'")),
        (("--out", "/no/such/dir/report.html"), ("argument --out: the directory of /no/such/dir/report.html",)),
        (("--out", "/"), ("argument --out: / is a directory",)),
        (("--top", "0"), ("argument --top: must be 1 or more, got 0",)),
        (("--tag", "customer"), ("argument --tag: 'customer' is not KEY=VALUE",)),
        (("--tag", "=globex"), ("argument --tag: '=globex' is not KEY=VALUE",)),
        (
            ("--tag", "customer=globex", "--tag", " customer=initech"),
            ("argument --tag: 'customer' given twice", "'globex' and 'initech'"),
        ),
        (("--since", "last week"), ("argument --since: 'last week' is not a date",)),
        (("--since", "2025-02-30"), ("argument --since: '2025-02-30' is not a date",)),
        (("--until", "2025-05-01 10:00"), ("argument --until: '2025-05-01 10:00' has no UTC offset",)),
        (("--since", "0001-01-01T00:00:00+05:00"), ("argument --since: '0001-01-01T00:00:00+05:00' is outside",)),
        (("--until", "9999-12-31T23:00:00-05:00"), ("argument --until: '9999-12-31T23:00:00-05:00' is outside",)),
        (("--since", "9" * 5000 + "d"), ("argument --since: '99999", "longer than any date can go back")),
        (("--since", "\u0667d"), ("argument --since: '\u0667d' is not a date",)),
        (("--since", "2025-05-02", "--until", "2025-05-01"), ("must be after --since",)),
        (("--since", "2025-05-01T02:00+02:00", "--until", "2025-05-01T00:00Z"), ("must be after --since",)),
        (("--since", "1w", "--until", "7d"), ("must be after --since",)),
        (("--project",), ("argument --project: expected one argument",)),
        # No call is attributed to an empty or blank name (the library refuses one): it could match nothing.
        (("--project", ""), ("argument --project: must not be empty or blank",)),
        (("--session", " "), ("argument --session: must not be empty or blank",)),
        (("--agent", ""), ("argument --agent: must not be empty or blank",)),
        (("--group-by", "agent"), ("unrecognized arguments: --group-by agent",)),
    ],
)
def test_bad_report_arguments_exit_2_with_one_line(
    args: tuple[str, ...], fragments: tuple[str, ...], ledger: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_main(capsys, "report", *args, "--db", ledger)
    assert_one_line_error(status, out, err, 2, *fragments)


def test_a_bad_by_from_the_command_exits_2_naming_the_columns(tmp_path: Path) -> None:
    done = run_cli("report", "--by", "agent,bogus", "--db", f"sqlite:///{tmp_path / 'usage.db'}")
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 2, "unknown column 'bogus'", "tag:KEY")
    assert not (tmp_path / "usage.db").exists()  # refused before anything was opened


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        # SQLite's JSON paths cannot name a key with a double quote: the store refuses it, and did so only
        # once the ledger was open (a missing file, an unreachable server, was said instead).
        (("--tag", 'a"b=1'), "argument --tag: tag keys with a double quote (\") cannot be reported on, got 'a\"b'"),
        (("--tag", ' a"b =1'), "argument --tag: tag keys with a double quote"),
        (("--by", 'agent,tag:a"b'), 'argument --by: tag keys with a double quote (") cannot be reported on'),
        # A byte of the command line that is not UTF-8 (Python reads it as a lone surrogate): no row holds one.
        (("--tag", "a\udcff=1"), "argument --tag: a tag key must not contain '\\udcff'"),
        (("--tag", "customer=a\udcff"), "argument --tag: the value of 'customer' must not contain '\\udcff'"),
        (("--by", "tag:a\udcff"), "argument --by: a tag key must not contain '\\udcff'"),
    ],
)
def test_a_tag_the_ledger_cannot_take_is_refused_before_the_ledger_is_opened(
    args: tuple[str, ...], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "usage.db"
    status, out, err = run_main(capsys, "report", *args, "--db", f"sqlite:///{missing}")
    assert_one_line_error(status, out, err, 2, fragment)
    assert not missing.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--project", "a\udcff"),
        ("report", "--session", "a\udcff"),
        ("report", "--agent", "a\udcff"),
        ("sessions", "--project", "a\udcff"),
        ("export", "--project", "a\udcff", "--out", "x.jsonl"),
    ],
    ids=["report-project", "report-session", "report-agent", "sessions", "export"],
)
def test_a_name_the_ledger_cannot_hold_is_refused_before_the_ledger_is_opened(
    args: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A byte of the command line that is not UTF-8 (Python reads it as a lone surrogate): no row holds one,
    # so the command line is refused, and a missing ledger is not what is said.
    missing = tmp_path / "usage.db"
    status, out, err = run_main(capsys, *args, "--db", f"sqlite:///{missing}")
    option = next(arg for arg in args if arg in ("--project", "--session", "--agent"))
    assert_one_line_error(status, out, err, 2, f"argument {option}: ", "must not contain '\\udcff'")
    assert not missing.exists()


def test_a_tag_key_with_a_double_quote_is_refused_before_the_database_is_reached() -> None:
    # A server that cannot be reached: the command line is refused before any connection is tried.
    done = run_cli("report", "--tag", 'a"b=1', "--db", "postgresql+psycopg://u:pw@127.0.0.1:9/x")
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 2, "argument --tag: tag keys with a double quote")


# Names that a terminal would act on: an OSC 52 clipboard write and an erase of the screen (ESC), the C1
# control sequence introducer (CSI), concealed text, and a right-to-left override that reorders the line.
HOSTILE_AGENT = "\x1b]52;c;cHduZWQ=\x07evil\u202efdp.exe"
HOSTILE_SESSION = "s\x1b[2J\x9b8m"
HOSTILE_TAG = "t\x1b[8m"
TERMINAL_ACTS_ON = {"\x1b", "\x07", "\x9b", "\u202e"}


@pytest.fixture
def hostile_ledger(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url) as store:
        store.write(
            [
                event(
                    datetime.now(UTC) - timedelta(hours=1),
                    agent=HOSTILE_AGENT,
                    session=HOSTILE_SESSION,
                    tags={"team": HOSTILE_TAG},
                )
            ]
        )
    return url


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--format", "csv", "--by", "agent,session,tag:team"),
        ("report", "--format", "json", "--by", "agent,session,tag:team"),
        ("report", "--format", "csv", "--by", "agent,session,tag:team", "--out", "/dev/stdout"),
        ("sessions", "--project", PROJECT, "--format", "json"),
        ("export", "--project", PROJECT, "--out", "/dev/stdout"),
    ],
    ids=["csv", "json", "csv-out-dev-stdout", "sessions-json", "export-dev-stdout"],
)
def test_names_a_terminal_would_act_on_reach_it_as_escapes(args: tuple[str, ...], hostile_ledger: str) -> None:
    # Printed to a terminal, JSON and CSV show a control or bidirectional character as the tables do: its escape.
    status, shown, err = run_cli_in_terminal(*args, "--db", hostile_ledger)
    assert (status, err) == (0, "")
    assert not set(shown) & TERMINAL_ACTS_ON
    if args[0] == "sessions":
        assert "\\u202e" not in shown  # no agent in the sessions' JSON
        assert "s\\u001b[2J\\x9b8m" in shown  # JSON's own escape of ESC, then the C1 control's
    else:
        assert "\\u202efdp.exe" in shown
        assert "\\x9b8m" in shown
    # Piped, the same command gives the names exact.
    piped = args[: args.index("--out")] if args[0] == "report" and "--out" in args else args
    done = run_cli(*piped, "--db", hostile_ledger)
    assert (done.returncode, done.stderr) == (0, "")
    if args[0] == "export":
        assert [(row["agent"], row["session"]) for row in map(json.loads, done.stdout.splitlines())] == [
            (HOSTILE_AGENT, HOSTILE_SESSION)
        ]
    elif "json" in args:
        assert HOSTILE_SESSION in strings_of(json.loads(done.stdout))
    else:
        assert HOSTILE_SESSION in done.stdout
        assert HOSTILE_AGENT in done.stdout


def strings_of(value: object) -> set[str]:
    """Every string in parsed JSON ``value``, keys and values."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set(value) | {text for item in value.values() for text in strings_of(item)}
    if isinstance(value, list):
        return {text for item in value for text in strings_of(item)}
    return set()
