"""`emodir rewrite|generate|chat`: where MC-Agent and MC-Diffusion meet on the command line.

Plain functions; ``cli.py`` registers them as top-level commands.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.prompt import Prompt
from rich.table import Table

from ed_agents.chat_commands import COMMANDS, parse_command
from ed_common.cli_io import err, out, settings_of
from ed_common.emotions import EMOTION_NAMES, Emotion, parse_emotion
from ed_common.errors import EmodirError, InvalidInputError, OutputExistsError
from ed_common.paths import check_writable
from ed_common.render_contract import MAX_IMAGES, RenderOptions, checked
from ed_common.settings import Settings
from ed_common.text import esc


def _personas_option(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    ids = tuple(p.strip() for p in value.split(",") if p.strip())
    if not ids:
        raise InvalidInputError(f"--personas {value!r} names no persona; give ids separated by commas")
    if len(set(ids)) < len(ids):
        raise InvalidInputError(f"--personas {value!r} repeats an id; give each persona once")
    return ids


def _agent_context(
    settings: Settings,
    autostart: bool,
    request: tuple[str, Emotion, tuple[str, ...] | None] | None = None,
    renderer_factory: Any = None,
    more_requests: Sequence[tuple[str, Emotion]] = (),
    need_llm: bool = True,
) -> Any:
    """Validate the cheap things first (prompt files, the request), then make sure an LLM answers."""
    from ed_agents.clip_tokens import default_counter
    from ed_agents.context import build_context
    from ed_agents.llm_endpoint import ensure_llm
    from ed_agents.prompts import PromptLibrary
    from ed_agents.validation import check_request, select_personas

    prompts = PromptLibrary.load(settings.prompts_dir)
    tokens = default_counter()
    if request is not None:
        user_prompt, emotion, personas = request
        check_request(user_prompt, emotion, tokens, settings.max_prompt_tokens)
        select_personas(prompts.ids("persona"), personas, settings.n_personas, settings.seed)
    for user_prompt, emotion in more_requests:  # every line of a --prompts file, before any work
        check_request(user_prompt, emotion, tokens, settings.max_prompt_tokens)
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
        read = update.get("model_prompt")
        console.print(
            Panel(
                (f"[dim]the model read:[/] {esc(read)}\n" if read else "")
                + "\n".join(esc(p) for p in images)
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
    settings = settings_of(ctx, seed=seed, n_personas=n_personas, personas=persona_ids)
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


def generate(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Argument(help="Content prompt, e.g. 'an angry dog' (or --prompts FILE).")
    ] = None,
    emotion: Annotated[
        str | None,
        typer.Option(
            "--emotion", "-e", help=f"One of: {', '.join(EMOTION_NAMES)} (a --prompts line may name its own)."
        ),
    ] = None,
    prompts_file: Annotated[
        Path | None,
        typer.Option(
            "--prompts",
            help="A file of requests, one per line: JSONL {prompt, emotion} or CSV with a header; one run "
            "directory each (under --out if given).",
        ),
    ] = None,
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
    from graphs.prompt_list import read_prompt_list

    if (prompt is None) == (prompts_file is None):
        raise typer.BadParameter("give a PROMPT or --prompts FILE (one of the two)")
    default = parse_emotion(emotion) if emotion is not None else None
    if prompts_file is None:
        if default is None:
            raise typer.BadParameter("--emotion is required with a PROMPT", param_hint="'--emotion' / '-e'")
        requests = [(str(prompt), default)]
    else:
        requests = [(line.prompt, line.emotion) for line in read_prompt_list(prompts_file, default)]
    settings = settings_of(
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
    if settings.device:  # checked now, not after the agents' minute of work
        from ed_diffusion.pipeline import pick_device

        pick_device(settings.device)
    if settings.diffusion_model:
        from ed_diffusion.model_source import check_diffusers_model

        check_diffusers_model(settings.diffusion_model, "--model")
    for flag, value in (("--bank", settings.bank), ("--adapter", settings.adapter)):
        if value and not Path(value).expanduser().is_file():
            raise InvalidInputError(f"{flag} {value!r} is not a file")
    options = checked(
        RenderOptions,
        n_images=n,
        seed=settings.seed,
        steps=steps,
        vp_scale=vp_scale,
        negative_vp=negative_vp,
        out_dir=str(out_dir) if out_dir and prompts_file is None else None,
    )
    first_prompt, first_emotion = requests[0]
    context = _agent_context(
        settings,
        settings.autostart and not no_autostart,
        (first_prompt, first_emotion, settings.personas),
        renderer_factory=lambda: _renderer(settings),
        need_llm=not no_agents,
        more_requests=requests[1:],
    )
    for i, (user_prompt, target) in enumerate(requests):
        line_options = options
        if prompts_file is not None and out_dir is not None:  # one run directory per line, under --out
            slug = "-".join(re.findall(r"[a-z0-9]+", user_prompt.lower()))[:40] or "prompt"
            line_options = options.model_copy(
                update={"out_dir": str(out_dir / f"{i:03d}-{target.value}-{slug}")}
            )
        if len(requests) > 1 and not as_json:
            out.rule(f"{i + 1}/{len(requests)}: {esc(user_prompt)} ({target.value})")
        payload = {
            "user_prompt": user_prompt,
            "target_emotion": target,
            "personas": list(settings.personas or []) or None,
            "agents": not no_agents,
            "render": line_options,
        }
        final = _stream(context, payload, as_json)
        if as_json:
            from graphs.runner import state_to_json

            sys.stdout.write(json.dumps(state_to_json(final, render=True), ensure_ascii=False) + "\n")
            sys.stdout.flush()


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

    settings = settings_of(ctx, personas=_personas_option(personas))
    if list_sessions:
        names = stored_sessions(settings.sessions_db)
        out.print(esc("\n".join(names)) if names else "no saved sessions")
        return
    if emotion is not None:
        parse_emotion(emotion)
    # Name and lock first: a bad name or a session open elsewhere fails before the server is started.
    with (
        session_lock(settings.sessions_db, check_session_name(session)),
        open_checkpointer(settings.sessions_db) as saver,  # a damaged store fails here, before the server
    ):
        context = _agent_context(settings, autostart=settings.autostart and not no_autostart)
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
                line.encode("utf-8")
            except UnicodeEncodeError:  # bytes the terminal's locale could not decode
                out.print("[red]error:[/] that line is not valid UTF-8; type it again")
                continue
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
        if not arg.strip().isdigit() and arg.strip():
            raise InvalidInputError(f"/render {arg!r}: give a number of images, e.g. /render 4")
        n = int(arg) if arg.strip() else 4
        if not 1 <= n <= MAX_IMAGES:
            raise InvalidInputError(f"/render {n}: allowed 1..{MAX_IMAGES} images")
        if self.session.context.renderer is None:
            self.session.context = replace(self.session.context, renderer=_renderer(self.settings))
        # Checked: seed + n may pass the last seed.
        options = checked(RenderOptions, n_images=n, seed=self.settings.seed)
        self._run(self.session.render(options))

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
