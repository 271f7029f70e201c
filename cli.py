"""`emodir`: the command line of Emotion-Director (argument plumbing and rich output only)."""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler

from ed_agents import cli_llm, cli_prompts
from ed_agents.errors import EmodirError
from ed_common.cli_io import err, out
from ed_common.git_state import package_version
from ed_common.text import esc
from ed_diffusion import cli_bank, cli_train, cli_world
from evals.cli_eval import eval_app
from evals.cli_pairs import pairs_app
from graphs import cli_agent

app = typer.Typer(
    rich_markup_mode="rich",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Emotion-Director: images that [bold]feel[/] an emotion, not just show its usual objects.",
)
for name, group in (
    ("prompts", cli_prompts.app),
    ("llm", cli_llm.app),
    ("bank", cli_bank.app),
    ("train", cli_train.app),
    ("world", cli_world.app),
    ("eval", eval_app),
    ("pairs", pairs_app),
):
    app.add_typer(group, name=name)
for command in (cli_agent.rewrite, cli_agent.generate, cli_agent.chat):
    app.command()(command)


def _version_callback(value: bool) -> None:
    if value:
        out.print(f"emodir {package_version()}")
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
    except typer.Abort:  # Ctrl-C (click turns KeyboardInterrupt into Abort)
        err.print("interrupted: what was finished is kept (runs: with a manifest saying so)")
        return 130
    except Exception as exc:  # click usage errors arrive here in non-standalone mode
        if isinstance(exc, _click_errors()):
            exc.show()  # type: ignore[attr-defined]  # typer's usage line and the one-line reason
            return int(exc.exit_code)  # type: ignore[attr-defined]  # 2 for usage errors
        raise
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
