"""The self-contained ``report.html`` (tables, bar charts and image grids embedded as base64 PNG) and the
bar charts as PNG files. Charts are drawn with PIL: matplotlib is not a dependency.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ed_common.atomic import write_bytes_atomic
from ed_common.emotions import Emotion
from ed_common.image_files import ImageReadError, read_rgb
from evals.records import SampleRecord
from evals.tables import TableData, build_tables, key_metrics

CHART_SIZE = (640, 320)
THUMB = 112  # thumbnail side in the image grid, pixels
MAX_THUMBS = 6  # per (emotion, system) cell: enough to see a pattern, small enough for one file
_PALETTE = ((66, 114, 196), (237, 125, 49), (112, 173, 71), (255, 192, 0), (91, 155, 213), (165, 165, 165))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float]) -> Image.Image:
    """A labelled vertical bar chart (baseline at 0, or at the minimum if a value is negative)."""
    width, height = CHART_SIZE
    image = Image.new("RGB", CHART_SIZE, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.text((10, 8), title, fill="black", font=font)
    top, bottom, left, right = 36, height - 48, 40, width - 16
    low, high = min(0.0, *values), max(0.0, *values)
    span = (high - low) or 1.0

    def y(v: float) -> float:
        return bottom - (v - low) / span * (bottom - top)

    draw.line((left, y(0.0), right, y(0.0)), fill=(90, 90, 90))
    slot = (right - left) / max(1, len(values))
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + i * slot + slot * 0.15
        x1 = left + (i + 1) * slot - slot * 0.15
        draw.rectangle(
            (x0, min(y(value), y(0.0)), x1, max(y(value), y(0.0))), fill=_PALETTE[i % len(_PALETTE)]
        )
        text = f"{value:.3g}"
        draw.text((x0, min(y(value), y(0.0)) - 13), text, fill="black", font=font)
        short = label if len(label) <= 18 else label[:17] + "…"
        draw.text((x0, bottom + 6 + 12 * (i % 2)), short, fill="black", font=font)  # staggered: no overlap
    return image


def chart_pngs(summary: dict[str, Any]) -> dict[str, bytes]:
    """One bar chart (PNG bytes) per key metric: the systems side by side, over all emotions."""
    charts = {}
    for metric in key_metrics(summary):
        pairs = [
            (n, s["all"]["metrics"][metric])
            for n, s in summary["systems"].items()
            if metric in s["all"]["metrics"]
        ]
        charts[metric] = _png(bar_chart(metric, [n for n, _ in pairs], [float(v) for _, v in pairs]))
    return charts


def write_plots(directory: Path, charts: dict[str, bytes]) -> list[Path]:
    """The charts as ``<metric>.png`` files in ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    return [write_bytes_atomic(directory / f"{m.replace('/', '_')}.png", png) for m, png in charts.items()]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumbnail(path: Path) -> str | None:
    try:
        im = read_rgb(path)
        scale = THUMB / max(im.size)
        # Tiny images (the tiny preset's 64 px) are scaled up with NEAREST: visible blocks, not blur.
        resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
        size = (max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale)))
        return _data_uri(_png(im.resize(size, resample)))
    except (ImageReadError, OSError, ValueError):  # a report still builds around an unreadable image
        return None


def _table_html(t: TableData) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return f"<h2>{html.escape(t.title)}</h2>\n<table><tr>{head}</tr>{body}</table>"


def _grid_html(records: Sequence[SampleRecord], out: Path, systems: Sequence[str]) -> str:
    parts = []
    for emotion in Emotion:
        rows = []
        for system in systems:
            shown = [r for r in records if r.ok and r.system == system and r.emotion == emotion and r.images]
            cells = []
            for r in shown[:MAX_THUMBS]:
                uri = _thumbnail(out / r.images[0])
                if uri is not None:
                    # The user's prompt and seed are printed under the image; the full final prompt (long)
                    # is its tooltip and alt text.
                    tip = html.escape(f"{r.prompt} -> {r.final_prompt} (seed {r.seed})", quote=True)
                    caption = html.escape(f"{r.prompt} · seed {r.seed}")
                    cells.append(
                        f'<figure><img src="{uri}" title="{tip}" alt="{tip}"><figcaption>{caption}'
                        "</figcaption></figure>"
                    )
            if cells:
                rows.append(f"<tr><th>{html.escape(system)}</th><td>{''.join(cells)}</td></tr>")
        if rows:
            parts.append(f"<h3>{emotion.value}</h3>\n<table class='grid'>{''.join(rows)}</table>")
    return (
        "<h2>Images (first image of up to 6 samples; hover for the final prompts)</h2>\n" + "\n".join(parts)
        if parts
        else ""
    )


_STYLE = """body{font-family:sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}
table.grid img{image-rendering:pixelated;display:block}.charts img{margin:4px}
figure{display:inline-block;margin:2px 4px;vertical-align:top;max-width:140px}
figcaption{font-size:11px;color:#555;overflow-wrap:anywhere}.warn{color:#a05a00}"""


def comparison_html(title: str, tables: Sequence[TableData], warnings: Sequence[str]) -> str:
    """``eval report A B --out cmp.html``: the comparison tables, with what differs between the runs first."""
    notes = "".join(f"<li class='warn'>{html.escape(w)}</li>" for w in warnings)
    caution = f"<h2>Runs differ</h2><ul>{notes}</ul>\n" if notes else ""
    body = "\n".join(_table_html(t) for t in tables)
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n{caution}{body}\n</body></html>\n"
    )


def html_report(
    summary: dict[str, Any], records: Sequence[SampleRecord], out: Path, charts: dict[str, bytes]
) -> str:
    """The whole ``report.html``: one file with everything embedded."""
    title = f"Eval report: {summary['suite']}"
    status = (
        f"created {summary['created']}; {summary['n_recorded']}/{summary['n_planned']} samples recorded, "
        f"{summary['n_failed']} failed{'' if summary['complete'] else ' (INCOMPLETE: resume the run)'}"
    )
    plots = "".join(f'<img alt="{html.escape(m)}" src="{_data_uri(png)}">' for m, png in charts.items())
    body = "\n".join(_table_html(t) for t in build_tables(summary))
    grid = _grid_html(records, out, list(summary["systems"]))
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n<p>{html.escape(status)}</p>\n"
        f"{body}\n<h2>Plots</h2>\n<div class='charts'>{plots}</div>\n{grid}\n</body></html>\n"
    )
