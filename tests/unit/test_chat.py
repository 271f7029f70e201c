from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app
from ed_agents.chat_commands import ChatCommand, parse_command
from ed_agents.errors import InvalidInputError
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import REPO_ROOT
from graphs.session import ChatSession, list_sessions, open_checkpointer
from tests.conftest import cli_env
from tests.fakes.fake_chat import SchemaFakeChatModel


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("", None),
        ("   ", None),
        ("make it darker", ChatCommand("text", "make it darker")),
        ("/emotion  Fear ", ChatCommand("emotion", "Fear")),
        ("/personas child,zen_gardener", ChatCommand("personas", "child,zen_gardener")),
        ("/personas", ChatCommand("personas", "")),
        ("/SHOW", ChatCommand("show")),
        ("/history", ChatCommand("history")),
        ("/undo", ChatCommand("undo")),
        ("/new", ChatCommand("new")),
        ("/render", ChatCommand("render")),
        ("/render 2", ChatCommand("render", "2")),
        ("/exit", ChatCommand("quit")),
        ("/quit", ChatCommand("quit")),
    ],
)
def test_parse_command(line: str, expected: ChatCommand | None) -> None:
    assert parse_command(line) == expected


@pytest.mark.parametrize(
    ("line", "match"),
    [("/fly", "unknown command '/fly'; allowed: /emotion"), ("/emotion", "/emotion needs an argument")],
)
def test_parse_command_errors(line: str, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        parse_command(line)


def test_session_undo_walks_back_runs(tmp_path: Path, make_context: Any) -> None:
    chat = SchemaFakeChatModel(
        script={"RevisedPrompt": ['{"final_prompt": "a cat, fog"}', '{"final_prompt": "a cat, fog, night"}']}
    )
    with open_checkpointer(tmp_path / "s.sqlite") as saver:
        s = ChatSession(saver, make_context(chat), "t")
        list(s.new_prompt("a cat", "fear", ["child"]))  # type: ignore[arg-type]
        first = s.values["final_prompt"]
        list(s.steer("fog"))
        list(s.steer("night"))
        assert [h.final_prompt for h in s.history][1:] == ["a cat, fog", "a cat, fog, night"]
        assert s.undo() and s.values["final_prompt"] == "a cat, fog"
        assert s.undo() and s.values["final_prompt"] == first
        assert not s.undo()
        list(s.steer("rain"))  # steering continues from the restored state
        assert len(s.history) == 2
    assert list_sessions(tmp_path / "s.sqlite") == ["t"]


def _chat_process(base_url: str, data_dir: Path, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(
        EMODIR_LLM_BASE_URL=base_url, EMODIR_DATA_DIR=str(data_dir), XDG_CONFIG_HOME=str(data_dir / "config")
    )
    return subprocess.run(
        [sys.executable, "-m", "cli", "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
        check=False,
    )


def test_chat_session_resumes_in_a_second_process(tmp_path: Path, fake_server: FakeOpenAIServer) -> None:
    data = tmp_path / "data"
    first = _chat_process(
        fake_server.base_url,
        data,
        "an old lighthouse\n/emotion awe\nmore stars\n/quit\n",
        "--session",
        "trip",
        "--personas",
        "child,zen_gardener",
    )
    assert first.returncode == 0, first.stderr
    assert "set the emotion with /emotion" in first.stdout
    assert "final prompt" in first.stdout and "revised draft" in first.stdout
    second = _chat_process(fake_server.base_url, data, "/history\n/undo\n/show\n/quit\n", "--session", "trip")
    assert second.returncode == 0, second.stderr
    assert "resumed session trip (2 runs)" in second.stdout
    assert "more stars" in second.stdout  # the history table from the first process
    assert "undone" in second.stdout and "current (run 0)" in second.stdout
    listed = _chat_process(fake_server.base_url, data, "", "--list")
    assert listed.stdout.strip() == "trip"


def test_chat_reports_errors_and_keeps_going(
    monkeypatch: pytest.MonkeyPatch, fake_server: FakeOpenAIServer
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    result = CliRunner().invoke(
        app,
        ["chat", "--session", "x"],
        input="/emotion joy\n/fly\n/personas\n/personas pirate\na red fox\n/emotion fear\n"
        "more fog\n/show\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert "unknown emotion 'joy'" in result.output
    assert "unknown command '/fly'" in result.output
    assert "available: child" in result.output
    assert "unknown persona pirate" in result.output
    assert "a red fox" in result.output and "final prompt" in result.output
    assert "revised draft" in result.output
