"""`emodir train sft|dpo`: the emotion adapter's trainers (registered in ``cli.py``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from ed_common.cli_io import err, out, settings_of
from ed_common.errors import EmodirError, InvalidInputError
from ed_common.paths import check_writable
from ed_common.text import esc

_SET_HELP = "KEY=VALUE replacing the config's value (repeatable), e.g. --set max_steps=100 --set data=a.jsonl"
app = typer.Typer(no_args_is_help=True, help="Train the emotion adapter: SFT, then DPO with a negative VP.")


def _train(ctx: typer.Context, config: Path, kind: str, resume: bool, sets: list[str] | None) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.training.config import DPOTrainConfig, SFTTrainConfig, load_config, parse_overrides
    from ed_diffusion.training.loop import FINAL_ADAPTER, check_inputs, train

    quiet_third_party()
    cls = SFTTrainConfig if kind == "sft" else DPOTrainConfig
    try:
        overrides = parse_overrides(sets or [], cls)
    except InvalidInputError as exc:  # a usage error: the flag, not the file
        raise typer.BadParameter(str(exc), param_hint="--set") from None
    cfg = load_config(config, cls, overrides)
    check_writable(Path(cfg.output_dir), flag="output_dir")
    settings = settings_of(ctx)
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
    # Under torchrun / accelerate launch every process runs this; rank 0 alone shows progress and the result.
    main = os.environ.get("RANK", "0") == "0"
    with Progress(*columns, console=err, disable=not main) as progress:
        task = progress.add_task(f"train {kind}", total=cfg.max_steps, info="")

        def on_step(step: int, total: int, row: dict[str, float]) -> None:
            acc = next((v for k, v in row.items() if k.endswith("implicit_acc")), None)
            info = f"loss {row['loss']:.4f}" + (f"  acc {acc:.2f}" if acc is not None else "")
            progress.update(task, completed=step, total=total, info=info)

        result = train(cfg, cache_dir=settings.cache_dir, resume=resume, progress=on_step)
    if main:
        final = result.output_dir / FINAL_ADAPTER
        adapter = f"adapter {esc(str(final))}; " if result.step >= cfg.max_steps and final.is_file() else ""
        out.print(
            f"[green]done[/] at step {result.step}; {adapter}checkpoint {esc(str(result.last_checkpoint))}; "
            f"metrics {esc(str(result.metrics_file))}"
        )


@app.command("sft")
def train_sft(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="TOML config (fields of SFTTrainConfig).")],
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore checkpoints in output_dir.")] = False,
    sets: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
) -> None:
    """Stage 1: supervised training of the emotion adapter (epsilon MSE with visual prompts)."""
    _train(ctx, config, "sft", not no_resume, sets)


@app.command("dpo")
def train_dpo(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="TOML config (fields of DPOTrainConfig).")],
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore checkpoints in output_dir.")] = False,
    sets: Annotated[list[str] | None, typer.Option("--set", help=_SET_HELP)] = None,
) -> None:
    """Stage 2: DPO with a negative visual prompt (optionally image-pair DPO and SFT terms)."""
    _train(ctx, config, "dpo", not no_resume, sets)


@app.command("config")
def train_config(
    kind: Annotated[str, typer.Argument(help="sft or dpo.")],
    example: Annotated[
        str | None, typer.Option(help="Print a shipped example instead: tiny, world, sd15 or sdxl.")
    ] = None,
) -> None:
    """Print a commented default config (every key with its help) and where the shipped examples are."""
    from ed_diffusion.training.config import EXAMPLES_DIR, DPOTrainConfig, SFTTrainConfig, commented_config

    classes = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig}
    if kind not in classes:
        raise typer.BadParameter(f"{kind!r}: allowed sft or dpo", param_hint="KIND")
    if example is not None:
        names = sorted(p.stem.removeprefix(f"{kind}-") for p in EXAMPLES_DIR.glob(f"{kind}-*.toml"))
        if example not in names:
            raise typer.BadParameter(f"{example!r}: allowed {', '.join(names)}", param_hint="--example")
        text = (EXAMPLES_DIR / f"{kind}-{example}.toml").read_text(encoding="utf-8")
        out.print(text, end="", markup=False, highlight=False)
        return
    out.print(commented_config(classes[kind]), end="", markup=False, highlight=False)
    examples = sorted(p.name for p in EXAMPLES_DIR.glob(f"{kind}-*.toml"))
    out.print(f"# Examples: {', '.join(examples)} in {EXAMPLES_DIR}", markup=False, highlight=False)
