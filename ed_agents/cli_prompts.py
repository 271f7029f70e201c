"""`emodir prompts check|list|show`: the prompt files people share and edit (registered in ``cli.py``)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from ed_common.cli_io import out, settings_of
from ed_common.errors import InvalidInputError
from ed_common.text import esc

app = typer.Typer(no_args_is_help=True, help="Check, list and show persona/task prompt files.")


@app.command("check")
def prompts_check(ctx: typer.Context) -> None:
    """Validate every prompt file; list all problems with file and line."""
    from ed_agents.prompts import check_prompt_dir

    settings = settings_of(ctx)
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


@app.command("list")
def prompts_list(ctx: typer.Context) -> None:
    """List personas and tasks with version, hash and description."""
    from ed_agents.prompts import PromptLibrary

    lib = PromptLibrary.load(settings_of(ctx).prompts_dir)
    table = Table("id", "kind", "version", "sha256", "description")
    for f in lib:
        table.add_row(f.id, f.meta.kind, str(f.meta.version), f.sha256[:12], esc(f.meta.description))
    out.print(table)


@app.command("show")
def prompts_show(
    ctx: typer.Context,
    prompt_id: Annotated[str, typer.Argument(help="File id, e.g. child or tasks/consensus.")],
    var: Annotated[
        list[str] | None, typer.Option(help="Template variable as key=value (repeatable).")
    ] = None,
) -> None:
    """Render a prompt file (missing variables are shown as {{ name }})."""
    from ed_agents.prompts import PromptLibrary

    lib = PromptLibrary.load(settings_of(ctx).prompts_dir)
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
