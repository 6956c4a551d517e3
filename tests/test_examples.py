"""Every script in examples/ runs to completion without warnings, into a ledger of its own.

``examples/test_*.py`` are test files of the kind a user writes: pytest runs them, through the plugin
the installed package registers (the ``pytest11`` entry point), in a process of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import runpy
import signal
import subprocess
import sys
import urllib.request
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_core.models import ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient

from autogen_reliability import reliable, usage_scope
from autogen_reliability._config import ENV_DB_URL, ENV_SPOOL_DIR
from autogen_reliability.accounting import UsageRecorder
from autogen_reliability.storage import UsageStore
from autogen_reliability.testing import FakeOpenAIServer, FakeReply, FakeUsage

EXAMPLES_DIR = Path(__file__).parent.parent / "examples"
EXAMPLES = sorted(path for path in EXAMPLES_DIR.glob("*.py") if not path.name.startswith("test_"))
USER_TESTS = sorted(EXAMPLES_DIR.glob("test_*.py"))


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 2


def run_example(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No database URL from this environment: each example chooses its own ledger.
    env = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    env[ENV_SPOOL_DIR] = str(cwd / "spool")
    command: list[str | Path] = [sys.executable, script]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, cwd=cwd, env=env)


def ledger_of(script: Path, cwd: Path) -> Path:
    return cwd / f"{script.stem}.db"


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr
    assert done.stdout.strip()
    assert UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count() >= 1  # the run was accounted for


def test_examples_run_in_turn_do_not_mix_their_numbers(tmp_path: Path) -> None:
    counts: dict[str, int] = {}
    for script in EXAMPLES:
        assert run_example(script, tmp_path).returncode == 0
        counts[script.name] = UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count()
    # Each ledger still holds only its own example's rows once the others have run beside it.
    for script in EXAMPLES:
        assert UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").count() == counts[script.name]
    assert not (tmp_path / "autogen_reliability.db").exists()


def test_the_cost_example_prints_each_agents_numbers_exactly_as_the_ledger_holds_them(tmp_path: Path) -> None:
    # An example is copied: its money must be exact, not rounded to a micro-dollar by a format.
    script = EXAMPLES_DIR / "cost_last_week.py"
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}").events()
    assert {row.agent for row in rows} == {"triage", "writer"}
    for agent in {row.agent for row in rows}:
        mine = [row for row in rows if row.agent == agent]
        missed = [row for row in mine if row.outcome != "ok"]
        [line] = [line.split() for line in done.stdout.splitlines() if line.split()[:1] == [agent]]
        _, model, calls, attempts, misses, tokens, cost, missed_cost = line
        assert model == "gpt-4o-mini"
        assert int(calls) == len({row.call_id for row in mine}), line
        assert int(attempts) == len(mine), line
        assert int(misses) == len(missed), line
        assert int(tokens) == sum(row.prompt_tokens + row.completion_tokens for row in mine), line
        assert Decimal(cost.removeprefix("$")) * 10**9 == sum(row.cost_nanousd or 0 for row in mine), line
        assert Decimal(missed_cost.removeprefix("$")) * 10**9 == sum(row.cost_nanousd or 0 for row in missed), line
    # What the docstring says happened: the writer's 429 retried, the triage's first answer re-asked.
    assert sorted((row.agent, row.outcome, row.error_kind) for row in rows if row.outcome != "ok") == [
        ("triage", "invalid", None),
        ("writer", "error", "rate_limit"),
    ]


def test_the_quickstart_prints_each_attempt_with_the_call_and_attribution_of_its_row(tmp_path: Path) -> None:
    # The call it printed was the first 8 hex digits of a UUIDv7, a timestamp the same for every call of a
    # minute: no row could be found by it, and two calls printed the same.
    script = EXAMPLES_DIR / "quickstart.py"
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    pattern = r"^attempt (\d+) of call (\S+): (\w+), project=(\S+) session=(\S+) agent=(\S+), "
    shown = [match.groups() for match in re.finditer(pattern, done.stdout, flags=re.MULTILINE)]
    with UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}") as store:
        rows = store.events()
    assert shown == [
        (str(row.attempt), str(row.call_id), row.outcome, row.project, row.session, row.agent) for row in rows
    ]
    assert shown == [("1", shown[0][1], "ok", "acme-support", "ticket-4711", "writer")]
    assert done.stdout.splitlines()[-1] == "Your refund was issued today."


def test_the_cost_example_names_the_costliest_call_so_that_the_ledger_finds_it(tmp_path: Path) -> None:
    script = EXAMPLES_DIR / "cost_last_week.py"
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    with UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}") as store:
        rows = store.events()
        costs: dict[uuid.UUID, int] = {}
        for row in rows:
            costs[row.call_id] = costs.get(row.call_id, 0) + (row.cost_nanousd or 0)
        costliest = max(costs, key=costs.__getitem__)
        assert sorted(costs.values())[-2] < costs[costliest]  # one call costs the most: the triage's re-ask
        named = re.search(r"^Why: the most expensive call, (\S+), attempt by attempt:$", done.stdout, re.MULTILINE)
        assert named is not None
        assert named[1] == str(costliest)
        attempts = store.events(call_id=uuid.UUID(named[1]))
    listed = done.stdout[named.end() :].strip().splitlines()
    assert [line.split()[:3] for line in listed] == [[f"#{row.attempt}", row.agent, row.outcome] for row in attempts]
    assert [(row.agent, row.outcome) for row in attempts] == [("triage", "invalid"), ("triage", "ok")]


async def two_agents_one_priced(recorder: UsageRecorder) -> None:
    """A call of the writer on gpt-4o-mini, and one of the tuner on a model of its own, without a price."""
    usage = FakeUsage(prompt_tokens=900, completion_tokens=120)
    info = ModelInfo(vision=False, function_calling=True, json_output=True, family="unknown", structured_output=True)
    for model, agent in (("gpt-4o-mini", "writer"), ("acme-finetune-7b", "tuner")):
        async with FakeOpenAIServer(model=model, default=FakeReply.text("Done.", usage=usage)) as server:
            provider = OpenAIChatCompletionClient(
                model=model, api_key="sk-local", base_url=server.base_url, model_info=info
            )
            wrapped = reliable(AssistantAgent(agent, model_client=provider), project="acme-support", recorder=recorder)
            async with usage_scope(session="ticket-4711"):
                await wrapped.run(task="Reply to ticket 4711")
            await provider.close()


def test_the_cost_example_names_a_priced_call_the_costliest_on_either_database(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # PostgreSQL sorts NULL first in a descending order: the example's queries, copied onto a PostgreSQL ledger,
    # listed the unpriced agent first and named its call, whose cost is unknown, the most expensive.
    report = runpy.run_path(str(EXAMPLES_DIR / "cost_last_week.py"))["report"]
    with UsageStore(store_url) as store:
        recorder = UsageRecorder(store, spool_dir=tmp_path / "spool", close_sink=False)
        asyncio.run(two_agents_one_priced(recorder))
        recorder.close()
        [priced] = [row for row in store.events() if row.cost_nanousd is not None]
        report(store)
    out = capsys.readouterr().out
    agents = [line.split()[0] for line in out.splitlines() if line.split()[:1] in (["writer"], ["tuner"])]
    assert agents == ["writer", "tuner"], out  # the costliest agent first; the unpriced one after it
    why = f"Why: the most expensive call, {priced.call_id}, attempt by attempt:\n"
    assert why in out, out
    assert [line.split()[:2] for line in out.split(why)[1].splitlines()] == [["#1", "writer"]]


def test_there_is_a_user_test_file() -> None:
    assert [path.name for path in USER_TESTS] == ["test_my_agents.py"]


@pytest.mark.parametrize("test_file", USER_TESTS, ids=lambda path: path.name)
def test_a_user_test_file_passes_through_the_installed_plugin(test_file: Path, tmp_path: Path) -> None:
    # As a user runs it: their own directory and no configuration of ours (rootdir is tmp_path, so
    # neither our pyproject's pytest options nor tests/conftest.py apply); pytest finds the plugin
    # by its entry point.
    copy = tmp_path / test_file.name
    copy.write_text(test_file.read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    command: list[str | Path] = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={tmp_path / 'tmp'}",
        copy,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert not (tmp_path / "autogen_reliability.db").exists()  # the plugin's ledger is a throw-away one


def test_the_team_budget_example_stops_the_team_by_cost_and_the_budget_refuses_what_follows(tmp_path: Path) -> None:
    script = EXAMPLES_DIR / "team_budget.py"
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    # Each call costs $0.00015 (500 + 125 tokens of gpt-4o-mini): the third reaches the $0.0004 limit.
    speakers = [line.split(":", 1)[0] for line in lines if line.startswith(("writer: ", "critic: "))]
    assert speakers == ["writer", "critic", "writer"]
    # The alert came with the second call: $0.0003 is past half the limit (it read "$0.0003, 50% of $0.0004").
    alert = next(line for line in lines if line.startswith("budget alert: "))
    assert alert.endswith(" has spent $0.0003, past 50% of $0.0004")
    assert "stopped: Cost limit reached: $0.00045 of $0.0004" in lines
    refused = next(line for line in lines if line.startswith("refused: "))
    assert "$0.00045 spent of $0.0004 in all; no request was sent" in refused
    assert "spent $0.00045 of $0.0004; requests sent: 0" in lines
    ticket = refused.split("'")[1]
    assert f"ledger for {ticket}: 3 call(s), $0.00045" in lines
    # The ledger holds the three calls the team made and nothing for the refused one, exact to the nano-USD.
    with UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}") as store:
        rows = store.events(project="acme-support")
    assert [(row.agent, row.session, row.outcome) for row in rows] == [
        ("writer", ticket, "ok"),
        ("critic", ticket, "ok"),
        ("writer", ticket, "ok"),
    ]
    assert [row.cost_nanousd for row in rows] == [150_000] * 3
    assert "  writer: 2 call(s), $0.0003" in lines
    assert "  critic: 1 call(s), $0.00015" in lines


def test_the_service_example_shows_each_route_and_the_usage_report_as_the_ledger_holds_it(tmp_path: Path) -> None:
    script = EXAMPLES_DIR / "fastapi_app.py"
    done = run_example(script, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    with UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}") as store:
        [row] = store.events()  # the refused caller's request made no call
    # The caller's headers attribute the call: its project, the session the response names, its tags.
    asked = re.fullmatch(r"POST /ask -> 200 \{'answer': '(.+)'\} session=(\S+)", lines[0])
    assert asked is not None, lines[0]
    assert asked[1] == "Refunds reach your card within 5 working days."
    assert (row.project, row.session, row.agent, row.outcome) == ("acme-support", asked[2], "helper", "ok")
    assert row.tags == {"tier": "gold", "channel": "chat"}
    assert lines[1].startswith("POST /ask, unknown project -> 403 ")
    health = "GET /health?verbose=0 -> healthy {'openai': 'healthy', 'usage_store': 'healthy'}"
    assert lines[2:5] == ["GET /healthz -> 200", "GET /readyz -> 200", health]
    metric = lines[5].removeprefix("GET /metrics/ -> ")
    assert metric.startswith("autogen_reliability_attempts_total{")
    for label in ('agent="helper"', 'outcome="ok"', 'project="acme-support"'):
        assert label in metric, metric
    assert metric.endswith(" 1.0")
    assert lines[6] == "GET /usage/report without the token -> 401"
    assert row.cost_nanousd is not None
    assert (
        lines[7]
        == f"GET /usage/report -> 1 call(s), 1 attempt(s), ${Decimal(row.cost_nanousd).scaleb(-9).normalize():f}"
    )
    assert len(lines) == 8


def test_the_service_example_stores_its_rows_when_uvicorn_is_terminated(tmp_path: Path) -> None:
    # SIGTERM (docker stop, a Kubernetes pod ending): uvicorn shuts down, then raises the signal again with its
    # default handler, which ends the process without running atexit. The lifespan's shutdown writes the rows.
    script = EXAMPLES_DIR / "fastapi_app.py"
    env = {key: value for key, value in os.environ.items() if key != ENV_DB_URL}
    env[ENV_SPOOL_DIR] = str(tmp_path / "spool")
    with subprocess.Popen(
        [sys.executable, script, "--serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as service:
        try:
            assert service.stdout is not None
            serving = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+)\n", service.stdout.readline())
            assert serving is not None
            for _ in range(3):
                ask = urllib.request.Request(
                    f"{serving[1]}/ask",
                    data=json.dumps({"question": "Where is my refund?"}).encode(),
                    headers={"Content-Type": "application/json", "X-Project-ID": "acme-support"},
                )
                with urllib.request.urlopen(ask, timeout=60) as answered:
                    assert answered.status == 200
            service.send_signal(signal.SIGTERM)
            _, err = service.communicate(timeout=60)
        finally:
            service.kill()
    assert service.returncode == -signal.SIGTERM, err
    with UsageStore(f"sqlite:///{ledger_of(script, tmp_path)}") as store:
        assert [row.outcome for row in store.events()] == ["ok"] * 3


@pytest.mark.parametrize("module", ["httpx", "uvicorn", "fastapi", "prometheus_client"])
def test_the_service_example_without_its_extras_says_what_to_install(module: str, tmp_path: Path) -> None:
    # As in an environment with only `pip install autogen-reliability`: the module cannot be imported.
    script = EXAMPLES_DIR / "fastapi_app.py"
    hide = f"import runpy, sys; sys.modules[{module!r}] = None; runpy.run_path({str(script)!r}, run_name='__main__')"
    done = subprocess.run(
        [sys.executable, "-c", hide], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.endswith("This example needs: pip install 'autogen-reliability[fastapi,metrics]' uvicorn httpx")
    assert module in line or module.replace("_", "-") in line
