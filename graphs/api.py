"""The Python API: what the ``emodir`` commands do, as functions (README, "Python API").

Each function takes the settings as a ``Settings``, a plain dict of setting names, or keyword overrides, and
plain dicts and strings where a user would pass them (emotions by name, render options as a dict). The agent
functions need an OpenAI-compatible LLM server (the embedded one is started when none is configured, as the
CLI does); the render functions import torch only when called.

    from graphs.api import rewrite, generate
    rewrite("a birthday cake on a table", "fear")["final_prompt"]
    generate("an old dog in the snow", "contentment", n=2, render={"steps": 4})["images"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ed_common.emotions import Emotion, parse_emotion
from ed_common.render_contract import RenderOptions, checked
from ed_common.settings import Settings, load_settings

__all__ = ["generate", "load_bank", "load_renderer", "make_settings", "rewrite", "run_suite"]

SettingsLike = Settings | Mapping[str, Any] | None


def make_settings(settings: SettingsLike = None, **overrides: Any) -> Settings:
    """Settings as the CLI reads them (env, config file, defaults), updated by a dict and keywords.

    Raises:
        InvalidInputError: an unknown setting or a bad value (the message names it and what is allowed).
    """
    if isinstance(settings, Settings):
        values = {**settings.model_dump(exclude_unset=True), **overrides}
    else:
        values = {**dict(settings or {}), **overrides}
    return load_settings(**values)


def _context(
    settings: Settings, *, renderer: Any = None, need_llm: bool = True, autostart: bool = True
) -> Any:
    from ed_agents.context import build_context
    from ed_agents.llm_endpoint import ensure_llm

    if need_llm:
        ensure_llm(settings, autostart=autostart and settings.autostart)
    return build_context(settings, renderer=renderer)


def _run(context: Any, payload: dict[str, Any], render: bool) -> dict[str, Any]:
    from graphs.runner import state_to_json, stream_rewrite

    final: dict[str, Any] = {}
    for node, update in stream_rewrite(context, payload):  # type: ignore[arg-type]
        if node == "__final__":
            final = update
    return state_to_json(final, render=render)


def rewrite(
    prompt: str,
    emotion: str | Emotion,
    *,
    personas: Sequence[str] | None = None,
    settings: SettingsLike = None,
    autostart: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """MC-Agent's rewrite of ``prompt`` for ``emotion``: the JSON view ``emodir rewrite --json`` prints.

    Keys include ``final_prompt``, ``negative_prompt``, ``anchors``, ``persona_reactions``, ``concepts``,
    ``warnings`` and ``trace`` (every fallback is there).
    """
    s = make_settings(settings, **overrides)
    payload = {"user_prompt": prompt, "target_emotion": parse_emotion(emotion), "personas": personas}
    return _run(_context(s, autostart=autostart), payload, render=False)


def load_renderer(settings: SettingsLike = None, **overrides: Any) -> Any:
    """The MC-Diffusion renderer of the settings' preset (``preset="tiny"``, ``"world"``, ``"sd15"``, ...).

    Loaded once per process; ``renderer.render({...})`` takes a dict of ``RenderRequest`` fields, and
    ``renderer.emotion`` is the diffusers-native ``EmotionPipeline`` (``.pipe`` the stock pipeline).
    """
    from graphs.renderer import build_renderer

    return build_renderer(make_settings(settings, **overrides))


def generate(
    prompt: str,
    emotion: str | Emotion,
    *,
    n: int = 4,
    agents: bool = True,
    render: RenderOptions | Mapping[str, Any] | None = None,
    personas: Sequence[str] | None = None,
    settings: SettingsLike = None,
    autostart: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Rewrite (unless ``agents=False``) and render ``n`` images: what ``emodir generate --json`` prints.

    ``render`` holds ``RenderOptions`` fields (``steps``, ``vp_scale``, ``negative_vp``, ``out_dir``, ...);
    the result's ``images`` are PNG paths in ``run_dir``, with a ``manifest``.
    """
    s = make_settings(settings, **overrides)
    options = render if isinstance(render, RenderOptions) else checked(RenderOptions, **dict(render or {}))
    options = checked(
        RenderOptions, **{"seed": s.seed, **options.model_dump(exclude_unset=True), "n_images": n}
    )
    target = parse_emotion(emotion)
    context = _context(s, renderer=load_renderer(s), need_llm=agents, autostart=autostart)
    payload = {
        "user_prompt": prompt,
        "target_emotion": target,
        "personas": personas,
        "agents": agents,
        "render": options,
    }
    return _run(context, payload, render=True)


def load_bank(path: str | Path) -> Any:
    """A visual-prompt bank file (``emodir bank build``) as a ``VisualPromptBank``."""
    from ed_diffusion.bank import VisualPromptBank

    return VisualPromptBank.load(path)


def run_suite(
    suite: str | Path,
    out: str | Path,
    *,
    concurrency: int = 4,
    resume: bool = False,
    preset: str | None = None,
    agents_only: bool = False,
) -> dict[str, Any]:
    """``emodir eval run`` in this process: a suite file or a shipped suite's name into ``out``.

    Settings come from the suite's ``settings:``, then the environment and config file, as for the command.
    Returns the run's ``summary.json``.

    Raises:
        EmodirError: the run failed or was refused (its one-line reason was printed to stderr).
    """
    import json

    from cli import main
    from ed_common.errors import EmodirError

    argv = ["eval", "run", str(suite), "--out", str(out), "--concurrency", str(concurrency)]
    argv += ["--resume"] * resume + ["--agents-only"] * agents_only
    argv += ["--preset", preset] if preset else []
    code = main(argv)
    summary = Path(out) / "summary.json"
    if code != 0 or not summary.is_file():
        raise EmodirError(f"eval run of {suite} exited {code}; its reason is printed above (see {out})")
    return dict(json.loads(summary.read_text()))
