"""A file of prompts for ``emodir generate --prompts FILE``: one request per line, JSONL or CSV.

JSONL: ``{"prompt": "an old dog in the snow", "emotion": "fear"}`` per line. CSV: a header with ``prompt``
and (optionally) ``emotion`` columns. A line without an emotion takes ``--emotion``. Blank lines and lines
starting with ``#`` are skipped. Every line is checked before any work starts; a bad one is named by its
line number.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from ed_common.emotions import Emotion, parse_emotion
from ed_common.errors import InvalidInputError
from ed_common.text import short_repr
from ed_common.user_files import read_user_text

MAX_PROMPTS = 1000  # one run directory each: far more than an evening's renders on a GPU


@dataclass(frozen=True)
class PromptLine:
    """One request of the file."""

    line: int
    prompt: str
    emotion: Emotion


def _emotion(value: object, default: Emotion | None, where: str) -> Emotion:
    if value is None or value == "":
        if default is None:
            raise InvalidInputError(f"{where}: no emotion; give one on the line or --emotion")
        return default
    if not isinstance(value, str):
        raise InvalidInputError(f"{where}: emotion {short_repr(value)} is not a string")
    try:
        return parse_emotion(value)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{where}: {exc}") from None


def _prompt(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{where}: prompt {short_repr(value)} must be non-empty text")
    return value


def read_prompt_list(path: Path, default_emotion: Emotion | None) -> list[PromptLine]:
    """The requests of ``path`` (``.csv`` by suffix, else JSONL).

    Raises:
        InvalidInputError: unreadable file, bad JSON or CSV, a missing prompt or emotion, an unknown emotion,
            no requests or more than ``MAX_PROMPTS``; each named by file and line.
    """
    text = read_user_text(path, "--prompts file")
    lines = _read_csv(path, text, default_emotion) if path.suffix.lower() == ".csv" else []
    if path.suffix.lower() != ".csv":
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{where}: not JSON ({exc.msg}); one object per line") from None
            if not isinstance(row, dict):
                raise InvalidInputError(
                    f'{where}: a line is an object like {{"prompt": ..., "emotion": ...}}'
                )
            unknown = set(row) - {"prompt", "emotion"}
            if unknown:
                raise InvalidInputError(
                    f"{where}: unknown key {sorted(unknown)[0]!r}; allowed: prompt, emotion"
                )
            lines.append(
                PromptLine(
                    number,
                    _prompt(row.get("prompt"), where),
                    _emotion(row.get("emotion"), default_emotion, where),
                )
            )
    if not lines:
        raise InvalidInputError(f"--prompts file {path} holds no prompts")
    if len(lines) > MAX_PROMPTS:
        raise InvalidInputError(
            f"--prompts file {path} holds {len(lines)} prompts; allowed: at most {MAX_PROMPTS}"
        )
    return lines


def _read_csv(path: Path, text: str, default_emotion: Emotion | None) -> list[PromptLine]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in reader.fieldnames or []]
    if "prompt" not in fields:
        raise InvalidInputError(f"{path}: the first line must be a header with a 'prompt' column")
    extra = set(fields) - {"prompt", "emotion"}
    if extra:
        raise InvalidInputError(f"{path}: unknown column {sorted(extra)[0]!r}; allowed: prompt, emotion")
    reader.fieldnames = fields
    out = []
    try:
        for row in reader:
            number = reader.line_num
            if None in row:  # more fields than the header names
                raise InvalidInputError(
                    f"{path}:{number}: more fields than the header's columns (prompt, emotion)"
                )
            prompt = row.get("prompt")
            if (prompt or "").lstrip().startswith("#") or not any((v or "").strip() for v in row.values()):
                continue
            where = f"{path}:{number}"
            out.append(
                PromptLine(
                    number, _prompt(prompt, where), _emotion(row.get("emotion"), default_emotion, where)
                )
            )
    except csv.Error as exc:
        raise InvalidInputError(f"{path}:{reader.line_num}: bad CSV ({exc})") from None
    return out
