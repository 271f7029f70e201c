"""Usage errors on every `emodir` command: one line with typer's usage, exit 2, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer

from cli import app, main


def _leaf_commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


COMMANDS = sorted(_leaf_commands(typer.main.get_command(app)))


def test_the_cli_has_the_commands_we_document() -> None:
    assert {("generate",), ("rewrite",), ("eval", "run"), ("train", "sft"), ("world", "bench")} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_rejects_an_unknown_flag_with_exit_2(command: tuple[str, ...], capsys: Any) -> None:
    code = main([*command, "--no-such-flag"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "No such option: --no-such-flag" in err and "Usage:" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["rewrite", "a dog"], "Missing option '--emotion'"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["generate", "a dog", "-e", "fear", "--n", "abc"], "Invalid value for '--n'"),
        (["generate", "a dog"], "--emotion is required with a PROMPT"),
        (["generate", "-e", "fear"], "give a PROMPT or --prompts FILE"),
        (["generate", "a dog", "-e", "fear", "--prompts", "p.jsonl"], "give a PROMPT or --prompts FILE"),
        (["eval", "run"], "Missing argument"),
        (["train", "sft"], "Missing argument"),
    ],
)
def test_usage_errors_exit_2_with_one_reason(argv: list[str], message: str, capsys: Any) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
