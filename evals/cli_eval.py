"""``emodir eval run|report``: argument plumbing and rich output; the work is in ``evals.runner``/``report``.

Registered in ``cli.py`` with ``app.add_typer(eval_app, name="eval")``. Errors are ``EmodirError``s, which
``cli.main`` prints as one line.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ed_agents.errors import EmodirError, InvalidInputError
from ed_common.atomic import write_text_atomic
from ed_common.paths import check_writable
from ed_common.settings import Settings, load_settings
from ed_common.text import esc
from evals.records import SampleRecord
from evals.report import load_run, run_differences
from evals.report_html import comparison_html
from evals.shards import (
    Shard,
    detect_shard,
    rank_device,
    read_records,
)
from evals.suite import Suite, load_suite, resolve_suite_path, run_identity
from evals.tables import TableData, build_tables, compare_tables, key_table, to_markdown

eval_app = typer.Typer(
    no_args_is_help=True, help="Evaluate systems on a suite: scripted graph runs, metrics and reports."
)
# The model a suite runs with, overridable on the command line (`eval run`, `pairs build`).
PresetOption = Annotated[str | None, typer.Option(help="Diffusion preset overriding the suite's.")]
BankOption = Annotated[
    str | None, typer.Option(help="Visual-prompt bank (.safetensors) overriding the preset's.")
]
AdapterOption = Annotated[
    str | None, typer.Option(help="Emotion adapter weights (.safetensors) overriding the preset's.")
]
out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def suite_settings(ctx: typer.Context, suite: Suite, suite_file: Path, **flags: Any) -> Settings:
    """The settings a suite runs under (``eval run``, ``pairs build``)."""
    # Flags > the suite's `settings:` > EMODIR_* env > TOML file > defaults: the suite is the experiment.
    config = (ctx.obj or {}).get("config")
    overrides = {**suite.settings, **{k: v for k, v in flags.items() if v is not None}}
    try:
        return load_settings(config, **overrides)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{suite_file}: {exc}") from None


def _out_dir(out: Path | None, settings: Settings, suite: Suite, shard: Shard) -> Path:
    if out is not None:
        return out
    if shard.world > 1:
        raise InvalidInputError(
            f"--out is required with {shard.world} processes (they must share one directory)"
        )
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return settings.runs_dir / f"eval-{suite.name}-{stamp}"


class EvalFailedError(EmodirError):
    """Too many samples of a run failed for its numbers to mean much."""


def _rich_table(t: TableData) -> Table:
    table = Table(*(esc(h) for h in t.header), title=esc(t.title))  # run labels are directory names
    for row in t.rows:
        table.add_row(*(esc(c) for c in row))
    return table


@eval_app.command("run")
def eval_run(
    ctx: typer.Context,
    suite_file: Annotated[
        Path,
        typer.Argument(help="Suite YAML, or a shipped suite's name: smoke, counter-stereotype, ..."),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (new or empty; default: a new one in runs/).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Samples in flight at once (threads).")] = 4,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Continue the run in --out: redo only missing and failed samples."),
    ] = False,
    preset: PresetOption = None,
    bank: BankOption = None,
    adapter: AdapterOption = None,
    no_autostart: Annotated[
        bool, typer.Option("--no-autostart", help="Never start the embedded LLM server.")
    ] = False,
    agents_only: Annotated[
        bool,
        typer.Option(
            "--agents-only", help="Render nothing: run the agents, score the prompts (images_per_prompt 0)."
        ),
    ] = False,
    max_failed: Annotated[
        float,
        typer.Option(help="Exit 1 when more than this share of the samples run here failed (0-1)."),
    ] = 0.1,
) -> None:
    """Run a suite (sharded across processes under torchrun / accelerate launch), then score and report."""
    from ed_agents.clip_tokens import default_counter
    from ed_agents.prompts import PromptLibrary
    from evals.manifest import run_manifest
    from evals.report import finalize_run
    from evals.runner import check_out_dir, run_suite
    from evals.systems import make_context_factory, needs_llm, validate_suite

    suite_file = resolve_suite_path(suite_file)
    suite = load_suite(suite_file)
    if agents_only:  # part of the run's identity, so a resume must say it again
        suite = suite.model_copy(update={"images_per_prompt": 0})
    settings = suite_settings(ctx, suite, suite_file, preset=preset, bank=bank, adapter=adapter)
    if concurrency < 1:
        raise InvalidInputError(f"--concurrency {concurrency}: allowed 1 or more")
    if not 0 <= max_failed <= 1:
        raise InvalidInputError(f"--max-failed {max_failed}: allowed a share from 0 to 1")
    shard = detect_shard()
    out = _out_dir(out, settings, suite, shard)
    check_writable(out)
    prompts = PromptLibrary.load(settings.prompts_dir)
    identity = run_identity(settings)  # the settings from flags, env and config decide samples too
    # Edited persona or task files change the samples as much as a setting does.
    identity["prompt_files"] = {f.id: f.sha256 for f in prompts}
    check_out_dir(out, suite, suite_file, shard, resume, identity)
    if resume and not out.exists():  # fine (a rerun of a failed start), but not what the user expected
        err_console.print(f"--resume: {esc(str(out))} does not exist; starting a new run", highlight=False)
    tokens = default_counter()
    validate_suite(suite, prompts, tokens, settings)
    if suite.image_scoring.enabled and suite.images_per_prompt:
        from evals.aggregate import image_scoring_config

        image_scoring_config(suite.image_scoring)  # its own validation, before hours of generation
    # Only after the cheap checks: starting a server or loading a diffusion model takes a while.
    if needs_llm(suite):
        from ed_agents.llm_endpoint import ensure_llm

        with err_console.status("checking the LLM server") as status:
            ensure_llm(settings, autostart=settings.autostart and not no_autostart, on_progress=status.update)
    renderer = suite_renderer(settings, shard) if suite.images_per_prompt else None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        label = esc(suite.name) + (f" \\[rank {shard.rank}/{shard.world}]" if shard.world > 1 else "")
        task = progress.add_task(label, total=None, failed=0)
        failed = 0
        lock = threading.Lock()

        def on_sample(record: SampleRecord) -> None:
            nonlocal failed
            with lock:
                failed += not record.ok
                progress.update(task, advance=1, failed=failed)

        try:
            outcome = run_suite(
                suite,
                out,
                context_factory=make_context_factory(settings, prompts=prompts, tokens=tokens),
                renderer=renderer,
                concurrency=concurrency,
                resume=resume,
                shard=shard,
                manifest=run_manifest(suite, suite_file, settings, prompts, renderer=renderer, shard=shard),
                identity=identity,
                suite_path=suite_file,
                on_sample=on_sample,
                on_start=lambda todo, owned: progress.update(task, total=todo),
            )
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: finished samples are saved; continue with "
                f"`emodir eval run {esc(str(suite_file))} --out {esc(str(out))} --resume`"
            )
            raise
    done = f"{outcome.ran} sample(s) run, {outcome.skipped} already done, {outcome.failed} failed"
    if not outcome.merged:
        out_console.print(
            f"{done}. This process's share is finished; the last process to finish writes the report "
            f"(or run `emodir eval report {esc(str(out))}`)."
        )
    else:
        records = read_records(out / "samples.jsonl")
        summary = finalize_run(out, suite, records)
        out_console.print(_rich_table(key_table(summary)))
        out_console.print(
            f"[green]done[/]: {done}. Report: {esc(str(out / 'report.html'))} (also report.md, summary.json)"
        )
    if outcome.ran and outcome.failed / outcome.ran > max_failed:
        errors = Counter(
            " ".join((r.error or "?").split())[:160] for r in read_records(out / "samples.jsonl") if not r.ok
        )
        common, count = errors.most_common(1)[0] if errors else ("?", 0)
        raise EvalFailedError(
            f"{outcome.failed} of {outcome.ran} samples failed (over --max-failed {max_failed:g}); "
            f"most often ({count}x): {common}; see {out / 'samples.jsonl'}"
        )


def suite_renderer(settings: Settings, shard: Shard) -> Any:
    """The renderer of ``settings`` on this process's device (one GPU per rank), loaded with a status line."""
    import torch

    from ed_diffusion.logs import quiet_third_party
    from graphs.renderer import build_renderer

    quiet_third_party()
    if shard.world > 1:  # one GPU per process, as torchrun / accelerate place them
        device = rank_device(settings.device, os.environ.get("LOCAL_RANK"), torch.cuda.is_available())
        settings = settings.model_copy(update={"device": device})
    with err_console.status("loading MC-Diffusion") as status:
        return build_renderer(settings, on_progress=status.update)


