"""`emodir bank build|show`: emotion visual-prompt banks (registered in ``cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ed_common.cli_io import err, out, settings_of
from ed_common.errors import InvalidInputError
from ed_common.paths import check_writable
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

    from ed_diffusion.bank import build_bank, check_cluster_sizes
    from ed_diffusion.data import load_emotion_dataset
    from ed_diffusion.encoders import FeatureEncoders, ensure_tiny_encoders_dir
    from ed_diffusion.images import OutputExistsError
    from ed_diffusion.logs import quiet_third_party
    from ed_diffusion.pipeline import pick_device

    quiet_third_party()
    # Every option is checked before the dataset is read or an encoder loaded (minutes on a real EmoSet).
    dev = pick_device(device)
    if clusters < 1:
        raise InvalidInputError(f"--clusters {clusters}; allowed: an integer >= 1")
    if image_kind is not None and image_kind not in ("clip", "dino"):
        raise InvalidInputError(f"--image-kind {image_kind!r} is unknown; allowed: clip, dino")
    if out_path.exists():
        raise OutputExistsError(f"{out_path} already exists; refusing to overwrite it")
    check_writable(out_path, directory=False)
    samples, summary = load_emotion_dataset(data)
    if summary.num_skipped:
        err.print(f"[yellow]skipped {summary.num_skipped} bad row(s):[/] {esc(str(summary.skipped))}")
    check_cluster_sizes(samples, clusters)  # before the encoders load (build_bank checks it too)
    if text_encoder == "tiny" or image_encoder == "tiny":
        tiny = ensure_tiny_encoders_dir(settings_of(ctx).cache_dir / "tiny-encoders")
        text_encoder = str(tiny / "text") if text_encoder == "tiny" else text_encoder
        image_encoder = str(tiny / "image") if image_encoder == "tiny" else image_encoder
    kind = image_kind or ("dino" if "dino" in image_encoder.lower() else "clip")
    encoders = FeatureEncoders.from_pretrained(
        text_encoder, image_encoder, kind="dino" if kind == "dino" else "clip", device=dev
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
