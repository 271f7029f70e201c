"""Running `emodir` in-process and asserting what a user sees on a failure."""

from __future__ import annotations

from typing import Any

from cli import main


def one_line(capsys: Any, argv: list[str], code: int = 1) -> str:
    """Run ``emodir argv``; assert exit ``code``, exactly one line on stderr and no traceback; return it."""
    assert main(argv) == code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]
