"""The autogen-reliability command: the demo, the ledger commands, and one-line errors for bad arguments.

``sessions``, ``export`` and ``cleanup`` run on real ledgers (a SQLite file, and PostgreSQL when
``AUTOGEN_RELIABILITY_TEST_PG_URL`` is set), in this process through ``main`` and as the real
command in a subprocess; their numbers are checked against sums made here from the events written.
``report``'s own tests are in test_cli_report.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pytest
from autogen_ext.models.openai import OpenAIChatCompletionClient
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.pool import NullPool

import autogen_reliability
from autogen_reliability import __version__
from autogen_reliability._cli import main, parse_duration, parse_time
from autogen_reliability._config import ENV_DB_URL
from autogen_reliability._demo import provider_client
from autogen_reliability._errors import ConfigurationError
from autogen_reliability.accounting._events import UsageEvent
from autogen_reliability.providers import infer_provider
from autogen_reliability.storage import UsageContent, UsageRecord, UsageStore, _migrate
from autogen_reliability.storage._engine import make_engine
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage, RecordedRequest

from .cli_ledger import PROJECT, assert_one_line_error, event, exact_usd, run_main, sample_events
from .conftest import run_cli
from .test_storage import HEAD, NEXT, NEXT_REVISION

# --- the demo --------------------------------------------------------------------------------------------

# One attempt line of the demo: agent, attempt, outcome (the error kind for errors), tokens in and out, cost.
ATTEMPT_LINE = re.compile(r"^  · (\S+) +#(\d+) +(\S+) +(\d+) → (\d+) +\$([0-9.]+)(?:  (.*))?$", re.MULTILINE)


def shown_attempts(out: str) -> list[tuple[str, int, str, int, int, Decimal]]:
    """The attempt lines of the demo's output, in order."""
    return [
        (agent, int(attempt), outcome, int(prompt), int(completion), Decimal(cost))
        for agent, attempt, outcome, prompt, completion, cost, _ in ATTEMPT_LINE.findall(out)
    ]


def as_shown(usage: UsageEvent) -> tuple[str, int, str, int, int, Decimal]:
    """A ledger row as the demo shows it (an error by its kind)."""
    outcome = usage.error_kind if usage.outcome == "error" else usage.outcome
    assert usage.agent is not None
    assert outcome is not None
    cost = Decimal(usage.cost_nanousd or 0) / 10**9
    return (usage.agent, usage.attempt, outcome, usage.prompt_tokens, usage.completion_tokens, cost)


def health_json(out: str) -> Any:
    """The health report the demo prints (the JSON object after its heading)."""
    heading = out.index("Health (HealthProbe.check()")
    value, _ = json.JSONDecoder().raw_decode(out, out.index("{", heading))
    return value


