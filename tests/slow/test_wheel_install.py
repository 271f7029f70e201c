"""A built wheel, installed in a fresh venv outside the checkout, runs the main commands (issue #14).

This is what a `pip install emotion-director` user gets: no checkout, no Makefile, no editable paths. The
commands run in a folder outside the repository against the fake OpenAI server, so nothing may be found
through the working directory or the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from ed_common.settings import REPO_ROOT

pytestmark = pytest.mark.slow

INSTALL_TIMEOUT_S = 1200


def _base_python() -> str:
    # The fresh venv must not inherit this venv's packages: build it from the interpreter this one came from.
    return getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable


def _run(
    cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (outside the checkout) with the wheel built from this checkout and its diffusion extra."""
    root = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMODIR_", "VIRTUAL_ENV", "PYTHON"))}
    # Built from a copy: setuptools keeps build/ between builds (stale modules could reach the wheel), and a
    # test never writes into the checkout.
    src = root / "src"
    shutil.copytree(
        REPO_ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv*",
            "build",
            "dist",
            "runs",
            "__pycache__",
            "*.egg-info",
            ".*_cache",
            ".langgraph_api",
        ),
    )
    wheels = root / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(src),
        ],
        cwd=root,
        env=env,
    )
    (wheel,) = wheels.glob("emotion_director-*.whl")
    venv = root / "venv"
    _run([_base_python(), "-m", "venv", str(venv)], cwd=root, env=env)
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[diffusion]"],
        cwd=root,
        env=env,
        timeout=INSTALL_TIMEOUT_S,
    )
    return venv


def _env(tmp_path: Path, venv: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMODIR_", "VIRTUAL_ENV", "PYTHON"))}
    return (
        env
        | {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "COLUMNS": "200",
            "EMODIR_DATA_DIR": str(tmp_path / "data"),
            "EMODIR_CACHE_DIR": str(tmp_path / "cache"),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "EMODIR_AUTOSTART": "false",
        }
        | extra
    )


def test_the_wheel_holds_the_data_and_no_checkout_paths(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = (
        "import json, ed_common.bundled as b, ed_common.settings as s, ed_agents.clip_tokens as c;"
        "st = s.load_settings();"
        "print(json.dumps({'checkout': b.is_source_checkout(), 'prompts': str(st.prompts_dir),"
        " 'server': str(st.server_python), 'suites': b.suite_names(), 'vocab': str(c.default_vocab_path()),"
        " 'tokens': c.default_counter().count('a cat on a mat')}))"
    )
    result = _run([str(installed / "bin" / "python"), "-c", code], cwd=work, env=_env(tmp_path, installed))
    info = json.loads(result.stdout)
    assert info["checkout"] is False
    for key in ("prompts", "server", "vocab"):
        assert not Path(info[key]).is_relative_to(REPO_ROOT), (key, info[key])
    assert Path(info["prompts"]).is_relative_to(installed)
    assert Path(info["server"]).is_relative_to(tmp_path / "data")  # the user's data dir, not the package's
    assert {"smoke", "counter-stereotype"} <= set(info["suites"])
    assert info["tokens"] == 5


def test_rewrite_generate_and_eval_run_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    emodir = str(installed / "bin" / "emodir")
    with FakeOpenAIServer() as server:
        env = _env(tmp_path, installed, EMODIR_LLM_BASE_URL=server.base_url)
        rewrite = _run(
            [emodir, "rewrite", "a birthday cake on a table", "--emotion", "fear"], cwd=work, env=env
        )
        assert "birthday cake" in rewrite.stdout

        gen = work / "gen"
        _run(
            [
                emodir,
                "generate",
                "a red apple",
                "-e",
                "contentment",
                "--no-agents",
                "--n",
                "1",
                "--steps",
                "2",
                "--out",
                str(gen),
            ],
            cwd=work,
            env=env,
        )
        assert len(list(gen.glob("*.png"))) >= 1 and (gen / "manifest.json").is_file()

        runs = work / "smoke"
        _run([emodir, "eval", "run", "smoke", "--out", str(runs)], cwd=work, env=env, timeout=900)
    assert (runs / "samples.jsonl").is_file() and (runs / "manifest.json").is_file()
    records = [json.loads(line) for line in (runs / "samples.jsonl").read_text().splitlines() if line]
    assert len(records) == 20 and all(r["status"] == "ok" for r in records)
