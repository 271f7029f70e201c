"""`emodir world make|bench|check`: the synthetic affective world (registered in ``cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ed_common.cli_io import err, out, settings_of
from ed_common.errors import InvalidInputError
from ed_common.paths import check_writable
from ed_common.text import esc, short_repr

app = typer.Typer(
    no_args_is_help=True,
    help="The synthetic affective world: make a dataset, benchmark the trainers, check images.",
)


def _seeds_option(value: str | None) -> tuple[int, ...] | None:
    """``--seeds 0,1,2`` as a tuple, refused here (before any directory exists) unless each seed is usable."""
    from ed_diffusion.world_bench.bench import seeds_problem

    if value is None:
        return None
    try:
        seeds = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:  # also a number past Python's int-parsing digit limit
        raise InvalidInputError(
            f"--seeds {short_repr(value)} is not a list of integers; allowed: e.g. 0,1,2"
        ) from None
    if problem := seeds_problem(seeds):
        raise InvalidInputError(f"--seeds {short_repr(value)}: {problem}")
    return seeds


@app.command("make")
def world_make(
    out_dir: Annotated[Path, typer.Option("--out", help="New or empty directory for the world.")],
    train: Annotated[int, typer.Option(min=1, max=1_000_000, help="Train images (shortcut-biased).")] = 4000,
    test: Annotated[int, typer.Option(min=1, max=1_000_000, help="Test images (unusual pairs only).")] = 256,
    seed: Annotated[int, typer.Option(min=0, help="World seed: same arguments, same bytes.")] = 0,
    size: Annotated[int, typer.Option(min=24, max=256, help="Image side in pixels.")] = 32,
    shortcut: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Train probability of an emotion's typical content.")
    ] = 0.9,
) -> None:
    """Write a world as an emotion image-text dataset: PNGs, train.jsonl / test.jsonl ({image, caption,
    emotion, content}, what `bank build` and `train sft` read) and world.json."""
    from ed_diffusion.world.dataset import make_world

    check_writable(out_dir)
    with err.status(f"drawing {train + test} world images"):
        paths = make_world(out_dir, n_train=train, n_test=test, seed=seed, size=size, shortcut=shortcut)
    out.print(
        f"[green]done[/]: {train} train + {test} test images in {esc(str(paths.root))} "
        f"({esc(str(paths.train_jsonl))}, {esc(str(paths.test_jsonl))})"
    )


@app.command("bench")
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
    from ed_diffusion.world_bench.bench import (
        BenchConfig,
        check_bench_dir,
        install_as_world_preset,
        run_bench,
        steps_to_run,
    )
    from ed_diffusion.world_bench.report import markdown_table

    quiet_third_party()
    overrides: dict[str, Any] = {}
    if (parsed := _seeds_option(seeds)) is not None:
        overrides["seeds"] = parsed
    if workers is not None:
        overrides["workers"] = workers
    cfg = BenchConfig.quick(**overrides) if quick else BenchConfig.full(**overrides)
    check_writable(out_dir)
    check_bench_dir(out_dir)  # run_bench checks again; here it also precedes the progress bar
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        task = progress.add_task("world bench", total=steps_to_run(out_dir, cfg))
        results = run_bench(
            out_dir, cfg, progress=lambda n, what: progress.update(task, advance=n, description=esc(what))
        )
    out.print(markdown_table(results))  # what results.md holds
    out.print(f"[green]written[/] {esc(str(out_dir))}/results.json, results.md, samples.png")
    if install_preset and not quick:  # a --quick model is a smoke test, never the `world` preset
        target = settings_of(ctx).cache_dir / "world-preset"
        if install_as_world_preset(out_dir, results, target):
            out.print(f"installed the `world` preset in {esc(str(target))}")


@app.command("check")
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