@eval_app.command("report")
def eval_report(
    runs: Annotated[
        list[Path], typer.Argument(help="Run directories; the first is the baseline for deltas.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the tables here: a new .md (Markdown) or .html file."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated metrics to compare (default: all but per-stage costs)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
) -> None:
    """Summarise one run, or compare runs side by side with deltas (merging unmerged shards first)."""
    if out is not None:  # before any work: a report must never replace what someone wrote
        if out.suffix.lower() not in (".md", ".markdown", ".html", ".htm"):
            raise InvalidInputError(f"--out {out}: allowed a .md (Markdown) or .html file")
        check_writable(out, directory=False)  # first: --overwrite cannot help when --out is a directory
        if out.exists() and not overwrite:
            raise InvalidInputError(f"--out {out} already exists; pass --overwrite to replace it")
    summaries = [load_run(run) for run in runs]
    labels = [run.name or str(run) for run in runs]
    if len(set(labels)) != len(labels):  # same directory names in different places: number them
        labels = [f"{i}:{label}" for i, label in enumerate(labels, start=1)]
    wanted = [m.strip() for m in (metrics or "").split(",") if m.strip()]
    known = {m for s in summaries for system in s["systems"].values() for m in system["all"]["metrics"]}
    unknown = [m for m in wanted if m not in known]
    if unknown:
        raise InvalidInputError(
            f"--metrics {','.join(unknown)}: not in these runs; allowed: {', '.join(sorted(known))}"
        )
    if len(summaries) == 1 and not wanted:
        tables = build_tables(summaries[0])
    else:
        tables = [compare_tables(list(zip(labels, summaries, strict=True)), wanted)]
    # Runs that differ in their samples or settings are not a like-for-like comparison: say so, loudly.
    differences = run_differences(list(zip(labels, runs, strict=True))) if len(runs) > 1 else []
    for line in differences:
        err_console.print(f"[yellow]warning:[/] {esc(line)}", highlight=False)
    if out is not None:  # before printing: a failed write must not follow a screenful of table
        if out.suffix.lower() in (".html", ".htm"):
            title = f"Eval comparison: {' vs '.join(labels)}" if len(runs) > 1 else f"Eval: {labels[0]}"
            _write_markdown(out, comparison_html(title, tables, differences))
        else:
            notes = "".join(f"> **Runs differ:** {line}\n>\n" for line in differences)
            _write_markdown(out, (notes + "\n" if notes else "") + to_markdown(tables))
    for t in tables:
        out_console.print(_rich_table(t))
    if out is not None:
        out_console.print(f"written {esc(str(out))}")


def _write_markdown(out: Path, text: str) -> None:  # Markdown or HTML: a text file either way
    """``text`` to ``out``, creating its directory as ``check_writable`` allowed.

    Raises:
        InvalidInputError: the write failed anyway (a full disk, a permission taken away), naming --out.
    """
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    except OSError as exc:  # would otherwise name the temp file next to it
        raise InvalidInputError(f"--out {out}: cannot write it ({exc.strerror or exc})") from None