@pytest.mark.parametrize("stream", [False, True])
def test_demo_shows_the_storm_each_attempt_as_the_ledger_holds_it_and_the_report_of_its_run(
    stream: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = tmp_path / "ledger.db"
    assert main(["demo", "--db", f"sqlite:///{ledger}", *(["--stream"] if stream else [])]) == 0
    out = capsys.readouterr().out
    lines = [(agent, attempt, outcome, note) for agent, attempt, outcome, *_, note in ATTEMPT_LINE.findall(out)]
    # The storm, each event on the line of its attempt, with what the wrapper did about it, in this order.
    bad_tool_call, tool_call, bad_json, good_json, limited, sanitised, overloaded = lines[:7]
    assert limited == ("writer", "1", "rate_limit", "HTTP 429, Retry-After 400 ms; waited 0.40 s, retried")
    assert overloaded[:3] == ("critic", "1", "overloaded")
    assert re.fullmatch(r"HTTP 503; waited 0\.\d\d s, retried", overloaded[3])
    assert bad_tool_call[:3] == bad_json[:3] == ("triage", "1", "invalid")
    assert bad_tool_call[3] == (
        "tool call lookup_order(order_id='four-seven-one-one') → re-asked: "
        '/tool_calls/0/arguments/order_id: "four-seven-one-one" is not of type "integer"'
    )
    assert bad_json[3].startswith('answer \'{"ticket": 4711')
    assert "→ re-asked: (root): no valid JSON in the answer" in bad_json[3]
    assert tool_call == ("triage", "2", "ok", "calls lookup_order(order_id=4711)")
    assert good_json == ("triage", "2", "ok", "JSON found in the prose around it, valid")
    assert sanitised[:3] == ("writer", "2", "ok")
    assert sanitised[3] == (
        "sanitised before any agent saw it: removed 3 ANSI escape sequences (\u241b[2J \u241b[31m \u241b[0m) "
        "and 2 HTML tags (\u2039script\u203a \u2039/script\u203a)"
    )
    # The transcript in between: the tool's result, the structured answer, the draft as the critic saw it.
    assert "[triage] calls lookup_order(order_id=4711)\n[triage] lookup_order → order 4711: cancelled" in out
    assert (
        "[triage] Triage(ticket=4711, priority='high', summary='Refund of $42.00 issued 2 June, not received')" in out
    )
    assert "[writer] Hi Dana, your refund of $42.00 was issued on 2 June. It is on its way! \n" in out
    assert "[critic] Clear, warm and complete. APPROVE" in out
    # Nothing hostile reached the output, and the output itself (not a terminal) has no escape codes at all.
    assert "<script" not in out
    assert "\x1b" not in out

    # Each attempt shown is a row of the ledger, with the same numbers; the totals shown are the rows' sums.
    with UsageStore(f"sqlite:///{ledger}") as store:
        rows = store.events(project="demo")
    assert sorted(shown_attempts(out)) == sorted(map(as_shown, rows))
    ticket = [row for row in rows if row.session == "ticket-4711"]
    runaway = [row for row in rows if row.session == "ticket-4712"]
    assert len(ticket) + len(runaway) == len(rows)
    assert Counter(row.outcome for row in ticket) == {"ok": 6, "invalid": 2, "error": 2}
    assert "  = 10 attempts in 6 calls (6 ok, 2 invalid, 2 error)" in out
    total = sum(Decimal(row.cost_nanousd or 0) for row in rows) / 10**9
    assert f"Ledger check: {len(rows)} rows for this run, one per attempt shown above; ${total:.9f} in all." in out
    # The runaway loop: stopped by its cost limit, the call that crossed it the last one, every one a row.
    limit = Decimal("0.0002")
    spent = [Decimal(row.cost_nanousd or 0) / 10**9 for row in sorted(runaway, key=lambda row: row.started_at)]
    assert sum(spent[:-1]) < limit <= sum(spent)
    assert all(row.outcome == "ok" and row.attempt == 1 for row in runaway)
    assert re.search(
        r"^  ■ stopped by CostTermination after \d+ messages: Cost limit reached: \$[0-9.]+ of \$0\.0002", out, re.M
    )
    assert f"  = {len(runaway)} attempts in {len(runaway)} calls ({len(runaway)} ok)" in out

    # The report table of the run: each agent's calls, attempts and exact cost, a total line, the waste.
    agents = "triage|writer|critic|drafter|perfectionist|Total"
    row = rf"^│ ({agents}) +│ (?:gpt-4o-mini)? +│ +(\d+) │ +(\d+) │ +[\d,]+ │ +\$([0-9.]+) │"
    table = {match[0]: match[1:] for match in re.findall(row, out, flags=re.MULTILINE)}
    assert set(table) == {"triage", "writer", "critic", "drafter", "perfectionist", "Total"}
    for agent, (calls, attempts, cost) in table.items():
        mine = [usage for usage in rows if agent in ("Total", usage.agent)]
        assert int(calls) == sum(usage.attempt == 1 for usage in mine)
        assert int(attempts) == len(mine)
        assert Decimal(cost) == sum(Decimal(usage.cost_nanousd or 0) for usage in mine) / 10**9
    waste = sum((Decimal(row.cost_nanousd or 0) for row in rows if row.outcome != "ok"), Decimal(0)).scaleb(-9)
    assert waste > 0  # the re-asked answers were paid for
    assert re.search(rf"^Waste: \${waste.normalize():f}0*, ", out, flags=re.MULTILINE)

    # The health report: the probe watched every attempt, and the ledger answers.
    health = health_json(out)
    assert health["status"] == "healthy"
    client = health["clients"]["openai"]
    assert client["attempts"] == len(rows)
    assert client["errors_by_kind"] == {"rate_limit": 1, "overloaded": 1}
    # The 429 the writer's retry overcame is listed by kind but judged neither a failure nor an attempt: the
    # error rate is the 503 alone, and the demo says so under the JSON (2 of 23 would be read from it).
    judged = len(rows) - 1
    assert client["error_rate"] == pytest.approx(1 / judged)
    assert (
        f"Error rate: 1 failed attempt of {judged} judged. The rate limit that a retry of its call overcame is "
        "listed by kind, but it counts neither as a failure nor as an attempt.\n" in out
    )
    assert health["usage_store"]["reachable"] is True
    assert json.loads((tmp_path / "health.json").read_text())["clients"]["openai"]["providers"][0]["recent"]

    # The HTML report and the health JSON lie next to the ledger, and the paths are printed for the user to open.
    html = tmp_path / "usage-report.html"
    assert f"HTML report:  {html}" in out
    assert f"Health JSON:  {tmp_path / 'health.json'}" in out
    assert f"Usage ledger: sqlite:///{ledger}" in out
    page = html.read_text()
    assert page.lower().startswith("<!doctype html")
    assert all(agent in page for agent in ("triage", "writer", "critic", "drafter", "perfectionist"))


def test_demo_from_the_installed_command_keeps_its_ledger_and_report_in_the_working_directory(
    tmp_path: Path,
) -> None:
    command = Path(sys.executable).parent / "autogen-reliability"  # installed next to this interpreter
    done = subprocess.run([command, "demo"], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    directory = tmp_path / "autogen-reliability-demo"
    assert f"HTML report:  {directory / 'usage-report.html'}" in done.stdout
    assert (directory / "usage.db").is_file()
    assert (directory / "usage-report.html").is_file()
    assert re.search(r"^│ Total ", done.stdout, flags=re.MULTILINE)
    assert "\x1b" not in done.stdout  # a pipe gets plain lines


def test_demo_report_again_command_reports_this_run_when_the_ledger_holds_an_earlier_one(tmp_path: Path) -> None:
    # The demo's ledger is kept between runs; the command it prints gives the report it showed, of this run.
    ledger = tmp_path / "my ledger" / "usage.db"  # a space: the command must survive the shell
    ledger.parent.mkdir()
    for _ in range(2):
        done = run_cli("demo", "--db", f"sqlite:///{ledger}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    shown = re.search(r"^Calls +(\d+) .*\n^Attempts +(\d+) ", done.stdout, flags=re.MULTILINE)
    assert shown is not None
    again = re.search(r"^Report again: (autogen-reliability .*)$", done.stdout, flags=re.MULTILINE)
    assert again is not None
    command = shlex.split(again[1])
    assert command[0] == "autogen-reliability"
    report = run_cli(*command[1:], "--format", "json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    assert (totals["calls"], totals["attempts"]) == (int(shown[1]), int(shown[2])) == (19, 23)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_demo_into_a_ledger_in_memory_offers_no_command_that_cannot_report_it(url: str, tmp_path: Path) -> None:
    # It printed "Report again: autogen-reliability report ... --db sqlite://", which, the ledger gone with the
    # demo, answered that the database has no usage tables and should be upgraded.
    done = run_cli("demo", "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Ledger check: 23 rows for this run" in done.stdout
    assert "Report again:" not in done.stdout
    assert "Usage ledger: in memory, gone with the demo (--db sqlite:///FILE keeps it)\n" in done.stdout


def test_demo_into_a_ledger_with_a_password_offers_a_command_that_reports_it_without_the_password(
    make_pg_database: Callable[[], str], tmp_path: Path
) -> None:
    # It printed "Report again: ... --db 'postgresql+psycopg://app:***@host/db'", the password masked, which answered
    # "password authentication failed". The password stays out of the output; the command reads the URL from the
    # variable, as the reports page advises for a URL with a password.
    url = make_pg_database()
    password = make_url(url).password
    if not password:
        pytest.skip("the test server's URL holds no password")
    done = run_cli("demo", "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout
    again = re.search(
        rf"^Report again, with {ENV_DB_URL} set to the ledger's URL: (autogen-reliability .*)$",
        done.stdout,
        flags=re.MULTILINE,
    )
    assert again is not None, done.stdout[-600:]
    command = shlex.split(again[1])
    assert "--db" not in command
    report = run_cli(*command[1:], "--format", "json", cwd=tmp_path, env={ENV_DB_URL: url})
    assert report.returncode == 0, report.stderr
    totals = json.loads(report.stdout)["totals"]
    assert (totals["calls"], totals["attempts"]) == (19, 23)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device every write to fails")
def test_demo_to_a_standard_output_that_cannot_be_written_is_one_error(tmp_path: Path) -> None:
    # The live display's writes failed inside rich: a traceback, then "Exception ignored" at exit.
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    run = [sys.executable, "-m", "autogen_reliability", "demo"]
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            run, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=environment, cwd=tmp_path
        )
    assert_one_line_error(done.returncode, "", done.stderr, 1, "cannot write to standard output: No space left")
    reader, writer = os.pipe()
    os.close(reader)  # `demo | head` that has already gone: quietly
    done = subprocess.run(
        run, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=environment, cwd=tmp_path
    )
    os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")


@pytest.mark.parametrize("command", ["demo", "report"])
def test_a_standard_output_that_cannot_encode_the_output_is_one_error_naming_the_remedy(
    tmp_path: Path, command: str
) -> None:
    # A stdout in a legacy encoding (a console redirected to a file on Windows: cp1252): the demo's and the
    # table's "·", "→" and "—" could not be written, and the command ended in a traceback.
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with UsageStore(ledger) as store:
        store.write(sample_events())
    args = ("demo",) if command == "demo" else ("report", "--db", ledger)
    done = run_cli(*args, env={"PYTHONIOENCODING": "ascii"}, cwd=tmp_path)
    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("autogen-reliability: error: standard output's encoding, ascii, cannot write ")
    assert "PYTHONIOENCODING=utf-8" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_line_saying_what_was_done_is_written_with_escapes_a_standard_output_cannot_encode(tmp_path: Path) -> None:
    # An ASCII stdout (a legacy code page under `> file`): the export and the report were written whole, then the
    # "wrote" line could not encode the "é" of their path and the command said it failed, with status 1.
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with UsageStore(ledger) as store:
        store.write(sample_events())
    ascii_stdout = {"PYTHONIOENCODING": "ascii"}
    exported, report = tmp_path / "export-é.jsonl", tmp_path / "rapport-é.md"
    done = run_cli("export", "--project", PROJECT, "--out", str(exported), "--db", ledger, env=ascii_stdout)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote 9 rows of project {PROJECT!r} to {tmp_path}/export-\\xe9.jsonl\n"
    assert len(exported.read_text(encoding="utf-8").splitlines()) == 9
    done = run_cli("report", "--format", "md", "--out", str(report), "--db", ledger, env=ascii_stdout)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", f"wrote {tmp_path}/rapport-\\xe9.md\n")
    assert report.read_text(encoding="utf-8").startswith("# Usage of all projects")
    done = run_cli("sessions", "--project", "café", "--db", ledger, env=ascii_stdout)
    assert (done.returncode, done.stderr, done.stdout) == (0, "", "no sessions of project 'caf\\xe9'\n")


def test_demo_that_cannot_make_its_directory_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "autogen-reliability-demo").write_text("a file where the demo keeps its ledger")
    done = run_cli("demo", cwd=tmp_path)
    assert_one_line_error(
        done.returncode, "", done.stderr, 1, "cannot run the demo: File exists: autogen-reliability-demo"
    )


# The command in a child that takes Ctrl-C as a terminal's would (a background job's child starts with it ignored).
_CTRL_C_RESTORED: Final = """
import signal, sys
from autogen_reliability._cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.exit(main(sys.argv[1:]))
"""


def polite_model(request: RecordedRequest) -> FakeReply:
    """A model that does what each agent of the demo asks, first time, at a realistic size (no storm)."""
    messages = request.messages
    agent = re.match(r"You are the (\w+)", str(messages[0].get("content")))
    usage = FakeUsage(prompt_tokens=400, completion_tokens=60)
    if agent is None:
        return FakeReply.error(400, "not one of the demo's agents")
    if agent[1] == "triage" and messages[-1].get("role") != "tool":
        return FakeReply.tool_calls([("lookup_order", {"order_id": 4711})], usage=usage)
    answers = {
        "triage": json.dumps({"ticket": 4711, "priority": "high", "summary": "Refund issued, not received"}),
        "writer": "Hi Dana, your refund of $42.00 was issued on 2 June.",
        "critic": "APPROVE",
    }
    return FakeReply.text(answers.get(agent[1], f"One more thought from the {agent[1]}."), usage=usage)


def test_demo_live_runs_the_same_team_on_the_default_openai_url_with_the_key_and_no_faults(
    fake_openai_server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # No request may leave this machine: the SDK's own variable points its default URL at the local server,
    # which it reads only for a client made without base_url -- as --live makes it.
    key = "sk-live-demo-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai_server.base_url)
    fake_openai_server.default = polite_model
    ledger = tmp_path / "ledger.db"
    assert main(["demo", "--live", "--model", "gpt-4.1-mini", "--db", f"sqlite:///{ledger}"]) == 0
    out = capsys.readouterr().out
    assert "A support team of AutoGen agents on the OpenAI API, model gpt-4.1-mini." in out
    requests = fake_openai_server.requests
    assert {request.headers["authorization"] for request in requests} == {f"Bearer {key}"}
    assert {request.model for request in requests} == {"gpt-4.1-mini"}
    # The same team: the triage agent is offered its tool and asked for its schema; then writer and critic.
    first = requests[0].body or {}
    assert [tool["function"]["name"] for tool in first["tools"]] == ["lookup_order"]
    reflection = requests[1].body or {}
    assert reflection["response_format"]["json_schema"]["name"] == "Triage"
    with UsageStore(f"sqlite:///{ledger}") as store:
        rows = store.events(project="demo")
    assert [row.agent for row in rows[:5]] == ["triage", "triage", "writer", "critic", "drafter"]
    assert {row.outcome for row in rows} == {"ok"}  # nothing injected
    assert sorted(shown_attempts(out)) == sorted(map(as_shown, rows))
    assert re.search(
        r"^  ■ stopped by CostTermination after \d+ messages: Cost limit reached: .* of \$0\.001$", out, re.M
    )
    assert key not in out
    assert key not in (tmp_path / "health.json").read_text()


def test_demo_live_with_a_rejected_key_shows_what_happened_and_exits_1_with_one_line_without_the_key(
    fake_openai_server: FakeOpenAIServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "sk-live-rejected-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai_server.base_url)
    # As the real API answers a bad key: with the key quoted back.
    fake_openai_server.default = FakeReply.error(401, f"Incorrect API key provided: {key}.")
    ledger = tmp_path / "ledger.db"
    assert main(["demo", "--live", "--db", f"sqlite:///{ledger}"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1
    assert err.startswith("autogen-reliability: error: the team stopped: AuthenticationError: Error code: 401")
    assert key not in out + err
    # Not retried, shown, recorded, and reported like any run.
    assert shown_attempts(out) == [("triage", 1, "authentication", 0, 0, Decimal(0))]
    assert "  ✗ the team stopped: AuthenticationError" in out
    assert "Ledger check: 1 row for this run, one per attempt shown above; $0.000000000 in all." in out
    with UsageStore(f"sqlite:///{ledger}") as store:
        assert [(row.agent, row.error_kind) for row in store.events(project="demo")] == [("triage", "authentication")]
    assert re.search(r"^│ Total ", out, flags=re.MULTILINE)
    assert (tmp_path / "usage-report.html").is_file()
    assert len(fake_openai_server.requests) == 1


def test_ctrl_c_during_the_demo_stops_its_team_at_once_and_keeps_the_row_of_every_request(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    # Ctrl-C in the runaway loop (with --live, at real prices) let AutoGen run the team on to its end: a dozen
    # more paid requests, for seconds after the user had asked it to stop.
    def slow_model(request: RecordedRequest) -> FakeReply:
        return dataclasses.replace(polite_model(request), delay=0.2)

    fake_openai_server.default = slow_model
    ledger = tmp_path / "ledger.db"
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    environment.update(OPENAI_API_KEY="sk-live-demo-0123456789abcdef", OPENAI_BASE_URL=fake_openai_server.base_url)
    child = subprocess.Popen(
        [sys.executable, "-c", _CTRL_C_RESTORED, "demo", "--live", "--db", f"sqlite:///{ledger}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("  · drafter "):  # the runaway loop's first call has ended, the next is under way
                break
        sent = fake_openai_server.request_count
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert (child.returncode, err) == (130, "autogen-reliability: error: interrupted\n")
    assert fake_openai_server.request_count <= sent + 1  # at most the request in flight
    with UsageStore(f"sqlite:///{ledger}") as store:
        rows = store.events(project="demo")
    assert len(rows) == fake_openai_server.request_count  # the one cut short too
    assert {row.outcome for row in rows} <= {"ok", "cancelled"}


def test_demo_live_without_a_key_exits_2_naming_the_variable() -> None:
    done = run_cli("demo", "--live", env={"OPENAI_API_KEY": ""})
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("autogen-reliability: error: --live needs OPENAI_API_KEY")


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("gpt-5.1", "AutoGen's OpenAIChatCompletionClient does not know"),  # newer than autogen-ext's table
        ("gpt-3.5-turbo", "without structured output"),  # the triage agent's answer is structured
        ("o1-mini", "without function calling"),  # its tool
    ],
)
def test_demo_live_refuses_a_model_the_team_cannot_run_on_before_any_request(
    fake_openai_server: FakeOpenAIServer, tmp_path: Path, model: str, why: str
) -> None:
    environment = {"OPENAI_API_KEY": "sk-live-0123456789abcdef", "OPENAI_BASE_URL": fake_openai_server.base_url}
    done = run_cli("demo", "--live", "--model", model, "--db", f"sqlite:///{tmp_path / 'ledger.db'}", env=environment)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 2, f"--model {model}: ")
    assert why in done.stderr
    assert "gpt-4o-mini" in done.stderr  # one that works
    assert fake_openai_server.requests == []
    assert not (tmp_path / "ledger.db").exists()


def test_demo_live_client_is_the_real_openai_one_on_its_default_url() -> None:
    client = provider_client("gpt-4o-mini", api_key="sk-not-used")
    assert isinstance(client, OpenAIChatCompletionClient)
    config = client.dump_component().config
    assert config["model"] == "gpt-4o-mini"
    assert config.get("base_url") is None  # the SDK's default, https://api.openai.com/v1 (or OPENAI_BASE_URL)
    assert infer_provider(client) == "openai"


def test_demo_refuses_a_database_url_that_can_never_work(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--db", "mysql://user:secret@localhost/usage"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("autogen-reliability: error: bad database URL")
    assert "secret" not in err


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite:///data/usage.db", "the directory of the SQLite database data/usage.db does not exist"),
        ("mysql://user:secret@localhost/usage", "the usage store supports SQLite and PostgreSQL databases"),
    ],
)
def test_demo_with_a_bad_database_url_in_the_environment_is_one_line_before_it_starts(
    url: str, said: str, tmp_path: Path
) -> None:
    # The application's ledger, set for another directory (or another database): the demo records to its own,
    # but its wrapper reads the process's configuration, and the command ended in a traceback of 50 lines.
    done = run_cli("demo", env={ENV_DB_URL: url}, cwd=tmp_path)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 2, ENV_DB_URL, said)
    assert "secret" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing run, nothing written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("bogus",), "invalid choice: 'bogus'"),
        (("demo", "--rounds", "3"), "unrecognized arguments: --rounds 3"),
        (("demo", "--model", "gpt-4o"), "--model is for --live"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: tuple[str, ...], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("autogen-reliability: error: ")
    assert message in lines[0]


def test_help_exits_0() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_version_prints_the_installed_version() -> None:
    done = run_cli("--version")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"autogen-reliability {__version__}\n"
    assert __version__ == importlib.metadata.version("autogen-reliability")
    assert "__version__" in autogen_reliability.__all__


# --- the ledger commands: sessions, export, cleanup ------------------------------------------------


@pytest.fixture
def ledger(store_url: str) -> tuple[str, list[UsageEvent]]:
    """A ledger of each backend holding ``sample_events()``: its URL and the events."""
    events = sample_events()
    with UsageStore(store_url) as store:
        assert store.write(events) == len(events)
    return store_url, events


def content_ids(url: str) -> set[uuid.UUID]:
    """The event ids that have a row of captured content."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return set(connection.execute(select(UsageContent.event_id)).scalars())
    finally:
        engine.dispose()


def test_sessions_lists_the_most_recent_first_with_exact_numbers(
    ledger: tuple[str, list[UsageEvent]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, events = ledger
    status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--format", "json", "--db", url)
    assert (status, err) == (0, "")
    listed = json.loads(out)

    # The oracle: the same numbers, summed here from the events.
    by_session: dict[str, list[UsageEvent]] = {}
    for usage in events:
        if usage.project == PROJECT and usage.session is not None:
            by_session.setdefault(usage.session, []).append(usage)
    expected: list[dict[str, Any]] = []
    for session, rows in by_session.items():
        priced = [row.cost_nanousd for row in rows if row.cost_nanousd is not None]
        expected.append(
            {
                "project": PROJECT,
                "session": session,
                "calls": sum(row.attempt == 1 for row in rows),
                "attempts": len(rows),
                "errors": sum(row.outcome == "error" for row in rows),
                "prompt_tokens": sum(row.prompt_tokens for row in rows),
                "completion_tokens": sum(row.completion_tokens for row in rows),
                "cost_usd": f"{exact_usd(sum(priced)):.9f}",
                "cost_nanousd": sum(priced),
                "unpriced_attempts": len(rows) - len(priced),
                "first_seen": min(row.started_at for row in rows).isoformat(),
                "last_seen": max(row.started_at for row in rows).isoformat(),
            }
        )
    expected.sort(key=lambda summary: summary["last_seen"], reverse=True)
    assert listed == expected
    assert [summary["session"] for summary in listed] == [
        "ticket-1",
        "[red]boom[/red]",
        "ticket-2",
        "ticket-old",
        "ticket-older",
    ]
    assert listed[0]["cost_usd"] == "2.001234568"  # 1_234_567 + 2_000_000_001 nano-USD, to the last digit
    assert (listed[0]["calls"], listed[0]["attempts"], listed[0]["errors"]) == (2, 3, 1)


def test_sessions_since_until_and_limit(
    ledger: tuple[str, list[UsageEvent]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, events = ledger

    def sessions(*args: str) -> list[str]:
        status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--format", "json", "--db", url, *args)
        assert (status, err) == (0, "")
        return [summary["session"] for summary in json.loads(out)]

    assert sessions("--since", "7d") == ["ticket-1", "[red]boom[/red]"]
    assert sessions("--since", "30d", "--until", "4d") == ["[red]boom[/red]", "ticket-2"]
    assert sessions("--limit", "2") == ["ticket-1", "[red]boom[/red]"]
    day = min(e.started_at for e in events if e.session == "ticket-2").date()
    assert sessions("--since", day.isoformat(), "--until", (day + timedelta(days=1)).isoformat()) == ["ticket-2"]
    status, out, err = run_main(capsys, "sessions", "--project", "nobody", "--db", url)
    assert (status, err) == (0, "")
    assert out == "no sessions of project 'nobody'\n"


def test_sessions_table_from_the_command(ledger: tuple[str, list[UsageEvent]]) -> None:
    url, _ = ledger
    done = run_cli("sessions", "--project", PROJECT, "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    rows = [line.split() for line in done.stdout.splitlines()]
    assert f"Sessions of {PROJECT}, most recent first (times UTC)" in done.stdout
    ticket = next(row for row in rows if row and row[0] == "ticket-1")
    assert ticket[1:6] == ["2", "3", "1", "2.001234568", "1"]  # calls, attempts, errors, cost, unpriced
    # A name that looks like rich markup is shown as it is, not interpreted; its one call has no price,
    # so its cost is unpriced, as the report's tables show it, not a 0.000000000 that reads as free.
    boom = next(row for row in rows if row and row[0] == "[red]boom[/red]")
    assert boom[1:6] == ["1", "1", "0", "unpriced", "1"]
    assert "x-1" not in done.stdout  # another project's session
    assert "ticket-old" in done.stdout


def test_sessions_table_fits_80_columns_without_cutting_a_date_or_a_number(
    ledger: tuple[str, list[UsageEvent]], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 80 columns, as a terminal or a CI log has: "2026-12-0" was printed for 2026-12-05 in the last column.
    url, events = ledger
    monkeypatch.setenv("COLUMNS", "80")
    status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--db", url)
    assert (status, err) == (0, "")
    assert max(len(line) for line in out.splitlines()) <= 80
    rows = [line.split() for line in out.splitlines()]
    ticket = next(row for row in rows if row and row[0] == "ticket-1")
    assert ticket[1:6] == ["2", "3", "1", "2.001234568", "1"]
    first, last = (
        min(usage.started_at for usage in events if usage.session == "ticket-1"),
        max(usage.started_at for usage in events if usage.session == "ticket-1"),
    )
    assert ticket[6:] == [f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}"]  # the dates whole; their times on the next line


@pytest.mark.parametrize(
    ("columns", "shown", "left_out"),
    [
        ("60", ["session", "calls", "cost (USD)", "unpriced", "last seen"], "attempts, errors, first seen"),
        ("40", ["session", "cost (USD)", "unpriced"], "attempts, errors, first seen, calls, last seen"),
    ],
)
def test_sessions_table_narrower_than_80_columns_leaves_columns_out_rather_than_cut_a_number(
    columns: str,
    shown: list[str],
    left_out: str,
    ledger: tuple[str, list[UsageEvent]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A split pane: at 60 columns the session column was gone and the cost read "1.162620…"; at 40 "unpric…".
    url, _ = ledger
    monkeypatch.setenv("COLUMNS", columns)
    status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--db", url)
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= int(columns)
    assert "…" not in out
    heading = next(line for line in lines if line.startswith("session"))
    assert re.split(r" {2,}", heading.strip()) == shown
    rows = [line.split() for line in lines]
    ticket = next(row for row in rows if row and row[0] == "ticket-1")
    boom = next(row for row in rows if row and row[0].startswith("[red]"))
    cost = shown.index("cost (USD)")
    assert (ticket[cost], ticket[shown.index("unpriced")]) == ("2.001234568", "1")
    assert boom[cost] == "unpriced"
    assert f"Not shown, for width: {left_out} (a wider terminal shows them)." in " ".join(out.split())


def test_sessions_table_shows_control_characters_in_a_name_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal would run an escape sequence, break the row at a newline, and reorder the line at a
    # right-to-left override; the table shows each as the report's tables do.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    names = ["\x1b[2J\x1b]0;pwned\x07wiped", "two\nlines", "invoice\u202efdp.exe"]
    start = datetime.now(UTC) - timedelta(hours=1)
    with UsageStore(url) as store:
        store.write([event(start + timedelta(minutes=index), session=name) for index, name in enumerate(names)])
    monkeypatch.delenv("COLUMNS", raising=False)  # piped, 200 columns: no name folds
    status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--db", url)
    assert (status, err) == (0, "")
    assert not set(out) & {"\x1b", "\x07", "\u202e"}
    for shown in ("\\x1b[2J\\x1b]0;pwned\\x07wiped", "two\\nlines", "invoice\\u202efdp.exe"):
        assert shown in out
    status, out, err = run_main(capsys, "sessions", "--project", PROJECT, "--format", "json", "--db", url)
    assert sorted(summary["session"] for summary in json.loads(out)) == sorted(names)  # JSON: as stored


def export_line(usage: UsageEvent) -> dict[str, Any]:
    """What an exported line must hold for ``usage``, written out field by field here."""
    line: dict[str, Any] = {}
    for name in UsageEvent.__dataclass_fields__:
        value = getattr(usage, name)
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime | date):
            value = value.isoformat()
        elif isinstance(value, Mapping):
            value = dict(value)
        line[name] = value
        if name == "cost_nanousd":
            line["cost_usd"] = None if value is None else f"{exact_usd(value):.9f}"
    return line


def test_export_writes_each_row_as_stored_with_exact_money(
    ledger: tuple[str, list[UsageEvent]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, events = ledger
    out = tmp_path / "usage.jsonl"
    status, printed, err = run_main(capsys, "export", "--project", PROJECT, "--out", str(out), "--db", url)
    assert (status, err) == (0, "")
    mine = sorted((e for e in events if e.project == PROJECT), key=lambda e: (e.started_at, e.attempt))
    assert printed == f"wrote {len(mine)} rows of project {PROJECT!r} to {out}\n"
    lines = out.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [export_line(usage) for usage in mine]
    first = json.loads(lines[0])
    assert list(first)[list(first).index("cost_nanousd") + 1] == "cost_usd"
    costly = next(json.loads(line) for line in lines if json.loads(line)["agent"] == "critic")
    assert (costly["cost_nanousd"], costly["cost_usd"]) == (2_000_000_001, "2.000000001")
    for line in lines:  # and each line reads back as the stored event
        record = json.loads(line)
        del record["cost_usd"]
        assert UsageEvent.from_json(record) in mine
    assert not list(tmp_path.glob(".*.part"))  # the temporary file became the export
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # as any new file, not the temporary file's 0600


def test_an_export_line_given_to_from_json_as_text_is_refused_saying_what_it_takes(
    ledger: tuple[str, list[UsageEvent]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = ledger
    out = tmp_path / "usage.jsonl"
    assert run_main(capsys, "export", "--project", PROJECT, "--out", str(out), "--db", url)[0] == 0
    line = out.read_text(encoding="utf-8").splitlines()[0]
    # As docs/reports.md says: the line parsed, minus cost_usd.
    record = json.loads(line)
    del record["cost_usd"]
    assert UsageEvent.from_json(record).cost_nanousd == record["cost_nanousd"]
    # The line itself, as text, is not a dict: a clear TypeError, not "dictionary update sequence element #0".
    with pytest.raises(TypeError, match=r"json\.loads"):
        UsageEvent.from_json(line)  # type: ignore[arg-type]


def test_export_since_and_until(
    ledger: tuple[str, list[UsageEvent]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, events = ledger
    out = tmp_path / "recent.jsonl"
    status, printed, err = run_main(
        capsys, "export", "--project", PROJECT, "--since", "30d", "--until", "4d", "--out", str(out), "--db", url
    )
    assert (status, err) == (0, "")
    now = datetime.now(UTC)
    expected = sorted(
        (
            e
            for e in events
            if e.project == PROJECT and now - timedelta(days=30) <= e.started_at < now - timedelta(days=4)
        ),
        key=lambda e: (e.started_at, e.attempt),
    )
    assert [e.session for e in expected] == ["ticket-2", "ticket-2", "[red]boom[/red]"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [export_line(e) for e in expected]
    assert printed.startswith("wrote 3 rows of project 'acme-support' since ")


def test_an_export_line_holds_no_character_that_splits_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # JSON takes U+2028, U+2029 and U+0085 as they are, but str.splitlines() and other readers end a line at
    # each: a captured answer holding one was two broken lines of JSON. They are escaped, as \n is.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    text = "one\u2028two\u2029three\x85four"
    written = event(datetime.now(UTC) - timedelta(hours=1), session=text, response_content=text, tags={"t": text})
    with UsageStore(url) as store:
        store.write([written])
    out = tmp_path / "usage.jsonl"
    status, _, err = run_main(capsys, "export", "--project", PROJECT, "--out", str(out), "--db", url)
    assert (status, err) == (0, "")
    [line] = out.read_text(encoding="utf-8").splitlines()
    assert not {"\u2028", "\u2029", "\x85"} & set(line)
    assert json.loads(line) == export_line(written)


def test_export_from_the_command(ledger: tuple[str, list[UsageEvent]], tmp_path: Path) -> None:
    url, events = ledger
    out = tmp_path / "other.jsonl"
    out.write_text("an older export\n")
    done = run_cli("export", "--project", "other", "--out", str(out), "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"wrote 1 row of project 'other' to {out}\n"
    [other] = [e for e in events if e.project == "other"]
    assert [json.loads(line) for line in out.read_text().splitlines()] == [export_line(other)]


@pytest.mark.parametrize("command", ["export", "report"])
@pytest.mark.parametrize("named", ["usage.db", "usage.db-wal", "link-to-usage.db"])
def test_an_output_file_that_is_the_ledger_itself_exits_2_and_the_ledger_stays(
    command: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "usage.db"
    url = f"sqlite:///{path}"
    events = sample_events()
    with UsageStore(url) as store:
        store.write(events)
    (tmp_path / "link-to-usage.db").symlink_to(path)
    reader = sqlite3.connect(path)  # an application reading the ledger: its -wal file is there meanwhile
    try:
        reader.execute("SELECT count(*) FROM ar_usage_records").fetchone()
        assert (tmp_path / "usage.db-wal").exists()
        args = ("export", "--project", PROJECT) if command == "export" else ("report",)
        status, out, err = run_main(capsys, *args, "--out", str(tmp_path / named), "--db", url)
    finally:
        reader.close()
    assert_one_line_error(status, out, err, 2, f"argument --out: {tmp_path / named} is the usage ledger itself")
    with UsageStore(url, create=False) as store:
        assert store.count() == len(events)  # every project's rows, untouched
    assert not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize(
    "database",
    [
        "file:{path}?uri=true",
        "file:{path}?mode=ro&uri=true",
        "file://localhost{path}?mode=rw&uri=true",
        "file:usage.db?uri=true",  # relative to the working directory
        "{path}?uri=true",  # no file: prefix: SQLite reads a plain name
    ],
)
def test_an_output_file_that_is_the_ledger_named_by_a_file_uri_exits_2_and_the_ledger_stays(
    database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check compared --out with the URL's database text only for plain paths: through a file: URI
    # (how SQLite opens a ledger read-only) export replaced the ledger, every project's rows, with its file.
    directory = tmp_path / "my ledger"
    directory.mkdir()
    path = directory / "usage.db"
    events = sample_events()
    with UsageStore(f"sqlite:///{path}") as store:
        store.write(events)
    monkeypatch.chdir(directory)
    url = "sqlite:///" + database.format(path=path)
    status, out, err = run_main(capsys, "export", "--project", PROJECT, "--out", str(path), "--db", url)
    assert_one_line_error(status, out, err, 2, f"argument --out: {path} is the usage ledger itself")
    with UsageStore(f"sqlite:///{path}", create=False) as store:
        assert store.count() == len(events)
    assert not list(directory.glob(".*.part"))


@pytest.mark.parametrize("option", ["--url", "--db"])
def test_db_takes_the_ledger_commands_db_option_as_well_as_url(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user copies --db from the report command: db upgrade refused it as an unrecognized argument.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    status, out, err = run_main(capsys, "db", "upgrade", option, url)
    assert (status, err) == (0, "")
    status, out, err = run_main(capsys, "db", "current", option, url)
    assert (status, err) == (0, "")
    assert out == f"{url}: {HEAD} (head)\n"


def test_a_ledger_named_by_a_file_uri_is_checked_as_its_path_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A file: URI was left to SQLite: looking at a missing ledger made an empty file there (and report named
    # db upgrade instead of the path), and a missing directory failed only on connecting.
    missing = tmp_path / "missing.db"
    status, out, err = run_main(capsys, "db", "current", "--url", f"sqlite:///file:{missing}?uri=true")
    assert (status, err) == (0, "")
    assert out.endswith(": none (no such file; autogen-reliability db upgrade creates it)\n")
    status, out, err = run_main(capsys, "report", "--db", f"sqlite:///file:{missing}?uri=true")
    assert_one_line_error(status, out, err, 1, f"no usage ledger at file:{missing}: the file does not exist")
    assert not missing.exists()
    status, out, err = run_main(capsys, "db", "upgrade", "--url", f"sqlite:///file:{tmp_path}/no/dir.db?uri=true")
    assert_one_line_error(
        status, out, err, 2, f"the directory of the SQLite database {tmp_path}/no/dir.db does not exist"
    )
    with pytest.raises(ConfigurationError, match="does not exist"):
        UsageStore(f"sqlite:///file://localhost{tmp_path}/no/dir.db?mode=rwc&uri=true")


def test_export_to_a_symlink_a_fifo_or_a_private_file_keeps_what_is_there(
    ledger: tuple[str, list[UsageEvent]], tmp_path: Path
) -> None:
    url, events = ledger
    rows = sum(1 for e in events if e.project == PROJECT)
    # A symlink, as /dev/stdout is: written through, and still a symlink (here to this process's stdout).
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    done = run_cli("export", "--project", PROJECT, "--out", str(stdout), "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert len([line for line in done.stdout.splitlines() if line.startswith("{")]) == rows
    assert stdout.is_symlink()
    elsewhere = tmp_path / "exports"
    elsewhere.mkdir()
    link = tmp_path / "latest.jsonl"
    link.symlink_to(elsewhere / "may.jsonl")
    done = run_cli("export", "--project", PROJECT, "--out", str(link), "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert link.is_symlink()
    assert len((elsewhere / "may.jsonl").read_text().splitlines()) == rows
    assert not list(tmp_path.glob(".*.part")) + list(elsewhere.glob(".*.part"))
    # A FIFO: its reader gets the rows, and it stays a FIFO.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(
        [sys.executable, "-m", "autogen_reliability", "export", "--project", PROJECT, "--out", str(fifo), "--db", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    received: list[str] = []
    reading = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")), daemon=True)
    reading.start()
    _, err = writer.communicate(timeout=120)
    assert (writer.returncode, err) == (0, "")
    reading.join(timeout=10)  # a writer that replaced the FIFO left its reader waiting for ever
    assert len(received) == 1, "the FIFO's reader got nothing"
    assert len(received[0].splitlines()) == rows
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    # A private file stays private: an export holds the captured prompts.
    private = tmp_path / "private.jsonl"
    private.write_text("an older export\n")
    private.chmod(0o600)
    done = run_cli("export", "--project", PROJECT, "--out", str(private), "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert len(private.read_text().splitlines()) == rows


def test_an_out_that_is_standard_output_gets_the_output_alone_and_appended_to(
    ledger: tuple[str, list[UsageEvent]], tmp_path: Path
) -> None:
    # --out /dev/stdout through a pipe ended with "wrote 9 rows ... to /proc/123/fd/pipe:[456]", a line that is
    # not JSON (jq failed on it); under `>> file` the file was replaced, and what it held before was lost.
    url, events = ledger
    rows = sum(1 for e in events if e.project == PROJECT)
    done = run_cli("export", "--project", PROJECT, "--out", "/dev/stdout", "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert [json.loads(line)["project"] for line in done.stdout.splitlines()] == [PROJECT] * rows
    done = run_cli("report", "--format", "csv", "--out", "/dev/stdout", "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[0].startswith("agent,model,calls,")
    assert not [line for line in done.stdout.splitlines() if line.startswith("wrote ")]
    appended = tmp_path / "all.jsonl"
    appended.write_text('{"kept": true}\n', encoding="utf-8")
    command = [sys.executable, "-m", "autogen_reliability", "export", "--project", PROJECT, "--out", "/dev/stdout"]
    environment = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    with appended.open("a", encoding="utf-8") as stdout:
        status = subprocess.run([*command, "--db", url], stdout=stdout, timeout=120, check=False, env=environment)
    assert status.returncode == 0
    lines = appended.read_text(encoding="utf-8").splitlines()
    assert lines[0] == '{"kept": true}'
    assert [json.loads(line)["project"] for line in lines[1:]] == [PROJECT] * rows


def test_iter_events_streams_from_a_server_side_cursor_on_postgresql(make_pg_database: Callable[[], str]) -> None:
    url = make_pg_database()
    start = datetime.now(UTC) - timedelta(days=1)
    with UsageStore(url) as store:
        store.write([event(start + timedelta(seconds=i)) for i in range(25)])
        rows = store.iter_events(project=PROJECT, batch_size=10)
        assert [next(rows).started_at for _ in range(2)] == [start, start + timedelta(seconds=1)]
        # Paused after two rows, the reading connection's last statement is a FETCH of a batch from a
        # cursor on the server (SQLAlchemy reads one row first, then batches): the rows stay there.
        watcher = create_engine(url, poolclass=NullPool)
        with watcher.connect() as connection:
            queries = (
                connection.execute(
                    text(
                        "SELECT query FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                .scalars()
                .all()
            )
        watcher.dispose()
        assert any(query.startswith("FETCH FORWARD 10 FROM") for query in queries), queries
        assert 2 + sum(1 for _ in rows) == 25


def test_iter_events_holds_one_batch_in_memory_on_sqlite(tmp_path: Path) -> None:
    start = datetime.now(UTC) - timedelta(days=1)
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        store.write([event(start + timedelta(seconds=i), response_content="x" * 200) for i in range(5000)])

        tracemalloc.start()
        try:
            assert len(store.events()) == 5000
            _, all_at_once = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            assert sum(1 for _ in store.iter_events(batch_size=100)) == 5000
            _, streamed = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert streamed < all_at_once / 10, (streamed, all_at_once)


def test_iter_events_checks_its_arguments_when_called(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        for bad in (0, -1, True, 2.5):
            with pytest.raises(ConfigurationError, match="batch_size must be a positive int"):
                store.iter_events(batch_size=bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="since must be timezone-aware"):
            store.iter_events(since=datetime(2025, 5, 1))
        for bad_project, reason in (
            ("a\udcff", "must not contain"),
            ("a\x00", "must not contain"),
            (7, "must be a string"),
        ):
            # As sessions() and report() refuse it: the driver raised UnicodeEncodeError, PostgreSQL a DataError.
            with pytest.raises(ConfigurationError, match=f"project {reason}"):
                store.iter_events(project=bad_project)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match=f"project {reason}"):
                store.events(project=bad_project)  # type: ignore[arg-type]
        for bad_limit in (0, True):
            with pytest.raises(ConfigurationError, match="limit must be a positive int"):
                store.sessions(limit=bad_limit)
        with pytest.raises(ConfigurationError, match="until must be timezone-aware"):
            store.sessions(until=datetime(2025, 5, 1))


# Past what fetchmany() takes on SQLite (a C int), past a 64-bit integer (LIMIT, OFFSET), and far past.
HUGE_COUNTS = (2**31, 2**63 - 1, 2**63, 10**20)


def test_a_count_beyond_what_the_database_takes_means_all_of_them(ledger: tuple[str, list[UsageEvent]]) -> None:
    url, events = ledger
    now = datetime.now(UTC)
    with UsageStore(url, create=False) as store:
        every = store.events()
        sessions, top = store.sessions(), store.report(top=100).top_sessions
        for count in HUGE_COUNTS:
            assert list(store.iter_events(batch_size=count)) == every, count
            assert store.sessions(limit=count) == sessions, count
            assert store.report(top=count).top_sessions == top, count
        # Every old row goes, in one batch.
        assert store.delete_older_than(now - timedelta(days=90), batch_size=10**20).records == 2
        assert store.count() == len(events) - 2


@pytest.mark.parametrize("count", [*(str(count) for count in HUGE_COUNTS), "9" * 5000])
def test_a_count_option_beyond_what_the_database_takes_means_all_of_them(
    count: str, ledger: tuple[str, list[UsageEvent]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = ledger
    status, out, err = run_main(
        capsys, "sessions", "--project", PROJECT, "--format", "json", "--limit", count, "--db", url
    )
    assert (status, err) == (0, "")
    assert len(json.loads(out)) == 5  # every session of the project
    status, out, err = run_main(capsys, "report", "--top", count, "--format", "json", "--db", url)
    assert (status, err) == (0, "")
    assert len(json.loads(out)["top_sessions"]) == 6  # every session of the ledger
    status, out, err = run_main(capsys, "cleanup", "--older-than", "90d", "--batch-size", count, "--db", url)
    assert (status, err) == (0, "")
    assert ": removed 2 usage rows and 2 captured contents, " in out


def test_cleanup_removes_exactly_the_old_rows_and_their_content(
    ledger: tuple[str, list[UsageEvent]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, events = ledger
    now = datetime.now(UTC)
    old = sorted((e for e in events if e.started_at < now - timedelta(days=90)), key=lambda e: e.started_at)
    kept = sorted((e for e in events if e not in old), key=lambda e: (e.started_at, e.attempt))
    assert [e.session for e in old] == ["ticket-older", "ticket-old"]
    assert {e.event_id for e in old} <= content_ids(url)

    status, out, err = run_main(capsys, "cleanup", "--older-than", "90d", "--batch-size", "1", "--db", url)
    assert (status, err) == (0, "")
    masked = make_url(url).render_as_string(hide_password=True)
    stamp = "%Y-%m-%d %H:%M:%S"
    assert out.startswith(
        f"{masked}: removed 2 usage rows and 2 captured contents, started from "
        f"{old[0].started_at:{stamp}} to {old[-1].started_at:{stamp}} UTC (before "
    )
    assert out.endswith(" UTC)\n")
    with UsageStore(url) as store:
        assert store.events() == kept
    assert content_ids(url) == {e.event_id for e in kept if e.request_content or e.response_content}

    status, out, err = run_main(capsys, "cleanup", "--older-than", "90d", "--db", url)
    assert (status, err) == (0, "")
    assert out.startswith(f"{masked}: no usage rows started before ")
    assert out.endswith(" UTC; nothing to remove\n")


def test_sqlite_uri_parameters_are_refused_unless_sqlite_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The driver drops ?mode=ro without uri=true (a warning, then a cleanup that deleted rows of a
    # ledger the user meant to open read-only); with uri=true but no file: prefix, SQLite creates a
    # file named "usage.db?mode=ro".
    path = tmp_path / "usage.db"
    events = sample_events()
    with UsageStore(f"sqlite:///{path}") as store:
        assert store.write(events) == len(events)
    for url in (f"sqlite:///{path}?mode=ro", f"sqlite:///{path}?mode=ro&uri=true"):
        status, out, err = run_main(capsys, "cleanup", "--older-than", "90d", "--db", url)
        assert_one_line_error(status, out, err, 2, "'mode'", f"sqlite:///file:{path}?mode=ro&uri=true")
    with UsageStore(f"sqlite:///{path}") as store:
        assert store.count() == len(events)
    assert not [name.name for name in tmp_path.iterdir() if "?" in name.name]
    # Written as SQLite reads it, the ledger is read-only: an export reads it, a cleanup fails.
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    status, out, err = run_main(capsys, "cleanup", "--older-than", "90d", "--db", read_only)
    assert_one_line_error(status, out, err, 1, "attempt to write a readonly database")
    status, out, err = run_main(
        capsys, "export", "--project", PROJECT, "--out", str(tmp_path / "rows.jsonl"), "--db", read_only
    )
    assert (status, err) == (0, "")
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == sum(e.project == PROJECT for e in events)


def test_cleanup_dry_run_removes_nothing(ledger: tuple[str, list[UsageEvent]]) -> None:
    url, events = ledger
    before = content_ids(url)
    done = run_cli("cleanup", "--older-than", "8d", "--dry-run", "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    # ticket-2's two rows (10 days), the old ones (100, 200 days): 4 rows, 2 of them with content.
    assert ": would remove 4 usage rows and 2 captured contents, started from " in done.stdout
    assert done.stdout.endswith("; nothing deleted (--dry-run)\n")
    with UsageStore(url) as store:
        assert store.count() == len(events)
    assert content_ids(url) == before


def test_delete_older_than_deletes_content_where_sqlite_enforces_no_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    now = datetime.now(UTC)
    old = [event(now - timedelta(days=40 + i), response_content=f"answer {i}") for i in range(5)]
    new = event(now, response_content="kept")
    with UsageStore(url) as store:
        store.write([*old, new])
    plain = create_engine(url, poolclass=NullPool)  # SQLite's default: foreign keys not enforced, no cascade
    with plain.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    store = UsageStore(plain)
    result = store.delete_older_than(now - timedelta(days=30), batch_size=2)
    assert (result.records, result.contents, result.dry_run) == (5, 5, False)
    assert (result.oldest, result.newest) == (old[-1].started_at, old[0].started_at)
    assert store.events() == [new]
    plain.dispose()
    assert content_ids(url) == {new.event_id}


def test_delete_older_than_commits_each_batch(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'usage.db'}")
    now = datetime.now(UTC)
    store = UsageStore(engine)
    store.write([event(now - timedelta(days=10, minutes=i)) for i in range(7)] + [event(now)])
    commits: list[int] = []
    sqlalchemy_event.listen(engine, "commit", lambda _connection: commits.append(1))
    result = store.delete_older_than(now.date(), batch_size=3)
    assert result.records == 7
    assert len(commits) == 3  # 3 + 3 + 1 rows
    assert store.count() == 1
    commits.clear()
    dry = store.delete_older_than(now + timedelta(days=1), dry_run=True)
    assert (dry.records, dry.contents, dry.dry_run, commits) == (1, 0, True, [])
    assert store.count() == 1
    engine.dispose()


def test_delete_older_than_checks_its_arguments(tmp_path: Path) -> None:
    with UsageStore(f"sqlite:///{tmp_path / 'usage.db'}") as store:
        with pytest.raises(ConfigurationError, match="cutoff must be timezone-aware"):
            store.delete_older_than(datetime(2025, 5, 1))
        with pytest.raises(ConfigurationError, match="cutoff must be a timezone-aware datetime or a date"):
            store.delete_older_than(None)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="batch_size must be a positive int, got 0"):
            store.delete_older_than(date(2025, 5, 1), batch_size=0)
        with pytest.raises(ConfigurationError, match="dry_run must be True or False"):
            store.delete_older_than(date(2025, 5, 1), dry_run="yes")  # type: ignore[arg-type]


# --- what every ledger command refuses ---------------------------------------------------------------

LEDGER_COMMANDS = {
    "report": ("report",),
    "sessions": ("sessions", "--project", PROJECT),
    "export": ("export", "--project", PROJECT, "--out", "{tmp}/usage.jsonl"),
    "cleanup": ("cleanup", "--older-than", "90d"),
}


def command_line(name: str, tmp_path: Path, *more: str) -> list[str]:
    """The command ``name`` with its required arguments (files in ``tmp_path``), then ``more``."""
    return [part.format(tmp=tmp_path) for part in LEDGER_COMMANDS[name]] + list(more)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("report", "--since", "yesterday"), ("argument --since: 'yesterday' is not a date (2025-05-01)", "7d")),
        (("sessions", "--project", "p", "--until", "2025-13-01"), ("argument --until: '2025-13-01' is not a date",)),
        (("export", "--project", "p", "--out", "x.jsonl", "--since", "5x"), ("'5x' is not a date",)),
        (("report", "--since", "2025-05-01T09:00"), ("'2025-05-01T09:00' has no UTC offset; add one",)),
        (("report", "--since", "2025-05-02", "--until", "2025-05-01"), ("until (2025-05-01 00:00:00 UTC) must",)),
        (("sessions", "--project", "p", "--since", "2025-05-01", "--until", "2025-05-01T00:00Z"), ("after --since",)),
        (("export", "--project", "p", "--out", "x.jsonl", "--since", "7d", "--until", "7d"), ("after --since",)),
        (("sessions", "--project", "p", "--since", "99999999w"), ("--since: 699999993 days before now is",)),
        (("report", "--since", "99999999999999999999d"), ("longer than any date can go back",)),
        (("sessions", "--project", "p", "--limit", "0"), ("argument --limit: must be 1 or more, got 0",)),
        (("sessions", "--project", "p", "--limit", "-5"), ("argument --limit: must be 1 or more, got -5",)),
        (("sessions", "--project", "p", "--limit", "ten"), ("argument --limit: 'ten' is not a whole number",)),
        (("sessions", "--project", "p", "--format", "csv"), ("argument --format: invalid choice: 'csv'",)),
        (("sessions",), ("the following arguments are required: --project",)),
        (("sessions", "--project", ""), ("argument --project: must not be empty or blank",)),
        (("export", "--project", "  ", "--out", "x.jsonl"), ("argument --project: must not be empty or blank",)),
        (("export", "--project", "p"), ("the following arguments are required: --out",)),
        (("export", "--out", "x.jsonl"), ("the following arguments are required: --project",)),
        (("export", "--project", "p", "--out", "/no/dir/x.jsonl"), ("the directory of /no/dir/x.jsonl does not",)),
        (("export", "--project", "p", "--out", "."), ("argument --out: . is a directory",)),
        (("export", "--project", "p", "--out", ""), ("argument --out: must not be empty; give the path of a file",)),
        # A trailing slash names a directory: the file new.jsonl was written (or an existing file replaced).
        (("export", "--project", "p", "--out", "{tmp}/new.jsonl/"), ("/new.jsonl/ ends with /, so names a directory",)),
        (("report", "--out", "{tmp}/usage.db/"), ("/usage.db/ ends with /, so names a directory",)),
        # A byte of the command line that is not UTF-8 (Python reads it as a lone surrogate): no row holds one.
        (("export", "--project", "a\udcff", "--out", "{tmp}/x.jsonl"), ("--project: the name must not contain",)),
        (("sessions", "--project", "a\udcff"), ("argument --project: the name must not contain '\\udcff'",)),
        (("export", "--project", "p", "--out", "~no-such-user-ar/x"), ("cannot expand ~no-such-user-ar: no such",)),
        (("report", "--out", "x" * 300), ("argument --out: xxx", ": File name too long")),
        (("cleanup",), ("the following arguments are required: --older-than",)),
        (("cleanup", "--older-than", "0d"), ("argument --older-than: '0d' is no time at all",)),
        (("cleanup", "--older-than", "90"), ("argument --older-than: '90' is not a duration such as 24h, 90d or 2w",)),
        (("cleanup", "--older-than", "2025-01-01"), ("'2025-01-01' is not a duration",)),
        (("cleanup", "--older-than", "99999999w"), ("--older-than: 699999993 days before now is before the year 1",)),
        (("cleanup", "--older-than", "90d", "--batch-size", "0"), ("argument --batch-size: must be 1 or more, got 0",)),
        (("cleanup", "--older-than", "90d", "--bogus"), ("unrecognized arguments: --bogus",)),
    ],
)  # fmt: skip
def test_bad_ledger_arguments_exit_2_with_one_line(
    args: tuple[str, ...], fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url):  # a ledger that works: only the arguments are wrong
        pass
    status, out, err = run_main(capsys, *(arg.format(tmp=tmp_path) for arg in args), "--db", url)
    assert_one_line_error(status, out, err, 2, *fragments)
    assert not list(tmp_path.glob("*.jsonl")), "nothing is written"


@pytest.mark.parametrize("command", ["report", "sessions", "export"])
def test_an_until_not_after_since_is_refused_by_the_commands_own_parser(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Said by the top-level parser before: "autogen-reliability: error:", where the command's other
    # argument errors say "autogen-reliability report: error:".
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url):
        pass
    period = ("--since", "2025-05-01T00:00:00Z", "--until", "2025-05-01")
    status, out, err = run_main(capsys, *command_line(command, tmp_path, *period, "--db", url))
    assert (status, out) == (2, "")
    assert err == (
        f"autogen-reliability {command}: error: --until (2025-05-01 00:00:00 UTC) must be after "
        "--since (2025-05-01 00:00:00 UTC) (see --help)\n"
    )
    _, _, other = run_main(capsys, *command_line(command, tmp_path, "--since", "yesterday", "--db", url))
    assert other.startswith(f"autogen-reliability {command}: error: argument --since: ")


@pytest.mark.parametrize("option", ["--top", "--limit", "--batch-size"])
def test_a_count_that_is_no_number_is_quoted_back_cut_short(
    option: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    command = {"--top": "report", "--limit": "sessions", "--batch-size": "cleanup"}[option]
    status, out, err = run_main(capsys, *command_line(command, tmp_path, option, "1" * 5000 + "x"))
    assert_one_line_error(status, out, err, 2, f"argument {option}: '1111", "is not a whole number")
    assert len(err) < 200, err


@pytest.mark.parametrize("option", ["--top", "--limit", "--batch-size"])
@pytest.mark.parametrize("count", ["\u0661", "\uff15", "1_000", "+5", " 5", "5 ", "0x10", "5.0", "\u00b2"])
def test_a_count_is_written_in_ascii_digits_only(
    option: str, count: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # int() took an Arabic-Indic or full-width digit, 1_000, +5 and spaces around; durations refuse them.
    command = {"--top": "report", "--limit": "sessions", "--batch-size": "cleanup"}[option]
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url):  # a ledger that works: only the count is wrong
        pass
    status, out, err = run_main(capsys, *command_line(command, tmp_path, option, count, "--db", url))
    assert_one_line_error(status, out, err, 2, f"autogen-reliability {command}: error: argument {option}: ")
    assert f"{count!r} is not a whole number" in err


@pytest.mark.parametrize(
    "args",
    [
        ("report", "--since", "99999999d"),
        ("report", "--until", "3000000d"),
        ("sessions", "--project", "p", "--since", "99999999w"),
        ("export", "--project", "p", "--out", "{tmp}/usage.jsonl", "--since", "99999999d"),
        ("cleanup", "--older-than", "99999999d"),
    ],
)
def test_a_time_ago_before_the_year_1_is_refused_as_any_bad_time_is(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url):
        pass
    status, out, err = run_main(capsys, *(arg.format(tmp=tmp_path) for arg in args), "--db", url)
    assert_one_line_error(status, out, err, 2, "days before now is before the year 1")
    # As argparse says a time that does not parse: the command's name, the option, a pointer to --help.
    assert err.startswith(f"autogen-reliability {args[0]}: error: argument {args[-2]}: ")
    assert err.endswith(" (see --help)\n")
    assert not list(tmp_path.glob("*.jsonl")), "nothing is written"


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
@pytest.mark.parametrize(
    ("url", "fragments"),
    [
        ("mysql://app:s3cret@db/usage", ("bad database URL: the usage store supports SQLite and PostgreSQL",)),
        ("sqlite:////no/such/dir/usage.db", ("bad database URL: the directory of the SQLite database",)),
        ("postgresql+asyncpg://app:s3cret@db/usage", ("is an asyncio driver",)),
        ("not a url", ("bad database URL: malformed database URL",)),
        # Two slashes, not three: a traceback ending in SQLAlchemy's "Invalid SQLite URL" and its list of forms.
        ("sqlite://usage.db", ("bad database URL: a SQLite URL has no host", "write sqlite:///usage.db")),
    ],
)
def test_a_database_url_that_can_never_work_exits_2(
    command: str, url: str, fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run_main(capsys, *command_line(command, tmp_path, "--db", url))
    assert_one_line_error(status, out, err, 2, *fragments)
    assert "s3cret" not in err


@pytest.mark.parametrize(
    "args", [*(LEDGER_COMMANDS[name] + ("--db",) for name in LEDGER_COMMANDS), ("db", "upgrade", "--url")]
)
def test_an_empty_database_url_exits_2_and_the_configured_ledger_is_left_alone(
    args: tuple[str, ...], capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --db "$LEDGER" with the variable unset: the option was given, empty. It was read as left out, so the
    # command ran on the configured ledger, and cleanup deleted its rows.
    configured = tmp_path / "configured.db"
    with UsageStore(f"sqlite:///{configured}") as store:
        store.write(sample_events())
    monkeypatch.setenv(ENV_DB_URL, f"sqlite:///{configured}")
    before = configured.read_bytes()
    status, out, err = run_main(capsys, *(part.format(tmp=tmp_path) for part in args), "")
    assert_one_line_error(status, out, err, 2, "bad database URL: malformed database URL")
    assert ENV_DB_URL not in err
    assert configured.read_bytes() == before
    assert not list(tmp_path.glob("*.jsonl")), "nothing is written"


def test_a_ledger_whose_file_name_is_not_utf_8_is_used_and_shown_escaped(tmp_path: Path) -> None:
    # A file name may hold any byte; Python reads one that is not UTF-8 as a lone surrogate, which the
    # URL's rendering for a message could not encode: every command ended in a traceback.
    made = tmp_path / "usage.db"
    with UsageStore(f"sqlite:///{made}") as store:
        store.write(sample_events())
    ledger = made.rename(tmp_path / "caf\udce9.db")  # b"caf\xe9.db", as Latin-1 writes "café.db"
    url = f"sqlite:///{ledger}"
    done = run_cli("report", "--project", PROJECT, "--format", "json", "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["totals"]["calls"] == 7
    done = run_cli("cleanup", "--older-than", "150d", "--dry-run", "--db", url)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"sqlite:///{tmp_path}/caf%E9.db: would remove 1 usage row ")
    missing = tmp_path / "typo\udce9.db"
    done = run_cli("sessions", "--project", PROJECT, "--db", f"sqlite:///{missing}")
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 1, f"no usage ledger at {tmp_path}/typo\\udce9.db")
    assert not missing.exists()


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_a_missing_sqlite_file_exits_1_and_is_not_created(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo.db"
    status, out, err = run_main(capsys, *command_line(command, tmp_path, "--db", f"sqlite:///{missing}"))
    assert_one_line_error(status, out, err, 1, f"no usage ledger at {missing}: the file does not exist", "--db")
    assert not missing.exists()


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_a_server_that_does_not_answer_exits_1_without_the_password(
    command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"postgresql+psycopg://app:s3cret@127.0.0.1:{port}/usage"
    status, out, err = run_main(capsys, *command_line(command, tmp_path, "--db", url))
    assert_one_line_error(
        status, out, err, 1, f"cannot use the database postgresql+psycopg://app:***@127.0.0.1:{port}/usage: "
    )
    assert "s3cret" not in err


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        # db takes --url (or --db), the ledger commands --db: the option of the other is an unrecognized argument.
        (("db", "upgrade", "--database", "postgresql+psycopg://app:hunter2leak@db/usage"), "app:[REDACTED]@db/usage"),
        (("report", "--url", "postgresql+psycopg://app:hunter2leak@db/usage"), "app:[REDACTED]@db/usage"),
        (
            ("sessions", "--project", "p", "--dburl=postgresql+psycopg://app@db/usage?password=hunter2leak"),
            "?password=[REDACTED]",
        ),
    ],
)
def test_a_mistyped_option_is_not_echoed_with_the_password_it_holds(
    args: tuple[str, ...], shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run_main(capsys, *args)
    assert_one_line_error(status, out, err, 2, "unrecognized arguments: ", shown)
    assert "hunter2leak" not in err


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_a_database_without_usage_tables_exits_1_naming_the_upgrade_and_stays_as_it_was(
    command: str, tmp_path: Path
) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    connection.close()
    done = run_cli(*command_line(command, tmp_path, "--db", f"sqlite:///{path}"))
    assert_one_line_error(
        done.returncode,
        done.stdout,
        done.stderr,
        1,
        "has no usage tables",
        f"Upgrade it with: autogen-reliability db upgrade --url sqlite:///{path}",
    )
    assert _migrate.current_revision(f"sqlite:///{path}") is None  # not migrated behind the user's back
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


@pytest.fixture
def next_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Makes this process's library one release newer (a revision 0002), so that a ledger at 0001 is old."""
    scripts = tmp_path / "migrations"
    shutil.copytree(_migrate.script_location(), scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / f"{NEXT}_region.py").write_text(NEXT_REVISION)
    return lambda: monkeypatch.setattr(_migrate, "script_location", lambda: scripts)


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_a_ledger_at_an_older_schema_exits_1_naming_the_upgrade(
    command: str,
    ledger: tuple[str, list[UsageEvent]],
    next_release: Callable[[], None],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    url, events = ledger
    next_release()
    status, out, err = run_main(capsys, *command_line(command, tmp_path, "--db", url))
    masked = make_url(url).render_as_string(hide_password=True)
    assert_one_line_error(
        status,
        out,
        err,
        1,
        f"is at schema revision {HEAD}; this autogen-reliability needs revision {NEXT}",
        f"Upgrade it with: autogen-reliability db upgrade --url {shlex.quote(masked)}",
    )
    password = make_url(url).password
    assert not password or password not in err
    assert _migrate.current_revision(url) == HEAD
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(UsageRecord)).scalar_one() == len(events)
    engine.dispose()


@pytest.mark.parametrize("command", LEDGER_COMMANDS)
def test_a_ledger_from_a_newer_release_or_not_a_database_exits_1(command: str, tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    _migrate.upgrade(f"sqlite:///{newer}")
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE ar_alembic_version SET version_num = '0099'")
    connection.close()
    done = run_cli(*command_line(command, tmp_path, "--db", f"sqlite:///{newer}"))
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 1, "a newer release migrated it")

    garbage = tmp_path / "notes.db"
    garbage.write_text("not a database, but a file of notes\n" * 100)
    done = run_cli(*command_line(command, tmp_path, "--db", f"sqlite:///{garbage}"))
    assert_one_line_error(
        done.returncode,
        done.stdout,
        done.stderr,
        1,
        f"cannot use the database sqlite:///{garbage}: file is not a database",
    )


@pytest.mark.parametrize(
    ("rows", "problem"), [((HEAD, "0001"), "more than one revision"), (("",), "an empty revision")]
)
@pytest.mark.parametrize("command", [("db", "current", "--url"), ("db", "upgrade", "--url"), ("report", "--db")])
def test_a_version_table_that_is_not_ours_exits_1_with_one_line(
    rows: tuple[str, ...], problem: str, command: tuple[str, ...], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "usage.db"
    _migrate.upgrade(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        connection.execute("DELETE FROM ar_alembic_version")
        connection.executemany("INSERT INTO ar_alembic_version VALUES (?)", [(row,) for row in rows])
    connection.close()
    status, out, err = run_main(capsys, *command, f"sqlite:///{path}")
    assert_one_line_error(status, out, err, 1, f"sqlite:///{path}", f"ar_alembic_version holds {problem}")


# The child runs a command, pauses in its statement matching PATTERN (after SKIP such), says so, and waits there to
# be interrupted. It restores Python's Ctrl-C handler first: a job a non-interactive shell starts in the background
# (as CI runs these tests) begins with SIGINT ignored, where a terminal's would not.
_PAUSED_COMMAND = """
import re, signal, sys, time
from pathlib import Path
from sqlalchemy import Engine, event
from autogen_reliability._cli import main

signal.signal(signal.SIGINT, signal.default_int_handler)
paused, pattern, skip, *argv = sys.argv[1:]
seen = []

def pause(_connection, _cursor, statement, *_):
    if re.match(pattern, statement, re.DOTALL) and len(seen) == int(skip):
        Path(paused).touch()
        time.sleep(60)
    elif re.match(pattern, statement, re.DOTALL):
        seen.append(statement)

event.listen(Engine, "before_cursor_execute", pause)
sys.exit(main(argv))
"""


def ctrl_c(
    tmp_path: Path,
    pattern: str,
    *argv: str,
    skip: int = 0,
    check: Callable[[], object] | None = None,
    stop: signal.Signals = signal.SIGINT,
) -> None:
    """Runs ``argv`` in a child, sends it SIGINT while paused in a statement; expects one line and exit status 130.

    ``check`` runs while the child is paused: what must hold mid-command, for the interruption to test anything.
    With ``stop=signal.SIGTERM`` (``timeout``, systemd, Kubernetes), the line says "terminated" and the status is 143.
    """
    paused = tmp_path / "paused"
    child = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_COMMAND, str(paused), pattern, str(skip), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            if paused.exists() or child.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert paused.exists(), f"the command never reached its statement: {child.communicate(timeout=10)}"
        assert check is None or check(), "paused too early: nothing under way to interrupt"
        child.send_signal(stop)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    said = ("interrupted", 130) if stop == signal.SIGINT else ("terminated", 143)
    assert (child.returncode, out, err) == (said[1], "", f"autogen-reliability: error: {said[0]}\n")


# Ctrl-C the moment the command loads SQLAlchemy, as reading ``--project`` (or ``--tag``, or a demo's database URL)
# does: a real SIGINT, sent by the import itself.
_CTRL_C_AT_IMPORT: Final = """
import os, signal, sys
from autogen_reliability._cli import main
signal.signal(signal.SIGINT, signal.default_int_handler)  # a child of a background job starts with SIGINT ignored
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, CtrlC())
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ("sqlalchemy", "report", "--project", PROJECT),
        ("sqlalchemy", "sessions", "--project", PROJECT),
        ("alembic", "db", "current", "--url", "sqlite:///{ledger}"),
        ("autogen_reliability._demo", "demo", "--db", "sqlite:///{ledger}"),
    ],
    ids=["report", "sessions", "db", "demo"],
)
def test_ctrl_c_while_the_command_loads_is_one_line_and_130(argv: tuple[str, ...], tmp_path: Path) -> None:
    # It was Python's traceback through argparse and the import, and a death by SIGINT.
    args = [arg.format(ledger=tmp_path / "usage.db") for arg in argv]
    done = subprocess.run(
        [sys.executable, "-c", _CTRL_C_AT_IMPORT, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "autogen-reliability: error: interrupted\n")
    assert not (tmp_path / "usage.db").exists()


# The same, from the start: the command as a user starts it (``python -m autogen_reliability``, or the script
# pip installs, which calls the entry point pyproject.toml names), Ctrl-C before its main() runs.
_CTRL_C_AT_START: Final = """
import importlib, os, runpy, signal, sys, tomllib
signal.signal(signal.SIGINT, signal.default_int_handler)
pyproject, started_as, module, *argv = sys.argv[1:]
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == module:
            os.kill(os.getpid(), signal.SIGINT)
sys.meta_path.insert(0, CtrlC())
sys.argv = ["autogen-reliability", *argv]
if started_as == "python -m":
    runpy.run_module("autogen_reliability", run_name="__main__", alter_sys=True)
with open(pyproject, "rb") as file:
    entry = tomllib.load(file)["project"]["scripts"]["autogen-reliability"]
name, function = entry.split(":")
sys.exit(getattr(importlib.import_module(name), function)())
"""


@pytest.mark.parametrize("started_as", ["python -m", "script"])
@pytest.mark.parametrize("module", ["pydantic", "openai"])
def test_ctrl_c_in_the_first_seconds_of_the_demo_is_one_line_and_130(
    started_as: str, module: str, tmp_path: Path
) -> None:
    # The command's module loads pydantic, AutoGen and the openai SDK before main() runs (a second or two of a
    # demo of four): Ctrl-C then was a traceback of 40 lines through the imports, and a death by SIGINT.
    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    ledger = tmp_path / "usage.db"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _CTRL_C_AT_START,
            str(pyproject),
            started_as,
            module,
            "demo",
            "--db",
            f"sqlite:///{ledger}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "autogen-reliability: error: interrupted\n")
    assert not ledger.exists()


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_db_upgrade_exits_130_with_one_line_and_changes_nothing(
    tmp_path: Path, stop: signal.Signals
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    _migrate.upgrade(url, "0004")
    ctrl_c(tmp_path, r"\s*(CREATE|ALTER|DROP)", "db", "upgrade", "--url", url, stop=stop)
    assert _migrate.current_revision(url) == "0004"  # rolled back


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_export_leaves_no_file_behind(tmp_path: Path, stop: signal.Signals) -> None:
    # SIGTERM (`timeout 60 autogen-reliability export ...`, a Kubernetes job past its deadline) killed the command
    # where it was, leaving the hidden .out.jsonl.*.part file behind, as large as the rows written so far.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url) as store:
        store.write(sample_events())
    out = tmp_path / "out.jsonl"

    def partial() -> list[Path]:
        return list(tmp_path.glob(".out.jsonl.*.part"))

    ctrl_c(tmp_path, r"\s*SELECT .*FROM ar_usage_records", "export", "--project", PROJECT, "--out", str(out),
           "--db", url, check=partial, stop=stop)  # fmt: skip
    assert not out.exists()
    assert partial() == []


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_during_cleanup_keeps_the_batches_it_committed(tmp_path: Path, stop: signal.Signals) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    old = datetime.now(UTC) - timedelta(days=100)
    with UsageStore(url) as store:
        store.write([event(old + timedelta(seconds=i)) for i in range(20)])
    # Paused in the second batch's delete: the first batch of 5 went, the second is rolled back.
    ctrl_c(tmp_path, r"\s*DELETE FROM ar_usage_records", "cleanup", "--older-than", "30d", "--batch-size", "5",
           "--db", url, skip=1, stop=stop)  # fmt: skip
    with UsageStore(url) as store:
        assert store.count() == 15


def test_the_ledger_defaults_to_the_configured_one(ledger: tuple[str, list[UsageEvent]], tmp_path: Path) -> None:
    url, _ = ledger
    done = run_cli("sessions", "--project", PROJECT, "--format", "json", env={ENV_DB_URL: url})
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)[0]["session"] == "ticket-1"
    # Without the variable: autogen_reliability.db in the working directory, which is not there here.
    done = run_cli("sessions", "--project", PROJECT, cwd=tmp_path)
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 1, "no usage ledger at autogen_reliability.db")
    assert not (tmp_path / "autogen_reliability.db").exists()
    done = run_cli("sessions", "--project", PROJECT, env={ENV_DB_URL: "mysql://app:s3cret@db/usage"})
    assert_one_line_error(done.returncode, done.stdout, done.stderr, 2, f"bad database URL (from {ENV_DB_URL}): ")
    assert "s3cret" not in done.stderr


def test_bad_arguments_from_the_command_exit_2_with_one_line(tmp_path: Path) -> None:
    for args in (
        ("sessions", "--project", "p", "--since", "last tuesday"),
        ("cleanup", "--older-than", "0d"),
        ("export", "--project", "p", "--out", str(tmp_path / "missing" / "x.jsonl")),
        ("sessions", "--project", "p", "--since", "2025-05-02", "--until", "2025-05-01"),
    ):
        done = run_cli(*args)
        assert_one_line_error(done.returncode, done.stdout, done.stderr, 2)


def test_a_reader_that_goes_away_ends_the_command_quietly(ledger: tuple[str, list[UsageEvent]]) -> None:
    url, _ = ledger
    command = [sys.executable, "-m", "autogen_reliability", "sessions", "--project", PROJECT, "--db", url]
    reader, writer = os.pipe()
    os.close(reader)  # `... | head` that has already gone
    done = subprocess.run(command, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    os.close(writer)
    assert done.returncode == 1
    assert done.stderr == ""


# Each command's line on standard output after its work: the path --out wrote, what cleanup removed, ...
LINE_COMMANDS = {
    "report --out": ("report", "--format", "json", "--out", "{tmp}/report.json"),
    "report --out, table": ("report", "--out", "{tmp}/report.txt"),
    "export": ("export", "--project", PROJECT, "--out", "{tmp}/usage.jsonl"),
    "cleanup": ("cleanup", "--older-than", "90d", "--dry-run"),
    "sessions, none": ("sessions", "--project", "nobody"),
    "db current": ("db", "current", "--url"),
    "db upgrade": ("db", "upgrade", "--url"),
}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device every write to fails")
@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command", LINE_COMMANDS)
def test_a_line_to_a_standard_output_that_cannot_be_written_is_one_error(
    command: str, buffered: bool, tmp_path: Path
) -> None:
    # The line was printed outside the check the report's own output has: buffered, Python's flush at exit
    # failed ("Exception ignored ... OSError", status 120); unbuffered, the print raised a traceback.
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    with UsageStore(url) as store:
        store.write(sample_events())
    args = [part.format(tmp=tmp_path) for part in LINE_COMMANDS[command]]
    if "--db" not in args and args[-1] != "--url":
        args.append("--db")
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONUNBUFFERED", ENV_DB_URL)}
    if not buffered:
        environment["PYTHONUNBUFFERED"] = "1"
    run = [sys.executable, "-m", "autogen_reliability", *args, url]
    with Path("/dev/full").open("w") as full:
        done = subprocess.run(
            run, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=environment
        )
    assert_one_line_error(done.returncode, "", done.stderr, 1, "cannot write to standard output: No space left")
    reader, writer = os.pipe()
    os.close(reader)  # `... | head` that has already gone: quietly
    done = subprocess.run(
        run, stdout=writer, stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=environment
    )
    os.close(writer)
    assert (done.returncode, done.stderr) == (1, "")
    # Started with no standard output at all (`>&-`, a daemon's closed descriptors): Python's sys.stdout is
    # None, and writing the line was an AttributeError's traceback.
    done = subprocess.run(
        run,
        preexec_fn=lambda: os.close(1),  # in the child, before it runs
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )
    assert_one_line_error(done.returncode, "", done.stderr, 1, "cannot write to standard output: it is closed")


def test_times_and_durations_of_the_command_line() -> None:
    assert parse_time("2025-05-01") == datetime(2025, 5, 1, tzinfo=UTC)
    assert parse_time(" 2025-05-01T09:30:00+02:00 ") == datetime(2025, 5, 1, 7, 30, tzinfo=UTC)
    assert parse_time("2025-05-01T09:30Z") == datetime(2025, 5, 1, 9, 30, tzinfo=UTC)
    assert parse_time("2025-05-01T09:30:00.250-05:00") == datetime(2025, 5, 1, 14, 30, 0, 250_000, tzinfo=UTC)
    assert parse_time("7d") == timedelta(days=7)
    assert parse_time("24h") == timedelta(hours=24)
    assert parse_time("2w") == parse_duration("14d") == timedelta(weeks=2)
    for bad in ("", "7", "d", "7 days", "-7d", "1.5d", "7m", "7D", "tomorrow", "2025-05-01T09:30"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_time(bad)
    for bad in ("0d", "0h", "2025-05-01", "90", "-1w"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
