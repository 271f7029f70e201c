"""Where the files shipped with Emotion-Director live: persona and task prompts, eval suites, the LLM env.

A source checkout (or an editable install) reads them from the checkout; a wheel carries copies inside its
packages (``pyproject.toml``: ``prompts/`` becomes ``ed_common/bundled_prompts``, ``evals/suites`` is package
data). Nothing here depends on the working directory, so ``pip install .`` works from anywhere.
"""

from __future__ import annotations

from pathlib import Path

# The directory that holds the top-level packages: the checkout, or site-packages for a wheel.
PACKAGES_ROOT = Path(__file__).resolve().parents[1]


def is_source_checkout() -> bool:
    """True when running from a checkout (an editable install counts), not from an installed wheel."""
    return (PACKAGES_ROOT / "pyproject.toml").is_file() and (PACKAGES_ROOT / "prompts").is_dir()


def prompts_dir() -> Path:
    """The shipped persona and task prompt files."""
    if is_source_checkout():
        return PACKAGES_ROOT / "prompts"
    return Path(__file__).resolve().parent / "bundled_prompts"


def suites_dir() -> Path:
    """The shipped eval suites (``evals/suites``; the same place in a checkout and in a wheel)."""
    return PACKAGES_ROOT / "evals" / "suites"


def bundled_suite(name: str) -> Path | None:
    """The shipped suite called ``name`` (``smoke`` -> ``evals/suites/smoke.yaml``), or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = suites_dir() / f"{name.removesuffix('.yaml')}.yaml"
    return path if path.is_file() else None


def suite_names() -> list[str]:
    """Names of the shipped suites, sorted."""
    return sorted(p.stem for p in suites_dir().glob("*.yaml"))


def default_server_env(data_dir: Path) -> Path:
    """The LLM server's own virtual environment (vLLM; never the app's).

    In a checkout it is ``.venv-vllm`` beside the code (``make setup`` builds it); an installed package has
    no writable folder of its own, so there it is ``<data_dir>/venv-vllm`` (``emodir llm setup`` builds it).
    """
    if is_source_checkout():
        return PACKAGES_ROOT / ".venv-vllm"
    return data_dir / "venv-vllm"
