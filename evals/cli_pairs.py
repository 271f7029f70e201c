"""``emodir pairs build|select``: preference pairs from a suite's prompts; the work is in ``evals.pairs``.

Registered in ``cli.py`` with ``app.add_typer(pairs_app, name="pairs")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ed_common.errors import InvalidInputError
from ed_common.limits import MAX_SEED
from ed_common.paths import check_writable
from ed_common.text import esc
from evals.cli_eval import (
    AdapterOption,
    BankOption,
    PresetOption,
    err_console,
    out_console,
    suite_renderer,
    suite_settings,
)
from evals.pair_select import LOSER_RULES, SelectOptions
from evals.pairs import MAX_CANDIDATES
from evals.shards import detect_shard
from evals.suite import load_suite, resolve_suite_path

pairs_app = typer.Typer(
    no_args_is_help=True,
    help="Preference pairs for `emodir train dpo`: render candidates, score them, keep winner and loser.",
)

_MARGIN_HELP = "Keep a pair when its target-emotion scores differ by at least this (0 to 0.99)."
_LOSER_HELP = (
    "lowest: the group's candidate with the lowest target-emotion score; other_emotion: the same prompt "
    "rendered for another emotion (content kept, same seed first)."
)


def _loser_rule(value: str) -> str:
    if value not in LOSER_RULES:  # a usage error (exit 2), as click's own range checks are
        raise typer.BadParameter(f"{value!r} is not a loser rule; allowed: {', '.join(LOSER_RULES)}")
    return value


def _options(loser: str, min_margin: float) -> SelectOptions:
    return SelectOptions(loser=loser, min_margin=min_margin)  # type: ignore[arg-type]  # checked inside


def _print_summary(summary: dict[str, object], out: Path) -> None:
    skipped = summary["skipped"]
    parts = ", ".join(f"{n} {why}" for why, n in skipped.items()) if isinstance(skipped, dict) else ""
    out_console.print(
        f"[green]done[/]: {summary['pairs']} pair(s) from {summary['groups']} group(s) of "
        f"{summary['candidates']} candidates{f' (skipped: {parts})' if parts else ''}; mean margin "
        f"{summary['mean_margin']}. Pairs: {esc(str(out / 'pairs.jsonl'))}; "
        f"sheets: {esc(str(out / 'sheets'))}"
    )


@pairs_app.command("build")
def pairs_build(
    ctx: typer.Context,
    suite_file: Annotated[Path, typer.Argument(help="Suite YAML, or a shipped suite's name (world, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Build directory (new or empty, or --resume).")],
    candidates: Annotated[
        int, typer.Option(min=2, max=MAX_CANDIDATES, help="Candidates rendered per (prompt, emotion).")
    ] = 4,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Candidate k of every group renders with seed + k.")
    ] = 0,
    system: Annotated[
        str | None, typer.Option(help="The suite's plain system to render (default: its first with VPs).")
    ] = None,
    loser: Annotated[str, typer.Option(callback=_loser_rule, help=_LOSER_HELP)] = "lowest",
    min_margin: Annotated[float, typer.Option(min=0.0, max=0.99, help=_MARGIN_HELP)] = 0.1,
    preset: PresetOption = None,
    bank: BankOption = None,
    adapter: AdapterOption = None,
    one_at_a_time: Annotated[
        bool, typer.Option("--one-at-a-time", help="One render call per candidate (default: K per call).")
    ] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the build in --out: render only the missing groups.")
    ] = False,
) -> None:
    """Render, score and pair candidates for every (prompt, emotion) of a suite (sharded under torchrun)."""
    from evals.pairs import PAIRS_SETTINGS, BuildSpec, SuiteScorer, build_manifest, build_pairs, check_out_dir
    from evals.pairs import pick_system as choose_system

    suite_file = resolve_suite_path(suite_file)
    suite = load_suite(suite_file)
    settings = suite_settings(ctx, suite, suite_file, preset=preset, bank=bank, adapter=adapter)
    options = _options(loser, min_margin)
    try:
        chosen = choose_system(suite, system)
    except InvalidInputError as exc:
        raise typer.BadParameter(str(exc), param_hint="--system") from None
    for flag, value in (("--bank", bank), ("--adapter", adapter)):
        if value is not None and not Path(value).is_file():
            raise typer.BadParameter(f"{value!r} is not a file", param_hint=flag)
    if (bank or adapter) and not chosen.visual_prompts:
        raise typer.BadParameter(
            f"system {chosen.name!r} renders without visual prompts, so the bank and adapter would not be "
            "used; choose a system with visual prompts (--system)",
            param_hint="--adapter" if adapter else "--bank",
        )
    spec = BuildSpec(suite, chosen, candidates, seed, batched=not one_at_a_time)
    shard = detect_shard()
    check_writable(out)
    identity = settings.model_dump(mode="json", include=set(PAIRS_SETTINGS))
    scoring = suite.image_scoring.model_dump(mode="json")

    def manifest_for(renderer: object) -> dict[str, object]:
        return build_manifest(
            spec, suite_file, settings=identity, image_scoring=scoring, renderer=renderer, shard=shard
        )

    check_out_dir(out, manifest_for(None), shard, resume)  # before any model loads
    with err_console.status("loading the scorers"):
        scorer = SuiteScorer(suite)
    renderer = suite_renderer(settings, shard)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console) as progress:
        rank = f" \\[rank {shard.rank}/{shard.world}]" if shard.world > 1 else ""  # \\[: not rich markup
        label = f"pairs {esc(suite.name)}{rank}"
        task = progress.add_task(label, total=None)
        try:
            outcome = build_pairs(
                spec,
                out,
                renderer=renderer,
                scorer=scorer,
                options=options,
                manifest=manifest_for(renderer),
                shard=shard,
                resume=resume,
                on_start=lambda todo: progress.update(task, total=todo),
                on_group=lambda _g: progress.update(task, advance=1),
            )
        except KeyboardInterrupt:
            err_console.print(
                "interrupted: finished groups are saved; continue with the same command and options plus "
                f"--resume (`emodir pairs build {esc(str(suite_file))} --out {esc(str(out))} ... --resume`)"
            )
            raise
    rate = outcome.rendered * candidates / outcome.seconds if outcome.seconds > 0 else 0.0
    err_console.print(
        f"{outcome.rendered} group(s) rendered and scored ({rate:.2f} candidates/s), "
        f"{outcome.skipped} already done"
    )
    if outcome.selected is None and outcome.rendered == 0 and outcome.skipped == outcome.planned:
        out_console.print(
            f"nothing to do: every group is built; {esc(str(out / 'pairs.jsonl'))} is kept as it was chosen "
            f"(`emodir pairs select {esc(str(out))}` chooses again)"
        )
    elif outcome.selected is None:
        out_console.print(
            "This process's groups are finished; the last process to finish selects the pairs (or run "
            f"`emodir pairs select {esc(str(out))}`)."
        )
    else:
        _print_summary(outcome.selected, out)


@pairs_app.command("select")
def pairs_select(
    out: Annotated[Path, typer.Argument(help="A finished `pairs build` directory.")],
    loser: Annotated[str, typer.Option(callback=_loser_rule, help=_LOSER_HELP)] = "lowest",
    min_margin: Annotated[float, typer.Option(min=0.0, max=0.99, help=_MARGIN_HELP)] = 0.1,
) -> None:
    """Choose the pairs again with another rule (rewrites pairs.jsonl and the sheets; renders nothing)."""
    from evals.pairs import plan_groups_of_manifest, select_and_write
    from evals.shards import merge_lock

    options = _options(loser, min_margin)
    if not out.is_dir():
        raise typer.BadParameter(
            f"{out} is not a directory; give a `pairs build` --out directory", param_hint="OUT"
        )
    missing = plan_groups_of_manifest(out)
    if missing:
        raise InvalidInputError(
            f"{out}: {len(missing)} group(s) not built yet (first: {missing[0]}); finish it with "
            "`emodir pairs build ... --resume`"
        )
    with merge_lock(out) as mine:  # never two selections at once (a build's last rank selects too)
        if not mine:
            raise InvalidInputError(
                f"{out}: another process is selecting or building; try again when it ends"
            )
        summary = select_and_write(out, options)
    _print_summary(summary, out)
