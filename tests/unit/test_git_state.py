"""``ed_common.git_state``: the commit and the dirty flag recorded in manifests and benchmark results."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ed_common.git_state import git_dirty, git_sha


def _git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "HOME": str(repo),
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def test_sha_and_dirty_follow_the_work_tree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-qm", "one")
    assert git_sha(repo) == _git(repo, "rev-parse", "HEAD").strip()
    assert git_dirty(repo) is False
    (repo / "new.txt").write_text("untracked files do not count\n")
    assert git_dirty(repo) is False
    (repo / "a.py").write_text("x = 2\n")
    assert git_dirty(repo) is True


def test_outside_a_checkout_both_are_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stop git's upward search at tmp_path (the temp dir could sit inside some checkout), and set what a git
    # hook sets: the helpers must describe `cwd`, not the repository of the calling git command.
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.setenv("GIT_DIR", str(Path(__file__).resolve().parents[2] / ".git"))
    assert git_sha(tmp_path) is None and git_dirty(tmp_path) is None
