"""`emodir generate --prompts FILE`: the file's lines, checked before any work (graphs/prompt_list.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from graphs.prompt_list import MAX_PROMPTS, read_prompt_list


def _file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_jsonl_lines_with_and_without_an_emotion(tmp_path: Path) -> None:
    path = _file(
        tmp_path,
        "p.jsonl",
        '{"prompt": "an old dog", "emotion": "Fear"}\n\n# a comment\n{"prompt": "a red apple"}\n',
    )
    lines = read_prompt_list(path, Emotion.AWE)
    assert [(x.line, x.prompt, x.emotion) for x in lines] == [
        (1, "an old dog", Emotion.FEAR),
        (4, "a red apple", Emotion.AWE),
    ]


def test_csv_with_a_header(tmp_path: Path) -> None:
    path = _file(tmp_path, "p.csv", 'prompt,emotion\n"a cake, on a table",sadness\nan owl,\n')
    lines = read_prompt_list(path, Emotion.AWE)
    assert [(x.line, x.prompt, x.emotion.value) for x in lines] == [
        (2, "a cake, on a table", "sadness"),
        (3, "an owl", "awe"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("p.jsonl", '{"prompt": "a dog"}\n', "p.jsonl:1: no emotion"),
        ("p.jsonl", '{"prompt": "a dog", "emotion": "joy"}\n', "p.jsonl:1: unknown emotion 'joy'"),
        ("p.jsonl", '{"prompt": "a dog", "emotion": "fear"}\nnot json\n', "p.jsonl:2: not JSON"),
        ("p.jsonl", '["a dog", "fear"]\n', "p.jsonl:1: a line is an object"),
        ("p.jsonl", '{"prompt": "", "emotion": "fear"}\n', "p.jsonl:1: prompt '' must be non-empty"),
        ("p.jsonl", '{"prompt": "a", "emotion": "fear", "seed": 1}\n', "unknown key 'seed'"),
        ("p.jsonl", "\n# only comments\n", "holds no prompts"),
        ("p.csv", "text,emotion\na dog,fear\n", "header with a 'prompt' column"),
        ("p.csv", "prompt,mood\na dog,fear\n", "unknown column 'mood'"),
        ("p.csv", "prompt,emotion\na dog,rage\n", "p.csv:2: unknown emotion 'rage'"),
        ("p.csv", "prompt,emotion\n,fear,extra\n", "p.csv:2: more fields than the header"),
    ],
)
def test_bad_files_name_the_line(tmp_path: Path, name: str, text: str, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        read_prompt_list(_file(tmp_path, name, text), None)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_too_many_prompts_and_a_missing_file(tmp_path: Path) -> None:
    many = "".join(f'{{"prompt": "dog {i}", "emotion": "fear"}}\n' for i in range(MAX_PROMPTS + 1))
    with pytest.raises(InvalidInputError, match=f"at most {MAX_PROMPTS}"):
        read_prompt_list(_file(tmp_path, "many.jsonl", many), None)
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_prompt_list(tmp_path / "nope.jsonl", None)
