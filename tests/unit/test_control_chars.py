"""Family: control characters never reach the terminal, an image prompt or the stored state."""

from __future__ import annotations

from typing import Any

import pytest

from cli import main
from ed_agents.clip_tokens import default_counter
from ed_agents.errors import InvalidInputError
from ed_agents.state import PersonaReply
from ed_agents.validation import check_request
from ed_common.text import esc, strip_control

TERMINAL_ATTACKS = ["\x1b]0;pwned\x07", "\x1b[2J", "\x9b31m", "a\u202eevil", "zero\u200bwidth", "\x00"]


@pytest.mark.parametrize("attack", TERMINAL_ATTACKS)
def test_printing_removes_control_characters(attack: str) -> None:
    shown = esc(f"a dog {attack} [bold]x[/bold]")
    assert strip_control(shown) == shown and "\x1b" not in shown and "\x07" not in shown
    assert "\\[bold]" in shown  # rich markup still escaped


def test_tabs_and_newlines_are_layout_not_control() -> None:
    assert strip_control("a\tdog\nin snow") == "a\tdog\nin snow"


@pytest.mark.parametrize("attack", TERMINAL_ATTACKS)
def test_a_prompt_with_control_characters_is_refused_in_one_line(attack: str) -> None:
    with pytest.raises(InvalidInputError, match="control character") as info:
        check_request(f"a dog {attack}", "fear", default_counter(), 60)
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_llm_text_loses_its_control_characters() -> None:
    reply = PersonaReply.model_validate(
        {"feeling_trigger": "\x1b[31mred\x1b[0m", "what_i_see": ["fog\x07"], "strongest_image": "a\u202elamp"}
    )
    assert (reply.feeling_trigger, reply.what_i_see, reply.strongest_image) == (
        "[31mred[0m",
        ["fog"],
        "alamp",
    )


def test_the_cli_refuses_such_a_prompt_without_printing_it_raw(capsys: Any) -> None:
    assert main(["rewrite", "a dog \x1b]0;pwned\x07", "-e", "fear", "--no-autostart"]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.err + captured.out and "control character" in captured.err
