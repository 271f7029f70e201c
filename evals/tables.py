"""The report's tables as plain data (``TableData``), rendered to Markdown here and to HTML or rich elsewhere,
so every view of a run shows the same numbers; and the side-by-side comparison of runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ed_common.emotions import Emotion

# Shown in the overview and plotted, in this order, when present.
KEY_METRICS: tuple[str, ...] = (
    "emotion_accuracy",
    "polarity_accuracy",
    "target_prob",
    "content_accuracy",
    "joint_accuracy",
    "clip_score",
    "lpips",
    "clip_distance",
    "self_bleu_prompts",
    "distinct_2_prompts",
    "self_bleu_personas",
    "distinct_2_personas",
    "visual_word_share",
    "non_depictable_word_share",
    "llm_latency_s",
    "tokens",
    "wall_s",
)

# The "Agent health" table (evals.scorers.health): column label -> metric, in this order.
HEALTH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("persona used", "health/react_as_persona/used"),
    ("persona dropped", "health/react_as_persona/dropped"),
    ("concepts LLM-written", "health/llm_written/expand_concepts"),
    ("consensus LLM-written", "health/llm_written/write_consensus"),
    ("consensus topped up", "health/write_consensus/topped_up"),
    ("consensus fallback", "health/write_consensus/fallback"),
    ("repair rate", "repair_rate"),
    ("added phrases", "added_phrases"),
    ("channels", "added_channels"),
    ("traced share", "traced_share"),
    ("persona share", "persona_share"),
    ("meets floor", "meets_floor"),
    ("leak rate", "has_leak"),
)


@dataclass(frozen=True)
class TableData:
    """A titled table of strings."""

    title: str
    header: list[str]
    rows: list[list[str]]


def fmt(value: float | None, n: int | None = None, with_n: bool = False) -> str:
    """A metric value for a table: 3 decimals (none for large values), ``(n=..)`` when asked."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 100 else f"{value:.3f}"
    return f"{text} (n={n})" if with_n and n is not None else text


def _is_count_metric(name: str) -> bool:
    # Accuracies are where n matters most to a reader (a 100% over 3 images is not a result).
    return name.endswith("_accuracy")


def key_metrics(summary: dict[str, Any]) -> list[str]:
    """The KEY_METRICS present in any system's ``all`` row."""
    present = {m for s in summary["systems"].values() for m in s["all"]["metrics"]}
    return [m for m in KEY_METRICS if m in present]


def build_tables(summary: dict[str, Any]) -> list[TableData]:
    """Overview, agent health, one per-emotion table per key metric, all metrics, failures."""
    systems: dict[str, Any] = summary["systems"]
    keys = key_metrics(summary)
    overview = TableData(
        "Overview (all emotions)",
        ["system", "kind", "visual prompts", "ok", "failed", "missing", *keys],
        [
            [
                name,
                s["kind"],
                "yes" if s["visual_prompts"] else "no",
                str(s["all"]["n_samples"]),
                str(s["all"]["n_failed"]),
                str(s["all"]["n_missing"]),
                *[fmt(s["all"]["metrics"].get(k), s["all"]["n"].get(k), _is_count_metric(k)) for k in keys],
            ]
            for name, s in systems.items()
        ],
    )
    tables = [overview, *health_table(summary)]
    emotions = [e.value for e in Emotion if any(e.value in s["emotions"] for s in systems.values())]
    for key in keys:
        rows = []
        for name, s in systems.items():
            cells = []
            for e in emotions:
                row = s["emotions"].get(e)
                cells.append(
                    fmt(row["metrics"].get(key), row["n"].get(key), _is_count_metric(key)) if row else "-"
                )
            rows.append([name, *cells, fmt(s["all"]["metrics"].get(key))])
        tables.append(TableData(f"{key} per emotion", ["system", *emotions, "all"], rows))
    every = sorted({m for s in systems.values() for m in s["all"]["metrics"]})
    tables.append(
        TableData(
            "All metrics (all emotions; value (n))",
            ["metric", *systems],
            [
                [m, *[fmt(s["all"]["metrics"].get(m), s["all"]["n"].get(m), True) for s in systems.values()]]
                for m in every
            ],
        )
    )
    failures = [[name, err] for name, s in systems.items() for err in s["all"]["errors"]]
    if failures:
        tables.append(
            TableData("Failures (distinct errors, up to 5 per system)", ["system", "error"], failures)
        )
    return tables


def health_table(summary: dict[str, Any]) -> list[TableData]:
    """The agent-health columns per system (a one-element list), or none when no system has any."""
    systems: dict[str, Any] = summary["systems"]
    present = {m for s in systems.values() for m in s["all"]["metrics"]}
    columns = [(label, m) for label, m in HEALTH_COLUMNS if m in present]
    if not columns:
        return []
    rows = [[name, *[fmt(s["all"]["metrics"].get(m)) for _, m in columns]] for name, s in systems.items()]
    title = "Agent health (all emotions; shares of samples or of stage outcomes)"
    return [TableData(title, ["system", *[label for label, _ in columns]], rows)]


def key_table(summary: dict[str, Any]) -> TableData:
    """Counts and key metrics with systems as columns (fits a terminal better than the overview)."""
    systems: dict[str, Any] = summary["systems"]
    rows = [
        [c, *[str(s["all"][f"n_{c}"]) for s in systems.values()]] for c in ("samples", "failed", "missing")
    ]
    for k in key_metrics(summary):
        all_rows = [s["all"] for s in systems.values()]
        rows.append([k, *[fmt(a["metrics"].get(k), a["n"].get(k), _is_count_metric(k)) for a in all_rows]])
    return TableData(f"{summary['suite']}: key metrics (all emotions)", ["", *systems], rows)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(tables: Sequence[TableData]) -> str:
    """Tables as GitHub Markdown."""
    parts = []
    for t in tables:
        lines = [f"## {t.title}", "", "| " + " | ".join(map(_md_cell, t.header)) + " |"]
        lines.append("|" + "---|" * len(t.header))
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t.rows]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def compare_tables(runs: Sequence[tuple[str, dict[str, Any]]], metrics: Sequence[str] = ()) -> TableData:
    """One row per (system, metric), one column per run, and each later run's delta to the first.

    Metrics: ``metrics`` if given, else every metric of the ``all`` rows except per-stage costs.
    """
    (base_label, base), *others = runs
    header = ["system", "metric", base_label]
    for label, _ in others:
        header += [label, f"Δ {label}"]
    rows = []
    systems = list(dict.fromkeys(name for _, s in runs for name in s["systems"]))
    for name in systems:
        found = {m for _, s in runs if name in s["systems"] for m in s["systems"][name]["all"]["metrics"]}
        names = [m for m in metrics if m in found] if metrics else sorted(m for m in found if "/" not in m)
        for metric in names:
            first = _value(base, name, metric)
            row = [name, metric, fmt(first)]
            for _, summary in others:
                value = _value(summary, name, metric)
                delta = value - first if value is not None and first is not None else None
                row += [fmt(value), "-" if delta is None else f"{delta:+.3f}"]
            rows.append(row)
    return TableData("Comparison (all emotions)", header, rows)


def _value(summary: dict[str, Any], system: str, metric: str) -> float | None:
    s = summary["systems"].get(system)
    value = s["all"]["metrics"].get(metric) if s else None
    return None if value is None else float(value)
