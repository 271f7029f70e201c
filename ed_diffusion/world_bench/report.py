"""The world benchmark's outputs: ``results.json``, ``results.md`` (the paper-style table), the grid."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ed_common.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

COLUMNS = (
    ("unusual", "emotion_acc", "Emotion acc."),
    ("unusual", "content_acc", "Content acc."),
    ("unusual", "joint_acc", "Joint acc."),
    ("unusual", "shortcut_rate", "Shortcut rate ↓"),
    ("unusual", "emotion_leakage", "Emotion leakage ↓"),
    ("unusual", "vp_win_rate", "VP win rate"),
    ("typical", "emotion_acc", "Emotion acc. (typical)"),
    ("typical", "content_acc", "Content acc. (typical)"),
)
CELL = 64  # pixels per sample in the grid (32 px images upscaled 2x, nearest)


def write_reports(out: Path, results: dict[str, Any]) -> None:
    """Write the three files atomically."""
    write_json_atomic(out / "results.json", results, default=None)
    write_text_atomic(out / "results.md", markdown_table(results))
    first = results["seeds"][0]["seed"]
    # A resumed benchmark replaces its grid (save_png_atomic never overwrites): encode, then one atomic write.
    png = io.BytesIO()
    sample_grid(out / f"seed{first}", results).save(png, format="PNG")
    write_bytes_atomic(out / "samples.png", png.getvalue())


def _cell(stat: dict[str, float] | None) -> str:
    if stat is None:
        return "–"
    spread = f" ± {100 * stat['std']:.1f}" if stat.get("n_seeds", 1) > 1 else ""
    return f"{100 * stat['mean']:.1f}{spread}"


def markdown_table(results: dict[str, Any]) -> str:
    """The paper-style table: mean ± sample std over seeds, in percent."""
    summary, cfg = results["summary"], results["config"]
    lines = [
        "# Affective world benchmark",
        "",
        f"Unusual (content, emotion) pairs of the synthetic world; {len(cfg['seeds'])} seeds "
        f"({', '.join(map(str, cfg['seeds']))}), {cfg['samples_per_pair']} image(s) per pair and seed, "
        "mean ± sample std over seeds, in %. Emotion is read by the world's colour oracle, content by its "
        "silhouette oracle (`docs/design.md`, *World benchmark*).",
        "",
        "| System | " + " | ".join(label for _, _, label in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    for system, label in results["systems"].items():
        cells = [_cell(summary[system].get(split, {}).get(metric)) for split, metric, _ in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += _interval_lines(results)
    ref = results["reference"]
    lines += ["", "Reference (oracle on test images, not generated):", ""]
    for name, label in (
        ("real_test_images", "real images"),
        ("autoencoder_reconstructions", "codec round trip"),
    ):
        r = ref[name]
        lines.append(
            f"- {label}: emotion {100 * r['emotion_acc']:.1f}%, content {100 * r['content_acc']:.1f}%, "
            f"joint {100 * r['joint_acc']:.1f}% (n = {r['n']})"
        )
    lines += [
        "",
        "Shortcut rate: share of unusual-pair images that show the emotion's *typical* content "
        "instead of the requested one. Emotion leakage: of the unusual-pair images in a wrong emotion, the "
        "share painted in an emotion the requested *content* is typical of (chance: "
        f"{_chance(summary)}). VP win rate: share of held-out test images denoised better "
        "with their own emotion's visual prompt than with another's (0.5 = the prompt is ignored).",
        "",
    ]
    return "\n".join(lines) + "\n"


def _interval_lines(results: dict[str, Any]) -> list[str]:
    """The 95% intervals (seeds and pairs resampled) and each row against the row it starts from."""
    rows = results.get("intervals") or {}
    if not rows:
        return []
    lines = [
        "",
        "95% intervals on unusual pairs (bootstrap over seeds and pairs); joint accuracy against the row "
        "each system starts from, paired image by image on the same noise:",
        "",
        "| System | Emotion acc. | Content acc. | Joint acc. | Joint acc. vs. start |",
        "|---|---:|---:|---:|---|",
    ]
    for system, label in results["systems"].items():
        row = rows[system]
        cells = [
            f"{100 * row[m]['mean']:.1f} [{100 * row[m]['lo']:.1f}, {100 * row[m]['hi']:.1f}]"
            for m in ("emotion_acc", "content_acc", "joint_acc")
        ]
        vs = row.get("joint_vs_start")
        start = results["systems"].get(vs["start"], vs["start"]) if vs else ""
        words = vs["verdict"].replace(vs["start"], start) if vs else "–"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {words} |")
    return lines


def _chance(summary: dict[str, Any]) -> str:
    value = summary.get("text_only", {}).get("unusual", {}).get("leakage_chance", {}).get("mean")
    return "n/a" if value is None else f"{100 * value:.1f}% for the text-only row"


def sample_grid(seed_dir: Path, results: dict[str, Any], per_emotion: int = 1) -> Image.Image:
    """Rows = systems, columns = one unusual pair per emotion (the first sample of each), labelled."""
    seed = next(s for s in results["seeds"] if seed_dir.name == f"seed{s['seed']}")
    pairs = seed["eval_pairs"]
    cols: list[int] = []
    seen: dict[str, int] = {}
    for i, (_, emotion, split, idx) in enumerate(pairs):
        if split == "unusual" and idx == 0 and seen.get(emotion, 0) < per_emotion:
            seen[emotion] = seen.get(emotion, 0) + 1
            cols.append(i)
    systems = list(results["systems"])
    label_w, head_h = 150, 30
    sheet = Image.new("RGB", (label_w + CELL * len(cols), head_h + CELL * len(systems)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, i in enumerate(cols):
        content, emotion = pairs[i][0], pairs[i][1]
        draw.text((label_w + j * CELL + 2, 2), content, fill="black")
        draw.text((label_w + j * CELL + 2, 15), emotion[:10], fill="black")
    for r, system in enumerate(systems):
        images = np.load(seed_dir / f"samples_{system}.npz")["images"]
        draw.text((4, head_h + r * CELL + CELL // 2 - 6), results["systems"][system][:24], fill="black")
        for j, i in enumerate(cols):
            tile = Image.fromarray(images[i]).resize((CELL, CELL), Image.Resampling.NEAREST)
            sheet.paste(tile, (label_w + j * CELL, head_h + r * CELL))
    return sheet
