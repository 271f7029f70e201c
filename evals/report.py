"""Reports: ``summary.json``, ``report.md``, ``report.html`` and plots of a run (tables: ``evals.tables``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ed_common.atomic import write_json_atomic, write_text_atomic
from ed_common.errors import InvalidInputError
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
