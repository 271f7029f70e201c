"""Family: servers that answer nonsense, a damaged server record, and two chats on one session.

A server that answers HTTP 200 with something that is not a chat completion is named in one line (not a
traceback from inside the openai client); a damaged state file is reported, never guessed at; a session open
in one `emodir chat` is refused to a second one, before either talks to the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli import main
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import load_settings
from graphs.session import SessionBusyError, check_session_name, session_lock
from tests.cli_helpers import one_line
from tests.conftest import cli_env


def _completion(**changes: Any) -> bytes:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "created": 0, "model": "smollm2"}
    return json.dumps(body | changes).encode()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "text/html"),
        (b"\x00\x01garbage{{", "application/json"),
        (b"", "application/json"),
        (b"[1, 2]", "application/json"),
        (_completion(choices=[]), "application/json"),
        (_completion(), "application/json"),
    ],
    ids=["html", "garbage", "empty-body", "a-list", "empty-choices", "no-choices"],
)
def test_a_server_answering_200_with_no_completion_isone_line(
    body: bytes, content_type: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(raw_reply=(body, content_type)) as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("EMODIR_LLM_MAX_RETRIES", "1")
        monkeypatch.setenv("EMODIR_LLM_BACKOFF_S", "0")
        assert main(["rewrite", "a dog", "-e", "fear", "--no-autostart"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err + captured.out
    # Retries are logged as warnings; then one error line names the server.
    assert all(line.startswith("WARNING") for line in lines[:-1]), lines
    assert f"the LLM server at {server.base_url} answered with something that is not an OpenAI" in lines[-1]


# ------------------------------------------------------------------------------------ the state file
@pytest.fixture
def state_file(tmp_path: Path) -> Path:
    settings = load_settings(data_dir=tmp_path / "data")
    path = settings.server_state_dir / "server.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.mark.parametrize("damage", ["{torn", "[1, 2]", '{"pid": "one"}', "\x00\x00"])
def test_a_damaged_state_file_is_reported_while_a_server_answers(
    state_file: Path, damage: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file.write_text(damage)
    with FakeOpenAIServer() as server:
        monkeypatch.setenv("EMODIR_LLM_PORT", str(server.port))
        assert main(["llm", "status"]) == 0
        shown = capsys.readouterr().out
        assert "server: unknown" in shown and str(state_file) in shown and "someone's server answers" in shown
        line = one_line(capsys, ["llm", "stop"])
        assert "which process to stop is unknown" in line
    assert state_file.read_text() == damage  # kept: it may be all that says whose server it is


def test_a_damaged_state_file_with_nothing_answering_is_cleared_by_stop(
    state_file: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state_file.write_text("{torn")
    monkeypatch.setenv("EMODIR_LLM_PORT", "9")
    assert main(["llm", "status"]) == 1
    assert "nothing answers" in capsys.readouterr().out
    assert main(["llm", "stop"]) == 0
    assert "no server was running" in capsys.readouterr().out and not state_file.exists()


# ------------------------------------------------------------------------------------------ sessions
@pytest.mark.parametrize("name", ["", "a/b", "../x", "x" * 65, "x" * 100_000, "a b", "-x", "a\x1b[2Jb"])
def test_a_session_name_out_of_bounds_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="session name") as info:
        check_session_name(name)
    assert len(str(info.value)) < 300 and "\x1b" not in str(info.value)


@pytest.mark.parametrize("name", ["default", "my-session.2", "x" * 64, "été"])
def test_ordinary_session_names_are_fine(name: str) -> None:
    assert check_session_name(name) == name


@pytest.fixture
def other_chat(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A second process holding session "s" of a sessions database, as an open `emodir chat` does."""
    db = tmp_path / "data" / "sessions.sqlite"
    code = (
        "import sys, time; from pathlib import Path; from graphs.session import session_lock\n"
        f"with session_lock(Path({str(db)!r}), 's'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield db, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_session_open_in_another_process_is_refused(other_chat: tuple[Path, int]) -> None:
    db, pid = other_chat
    with (
        pytest.raises(SessionBusyError, match=rf"session 's' is open in another `emodir chat` \(pid {pid}\)"),
        session_lock(db, "s"),
    ):
        pass
    with session_lock(db, "t"):  # another session of the same database is free
        pass


def test_the_lock_is_released_when_its_holder_dies(other_chat: tuple[Path, int]) -> None:
    db, pid = other_chat
    subprocess.run(["kill", "-9", str(pid)], check=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            with session_lock(db, "s"):
                break
        except SessionBusyError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_chat_on_a_busy_session_fails_before_the_server(
    other_chat: tuple[Path, int], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _db, pid = other_chat
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # nothing there: must not be reached
    line = one_line(capsys, ["chat", "--session", "s", "--no-autostart"])
    assert f"(pid {pid})" in line
    line = one_line(capsys, ["chat", "--session", "x" * 100_000, "--no-autostart"])
    assert "session name" in line and len(line) < 300


def test_a_damaged_session_store_is_named(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = load_settings(data_dir=tmp_path / "data").sessions_db
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database" * 100)
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    for argv in (["chat", "--list"], ["chat", "--session", "s", "--no-autostart"]):
        line = one_line(capsys, argv)
        assert f"the session store {db} cannot be used" in line and "move it aside" in line


@pytest.mark.parametrize("command", ["chat", "rewrite"])
def test_a_persona_named_twice_is_refused_by_every_command(capsys: Any, command: str) -> None:
    argv = [command, "--personas", "child,child", "--no-autostart"]
    argv += ["-e", "fear"] if command == "chat" else ["a dog", "-e", "fear"]
    assert "--personas 'child,child' repeats an id" in one_line(capsys, argv)


def test_chat_survives_a_line_that_is_not_utf8(tmp_path: Path, fake_server: FakeOpenAIServer) -> None:
    env = cli_env(EMODIR_LLM_BASE_URL=fake_server.base_url, EMODIR_DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "cli", "chat", "--session", "u", "-e", "fear"],
        input=b"\xff\xfe bad bytes\n/quit\n",
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    out = result.stdout.decode("utf-8", "replace")
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")[-1500:]
    assert "not valid UTF-8" in out and "session saved" in out
