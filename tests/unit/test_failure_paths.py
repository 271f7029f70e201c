"""Family: output paths and filesystem faults. Checked before the work, one line when they happen anyway."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

import pytest

from ed_common.errors import InvalidInputError
from ed_common.paths import check_writable
from tests.cli_helpers import one_line


def test_a_new_directory_under_a_writable_one_is_fine(tmp_path: Path) -> None:
    check_writable(tmp_path / "new" / "deeper")
    check_writable(tmp_path / "file.md", directory=False)


@pytest.mark.parametrize(
    ("make", "directory", "message"),
    [
        (lambda t: (t / "f").write_text("x") and t / "f" / "run", True, "is a file, not a directory"),
        (lambda t: (t / "f").write_text("x") and t / "f", True, "is a file; give a directory path"),
        (lambda t: (t / "d").mkdir() or t / "d", False, "is a directory; give a file path"),
        (lambda t: Path("/proc/emodir-run"), True, "/proc is not writable"),
    ],
)
def test_an_output_that_cannot_be_written_is_refused_inone_line(
    tmp_path: Path, make: Any, directory: bool, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        check_writable(make(tmp_path), directory=directory)
    assert "\n" not in str(info.value)


def test_a_full_disk_is_refused_before_the_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))  # type: ignore[attr-defined]
    with pytest.raises(InvalidInputError, match="no space left"):
        check_writable(tmp_path / "run")


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "a dog", "-e", "fear", "--no-agents", "--out", "/proc/emodir-run"],
        ["world", "bench", "--quick", "--out", "/proc/emodir-bench"],
        ["eval", "run", "evals/suites/smoke.yaml", "--out", "/proc/emodir-eval"],
    ],
)
def test_commands_refuse_an_unwritable_out_before_any_work(argv: list[str], capsys: Any) -> None:
    assert "/proc is not writable" in one_line(capsys, argv)


def test_eval_report_never_replaces_a_file_without_overwrite(tmp_path: Path, capsys: Any) -> None:
    precious = tmp_path / "samples.md"
    precious.write_text("mine")
    line = one_line(capsys, ["eval", "report", str(tmp_path), "--out", str(precious)])
    assert "already exists; pass --overwrite" in line and precious.read_text() == "mine"
    line = one_line(capsys, ["eval", "report", str(tmp_path), "--out", str(tmp_path / "cmp.txt")])
    assert "allowed a .md (Markdown) or .html file" in line
    precious_page = tmp_path / "cmp.html"
    precious_page.write_text("mine too")
    line = one_line(capsys, ["eval", "report", str(tmp_path), "--out", str(precious_page)])
    assert "already exists; pass --overwrite" in line and precious_page.read_text() == "mine too"


def test_an_os_error_during_the_work_is_one_line_with_its_path(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    import cli

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/img0.png")

    monkeypatch.setattr(cli, "app", fail)
    line = one_line(capsys, ["generate", "x"])
    assert "No space left on device (/data/run/img0.png)" in line


def test_an_argument_that_is_not_utf8_is_a_usage_error(capsys: Any) -> None:
    bad = b"a dog \xff".decode("utf-8", "surrogateescape")
    assert "argument 2" in one_line(capsys, ["rewrite", bad, "-e", "fear"], code=2)
