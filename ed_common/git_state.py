"""Which code produced a result: the git commit and whether the work tree had uncommitted changes.

Manifests and benchmark results record both, so a number measured on an edited checkout is not mistaken for
the commit's (``git_dirty`` is None outside a git checkout, e.g. an installed wheel).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


# Set by git hooks and by callers inside another repository's operation: they would make every command below
# describe that repository instead of the one at ``cwd``.
_REPO_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")


def _git(*args: str, cwd: str | os.PathLike[str]) -> str | None:
    env = {k: v for k, v in os.environ.items() if k not in _REPO_ENV}
    try:
        out = subprocess.run(
            # --no-optional-locks: `git status` would otherwise refresh the index under index.lock and race
            # with the user's own git commands (every generate run and eval start calls this).
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_sha(cwd: str | os.PathLike[str] = REPO_ROOT) -> str | None:
    """The checked-out commit, or None outside a git checkout."""
    out = _git("rev-parse", "HEAD", cwd=cwd)
    return out.strip() or None if out is not None else None


def git_dirty(cwd: str | os.PathLike[str] = REPO_ROOT) -> bool | None:
    """Whether tracked files differ from the commit (untracked files ignored), or None outside a checkout."""
    out = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return bool(out.strip()) if out is not None else None


def package_version() -> str:
    """The installed emotion-director version ("0+unknown" when run from a tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("emotion-director")
    except PackageNotFoundError:
        return "0+unknown"
