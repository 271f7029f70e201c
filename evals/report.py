"""Reports: ``summary.json``, ``report.md``, ``report.html`` and plots of a run (tables: ``evals.tables``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ed_common.atomic import write_json_atomic, write_text_atomic
from ed_common.errors import InvalidInputError
from ed_common.text import short_repr
from evals.aggregate import SUMMARY_VERSION, ImageScorer, summarize
from evals.records import SampleRecord
from evals.report_html import chart_pngs, html_report, write_plots
from evals.shards import best_records, merge_lock, merge_samples, sample_files
from evals.suite import Suite, load_suite
from evals.tables import build_tables, to_markdown

log = logging.getLogger(__name__)

# What the report and its tables read from a summary (see ``aggregate.summarize``).
_SUMMARY_KEYS = frozenset({"suite", "created", "n_planned", "n_recorded", "n_failed", "complete", "systems"})


def markdown_report(summary: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """The whole ``report.md``."""
    head = (
        f"# Eval report: {summary['suite']}\n\n"
        f"created {summary['created']}; {summary['n_recorded']}/{summary['n_planned']} samples recorded, "
        f"{summary['n_failed']} failed{'' if summary['complete'] else ' (INCOMPLETE: resume the run)'}.\n\n"
    )
    pictures = "".join(f"![{Path(p).stem}]({p})\n" for p in plots)
    return head + to_markdown(build_tables(summary)) + (f"\n## Plots\n\n{pictures}" if plots else "")


def finalize_run(
    out: Path, suite: Suite, records: Sequence[SampleRecord], *, image_scorer: ImageScorer | None = None
) -> dict[str, Any]:
    """Score the records and write ``summary.json``, ``plots/*.png``, ``report.md`` and ``report.html``."""
    summary = summarize(suite, out, records, image_scorer=image_scorer)
    write_json_atomic(out / "summary.json", summary)
    charts = chart_pngs(summary)
    plots = write_plots(out / "plots", charts)
    write_text_atomic(
        out / "report.md", markdown_report(summary, [p.relative_to(out).as_posix() for p in plots])
    )
    write_text_atomic(out / "report.html", html_report(summary, records, out, charts))
    return summary


def load_run(out: Path, *, image_scorer: ImageScorer | None = None) -> dict[str, Any]:
    """A run's summary, merging shards and re-scoring first when sample files are newer than it (or it is
    damaged: it is derived data).

    While a process of the run still appends (or another merges), nothing in ``out`` is written: the summary
    of what is recorded so far is computed and returned only.

    Raises:
        InvalidInputError: ``out`` is not a run directory, or a sample file is damaged (nothing is written).
    """
    if not (out / "suite.yaml").is_file():
        raise InvalidInputError(
            f"{out} is not an eval run directory (no suite.yaml); give the --out of `eval run`"
        )
    summary_path = out / "summary.json"
    files = sample_files(out)
    stale = not summary_path.is_file() or any(f.stat().st_mtime > summary_path.stat().st_mtime for f in files)
    kept = None if stale else _read_summary(summary_path)
    if kept is None:
        suite = load_suite(out / "suite.yaml")
        with merge_lock(out) as acquired:
            if acquired:
                records = merge_samples(out, [s.id for s in suite.plan()])
                return finalize_run(out, suite, records, image_scorer=image_scorer)
        # A process is still writing or merging: read what is there, in plan order, without writing.
        best = best_records(sample_files(out))
        records = [best[s.id] for s in suite.plan() if s.id in best]
        return summarize(suite, out, records, image_scorer=image_scorer)
    return kept


def _read_summary(path: Path) -> dict[str, Any] | None:
    """``summary.json`` as ``summarize`` wrote it, or None when it is damaged or of another version.

    It is derived from the samples, so a bad one is stale, not an error: it is recomputed (and rewritten).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        data = None
    if (
        isinstance(data, dict)
        and data.get("summary_version") == SUMMARY_VERSION
        and isinstance(data.get("systems"), dict)
        and data.keys() >= _SUMMARY_KEYS
    ):
        return data
    log.warning("%s is damaged or of another version; scoring the samples again", path)
    return None


# What makes two runs' numbers comparable: the same samples (prompts, emotions, seeds, images per prompt),
# rendered and scored the same way, with the same settings and models. Paths and run times are left out.
_COMPARED_SUITE_KEYS = ("prompts", "emotions", "seeds", "images_per_prompt", "render", "image_scoring")
_IGNORED_SETTINGS = ("data_dir", "cache_dir", "runs_dir", "prompts_dir", "llm_server_python", "llm_api_key")


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix.rstrip("."): value}


def run_differences(runs: list[tuple[str, Path]]) -> list[str]:
    """What differs between each run and the first (the baseline), one short line each; [] = comparable.

    Compares the suites' samples and render/scoring settings, the runs' settings, LLM model, diffusion model
    and prompt files, as their manifests recorded them.
    """

    def facts(run: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((run / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        if not isinstance(manifest, dict):  # damaged: compare what the suite says
            manifest = {}
        suite = manifest.get("suite") or load_suite(run / "suite.yaml").model_dump(mode="json")
        settings = {k: v for k, v in (manifest.get("settings") or {}).items() if k not in _IGNORED_SETTINGS}
        diffusion = {
            k: v
            for k, v in (manifest.get("diffusion") or {}).items()
            if k.endswith("sha256") or k in ("preset", "model")
        }
        return _flat(
            {
                "suite": {k: suite.get(k) for k in _COMPARED_SUITE_KEYS},
                "settings": settings,
                "llm_model": (manifest.get("llm") or {}).get("model"),
                "diffusion": diffusion,
                "prompt_files": {
                    str(f.get("id")): f.get("sha256")
                    for f in manifest.get("prompt_files") or []
                    if isinstance(f, dict)
                },
            }
        )

    (base_label, base_run), *others = runs
    base = facts(base_run)
    lines = []
    for label, run in others:
        mine = facts(run)
        keys = sorted(k for k in base.keys() | mine.keys() if base.get(k) != mine.get(k))
        for key in keys[:8]:
            now, was = short_repr(mine.get(key)), short_repr(base.get(key))
            lines.append(f"{label} differs from {base_label} in {key}: {now} vs {was}")
        if len(keys) > 8:
            lines.append(f"{label} differs from {base_label} in {len(keys) - 8} more field(s)")
    return lines
