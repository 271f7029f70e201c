"""`emodir bank build|show`: emotion visual-prompt banks (registered in ``cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ed_common.cli_io import err, out, settings_of
from ed_common.text import esc

app = typer.Typer(no_args_is_help=True, help="Build and inspect emotion visual-prompt banks.")


@app.command("build")
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

    from ed_diffusion.bank_build import prepare_bank_build
    from ed_diffusion.emotion_datasets import LoadSummary
    from ed_diffusion.logs import quiet_third_party

    def report_skipped(summary: LoadSummary) -> None:
        if summary.num_skipped:
            err.print(f"[yellow]skipped {summary.num_skipped} bad row(s):[/] {esc(str(summary.skipped))}")

    quiet_third_party()
    build = prepare_bank_build(
        data,
        out_path,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_kind=image_kind,
        clusters=clusters,
        seed=seed,
        device=device,
        cache_dir=settings_of(ctx).cache_dir,
        on_loaded=report_skipped,
    )
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("encoding", total=len(build.samples))
        bank = build.run(progress=lambda done, total: progress.update(task, completed=done, total=total))
    out.print(
        f"[green]bank written[/] {esc(str(out_path))}: {len(build.samples)} samples, L={clusters}, "
        f"d_v={bank.d_v}"
    )


@app.command("show")
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
