from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli import app, main
from ed_agents.anchors import missing_anchors
from ed_agents.testing.fake_openai_server import FakeOpenAIServer

runner = CliRunner()


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_cli_version_and_help_on_every_group() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("emodir ")
    for group in ([], ["prompts"], ["llm"], ["rewrite"], ["chat"], ["llm", "serve"], ["prompts", "show"]):
        result = runner.invoke(app, [*group, "--help"])
        assert result.exit_code == 0, (group, result.output)
        assert "Usage" in result.output


def test_cli_prompts_check_list_show() -> None:
    result = runner.invoke(app, ["prompts", "check"])
    assert result.exit_code == 0 and "0 error(s)" in result.output
    result = runner.invoke(app, ["prompts", "list"])
    assert result.exit_code == 0 and "war_photographer" in result.output and "consensus" in result.output
    result = runner.invoke(
        app, ["prompts", "show", "tasks/understand", "--var", "emotion=awe", "--var", "user_prompt=a red fox"]
    )
    assert result.exit_code == 0 and "CONTENT" in result.output and "a red fox" in result.output
    assert "worked example" in result.output and "red kites" in result.output


def test_cli_prompts_check_fails_on_an_invalid_persona(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "personas").mkdir()
    (tmp_path / "personas" / "bad.md").write_text(
        "---\nid: bad\nkind: persona\nversion: 0\ndescription: d\n---\nhi\n"
    )
    monkeypatch.setenv("EMODIR_PROMPTS_DIR", str(tmp_path))
    result = runner.invoke(app, ["prompts", "check"])
    assert result.exit_code == 1 and "version" in result.output
    line = _one_line_error(capsys, ["rewrite", "a dog", "-e", "fear", "--no-autostart", "--personas", "bad"])
    assert "bad.md" in line and "version" in line


def test_cli_rewrite_json_against_an_openai_compatible_server(
    monkeypatch: pytest.MonkeyPatch, fake_server: FakeOpenAIServer
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    result = runner.invoke(
        app,
        [
            "rewrite",
            "an angry dog in the rain",
            "--emotion",
            "Sadness",
            "--personas",
            "child,zen_gardener,war_photographer",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("anchors", "persona_reactions", "concepts", "final_prompt", "negative_prompt", "trace"):
        assert key in data
    assert data["target_emotion"] == "sadness"
    assert sorted(r["persona_id"] for r in data["persona_reactions"]) == [
        "child",
        "war_photographer",
        "zen_gardener",
    ]
    assert not missing_anchors(data["final_prompt"], data["anchors"])
    assert {t["prompt_id"] for t in data["trace"] if t["prompt_id"]} >= {"understand", "consensus"}
    body = fake_server.requests[0]
    assert body["response_format"]["type"] == "json_schema"  # structured outputs requested from the server


def test_cli_rewrite_panels(monkeypatch: pytest.MonkeyPatch, fake_server: FakeOpenAIServer) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    result = runner.invoke(app, ["rewrite", "a lighthouse", "-e", "awe", "--seed", "1"])
    assert result.exit_code == 0, result.output
    for title in ("understand", "persona:", "chain of concept", "final prompt"):
        assert title in result.output


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["rewrite", "a dog", "-e", "joy"], "unknown emotion 'joy'; allowed: amusement"),
        (["rewrite", "  ", "-e", "fear", "--no-autostart"], "the prompt is empty"),
        (
            ["rewrite", " ".join(["castle"] * 80), "-e", "fear", "--no-autostart"],
            "80 CLIP tokens; the limit is 60",
        ),
        (
            ["rewrite", "a dog", "-e", "fear", "--personas", "pirate", "--no-autostart"],
            "unknown persona 'pirate'",
        ),
        (["rewrite", "a dog", "-e", "fear", "--n-personas", "0"], "setting n_personas=0"),
    ],
)
def test_cli_bad_input_is_one_line(
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
    fake_server: FakeOpenAIServer,
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    assert needle in _one_line_error(capsys, argv)


def test_cli_server_down_is_one_line_naming_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMODIR_LLM_PORT", "9")  # nothing listens on the discard port
    line = _one_line_error(capsys, ["rewrite", "a dog", "-e", "fear", "--no-autostart"])
    assert "http://127.0.0.1:9/v1" in line and "emodir llm serve" in line
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    line = _one_line_error(capsys, ["rewrite", "a dog", "-e", "fear"])  # configured URL: never autostarted
    assert "http://127.0.0.1:9/v1" in line


def test_cli_debug_shows_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_DEBUG", "1")
    from ed_agents.errors import EmodirError

    with pytest.raises(EmodirError):
        main(["rewrite", "a dog", "-e", "joy"])


def test_cli_autostarts_embedded_server_with_progress(
    monkeypatch: pytest.MonkeyPatch, fake_server: FakeOpenAIServer
) -> None:
    import ed_agents.server_process as server_process

    calls: list[Any] = []

    def fake_serve(cfg: Any, *, detach: bool, on_progress: Any = None) -> Any:
        calls.append((cfg, detach))
        return type("S", (), {"base_url": fake_server.base_url})()

    served = iter([None])
    monkeypatch.setattr(server_process, "served_models", lambda url, timeout=2.0: next(served, ["smollm2"]))
    monkeypatch.setattr(server_process, "serve", fake_serve)
    monkeypatch.setenv("EMODIR_LLM_PORT", str(fake_server.port))
    result = runner.invoke(app, ["rewrite", "a dog", "-e", "fear", "--json"])
    assert result.exit_code == 0, result.output
    ((cfg, detach),) = calls
    assert detach and cfg.host == "127.0.0.1" and cfg.port == fake_server.port


def test_cli_server_without_the_model_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(model="other-model") as server:
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        line = _one_line_error(capsys, ["rewrite", "a dog", "-e", "fear"])
    assert "does not serve model 'smollm2'" in line and "other-model" in line
