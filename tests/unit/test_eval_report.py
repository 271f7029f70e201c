"""Aggregation (means, n, failures, image metrics) and the reports (Markdown, self-contained HTML, deltas)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from PIL import Image

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from evals.aggregate import DefaultImageScorer, ImageItem, score_images_default, summarize
from evals.records import SampleRecord
from evals.report import finalize_run, load_run, markdown_report
from evals.report_html import CHART_SIZE, bar_chart
from evals.shards import read_records
from evals.suite import ImageScoringSection, Suite
from evals.tables import compare_tables

SUITE = Suite.model_validate(
    {
        "name": "t",
        "emotions": ["anger", "fear"],
        "prompts": [{"text": "a dog", "content": "dog"}, {"text": "a cat", "content": "cat"}],
        "systems": [{"kind": "plain"}],
        "images_per_prompt": 2,
        "image_scoring": {"emotion_classifier": "world_oracle", "diversity": "lpips"},
    }
)


def _records(out: Path, fail: str | None = None) -> list[SampleRecord]:
    records = []
    for spec in SUITE.plan():
        images = []
        if spec.id != fail:
            for i in range(2):
                path = out / "images" / spec.id / f"image_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(path)
                images.append(path.relative_to(out).as_posix())
        records.append(
            SampleRecord(
                **{k: v for k, v in dataclasses.asdict(spec).items()},
                id=spec.id,
                kind="plain",
                visual_prompts=True,
                status="ok" if spec.id != fail else "error",
                error=None if spec.id != fail else "RuntimeError: boom",
                final_prompt=f"{spec.prompt}, red light" if spec.id != fail else None,
                images=images,
                wall_s=1.0,
            )
        )
    return records


def fake_image_scorer(
    items: list[ImageItem], section: ImageScoringSection
) -> tuple[list[dict[str, float]], dict[str, float]]:
    # Correct for dogs only; diversity 0.1 for anger, 0.3 for fear (ed_diffusion.scoring's key names).
    per = [
        {"emotion_correct": float(i.content == "dog"), "target_prob": 0.5, "emotion_pred_index": 4.0}
        for i in items
    ]
    return per, {"lpips/anger": 0.1, "lpips/fear": 0.3, "lpips/n_pairs": 4.0}


def test_summary_means_counts_and_image_metrics(tmp_path: Path) -> None:
    records = _records(tmp_path, fail=SUITE.plan()[0].id)  # the (dog, anger) sample failed
    summary = summarize(SUITE, tmp_path, records, image_scorer=fake_image_scorer)
    system = summary["systems"]["plain_vp"]
    anger, fear, pooled = system["emotions"]["anger"], system["emotions"]["fear"], system["all"]
    assert (anger["n_samples"], anger["n_failed"], anger["n_images"]) == (1, 1, 2)
    assert anger["errors"] == ["RuntimeError: boom"]
    assert (
        anger["metrics"]["emotion_accuracy"] == 0.0 and anger["n"]["emotion_accuracy"] == 2
    )  # cat images only
    assert fear["metrics"]["emotion_accuracy"] == 0.5 and fear["n"]["emotion_accuracy"] == 4
    assert (
        pooled["metrics"]["emotion_accuracy"] == pytest.approx(2 / 6) and pooled["n"]["emotion_accuracy"] == 6
    )
    assert anger["metrics"]["lpips"] == 0.1 and fear["metrics"]["lpips"] == 0.3
    assert (
        pooled["metrics"]["lpips"] == pytest.approx(0.2) and pooled["n"]["lpips"] == 2
    )  # mean over emotions
    assert (
        pooled["metrics"]["lpips/n_pairs"] == 4.0 and "lpips/n_pairs" not in anger["metrics"]
    )  # system-wide
    assert "emotion_pred_index" not in pooled["metrics"]  # a label, not a quantity
    assert pooled["n"]["wall_s"] == 3  # the failed sample is counted, never averaged
    assert (summary["n_planned"], summary["n_failed"], summary["complete"]) == (4, 1, True)


def test_summary_without_image_scoring_imports_nothing_image_side(tmp_path: Path) -> None:
    suite = SUITE.model_copy(update={"image_scoring": ImageScoringSection()})

    def never(items: list[ImageItem], section: ImageScoringSection) -> Any:
        raise AssertionError("image scoring was not asked for")

    summary = summarize(suite, tmp_path, _records(tmp_path), image_scorer=never)
    assert "emotion_accuracy" not in summary["systems"]["plain_vp"]["all"]["metrics"]


def test_default_image_scorer_speaks_the_scoring_api(monkeypatch: pytest.MonkeyPatch) -> None:
    # ed_diffusion.scoring is written in parallel: stand in for it with the agreed API.
    @dataclasses.dataclass(frozen=True)
    class ImageRecord:
        image: Path
        emotion: Emotion
        prompt: str
        content: str | None = None

    @dataclasses.dataclass(frozen=True)
    class ImageScoringConfig:
        emotion_classifier: Literal["world_oracle", "clip_probe", "clip_zero_shot", "none"] = "none"
        content_scorer: Literal["world_oracle", "clip_zero_shot", "none"] = "none"
        clip_model: str | None = None
        probe_path: str | None = None
        probe_label_order: Literal["emoset", "alphabetical"] = "emoset"
        content_vocabulary: tuple[str, ...] = ()
        clip_score: bool = False
        diversity: Literal["lpips", "clip", "none"] = "none"
        lpips_weights: str | None = None
        batch_size: int = 16
        device: str | None = None

    seen: dict[str, Any] = {}

    def content_vocabulary(records: Sequence[ImageRecord], config: ImageScoringConfig) -> tuple[str, ...]:
        return config.content_vocabulary

    def build_scorers(config: ImageScoringConfig, vocabulary: tuple[str, ...]) -> object:
        seen.update(config=config, vocabulary=vocabulary)
        return object()

    def score_with(
        records: Sequence[ImageRecord], scorers: object, *, batch_size: int
    ) -> tuple[list[dict[str, float]], dict[str, float]]:
        seen.update(records=list(records), scorers=scorers)
        return [{"clip_score": 0.3}] * len(records), {}

    module = types.ModuleType("ed_diffusion.scoring")
    module.__dict__.update(
        ImageRecord=ImageRecord,
        ImageScoringConfig=ImageScoringConfig,
        build_scorers=build_scorers,
        content_vocabulary=content_vocabulary,
        score_with=score_with,
    )
    monkeypatch.setitem(sys.modules, "ed_diffusion.scoring", module)
    section = ImageScoringSection(
        content_scorer="clip_zero_shot", content_vocabulary=("cat", "dog"), clip_score=True
    )
    items = [ImageItem(Path("/x.png"), Emotion.FEAR, "a dog", "dog", "id1")]
    per, _ = score_images_default(items, section)
    assert per == [{"clip_score": 0.3}]
    assert seen["records"] == [ImageRecord(Path("/x.png"), Emotion.FEAR, "a dog", "dog")]
    assert seen["config"] == ImageScoringConfig(
        content_scorer="clip_zero_shot", content_vocabulary=("cat", "dog"), clip_score=True
    )
    # One summary scores system after system: the models load once, and again only for another config.
    reusing = DefaultImageScorer()
    reusing(items, section)
    first = seen["scorers"]
    reusing(items, section)
    assert reusing.builds == 1 and seen["scorers"] is first
    reusing(items, section.model_copy(update={"content_vocabulary": ("cat", "dog", "eel")}))
    assert reusing.builds == 2 and seen["vocabulary"] == ("cat", "dog", "eel")
    # A field this version of the scorers lacks is fine at its default, an error when set.
    with pytest.raises(InvalidInputError, match=r"image_scoring\.world_reading is not supported"):
        score_images_default(items, section.model_copy(update={"world_reading": "full"}))


def test_empty_content_vocabulary_is_the_suite_nouns_for_clip_only(tmp_path: Path) -> None:
    seen = []

    def scorer(items: list[ImageItem], section: ImageScoringSection) -> Any:
        seen.append(section.content_vocabulary)
        return [{} for _ in items], {}

    for kind in ("clip_zero_shot", "world_oracle"):
        scoring = SUITE.image_scoring.model_copy(update={"content_scorer": kind})
        suite = SUITE.model_copy(update={"image_scoring": scoring})
        summarize(suite, tmp_path, _records(tmp_path / kind), image_scorer=scorer)
    assert seen == [("cat", "dog"), ()]  # the world oracle keeps its own classes


def test_finalize_writes_summary_markdown_plots_and_a_self_contained_html(tmp_path: Path) -> None:
    records = _records(tmp_path)
    (tmp_path / "suite.yaml").write_text(json.dumps(SUITE.model_dump(mode="json")))  # JSON is YAML
    (tmp_path / "samples.jsonl").write_text("".join(r.to_line() + "\n" for r in records))
    summary = finalize_run(tmp_path, SUITE, records, image_scorer=fake_image_scorer)
    assert json.loads((tmp_path / "summary.json").read_text())["systems"] == summary["systems"]
    md = (tmp_path / "report.md").read_text()
    assert "| plain_vp | plain | yes | 4 | 0 | 0 |" in md and "## emotion_accuracy per emotion" in md
    assert "(plots/emotion_accuracy.png)" in md and (tmp_path / "plots" / "emotion_accuracy.png").is_file()
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r'src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)  # nothing external
    assert len([s for s in sources if s]) >= 4 + 1  # one thumbnail per sample + charts
    assert "<h3>anger</h3>" in page and "a dog -&gt; a dog, red light" in page
    assert load_run(tmp_path)["systems"] == summary["systems"]  # fresh summary: read, not recomputed


def test_load_run_merges_unmerged_shards_and_summarises(tmp_path: Path) -> None:
    records = _records(tmp_path)
    (tmp_path / "suite.yaml").write_text(json.dumps(SUITE.model_dump(mode="json")))
    for rank in (0, 1):  # as left by two processes whose last one died before merging
        lines = "".join(r.to_line() + "\n" for r in reversed(records[rank::2]))
        (tmp_path / f"samples.rank{rank}.jsonl").write_text(lines)
    summary = load_run(tmp_path, image_scorer=fake_image_scorer)
    assert summary["n_recorded"] == 4 and (tmp_path / "report.html").is_file()
    assert [r.id for r in read_records(tmp_path / "samples.jsonl")] == [s.id for s in SUITE.plan()]
    with pytest.raises(InvalidInputError, match="not an eval run directory"):
        load_run(tmp_path / "images")


def test_markdown_flags_an_incomplete_run() -> None:
    summary = {
        "suite": "t",
        "created": "now",
        "n_recorded": 1,
        "n_planned": 2,
        "n_failed": 0,
        "complete": False,
        "systems": {},
    }
    assert "INCOMPLETE" in markdown_report(summary)


def test_compare_tables_show_each_run_and_its_delta_to_the_first() -> None:
    def run(acc: float, extra: dict[str, float]) -> dict[str, Any]:
        metrics = {"emotion_accuracy": acc, "latency_s/react_as_persona": 1.0} | extra
        return {"systems": {"full_graph_vp": {"all": {"metrics": metrics, "n": {}}}}}

    table = compare_tables([("a", run(0.5, {})), ("b", run(0.75, {"tokens": 10.0}))])
    assert table.header == ["system", "metric", "a", "b", "Δ b"]
    assert ["full_graph_vp", "emotion_accuracy", "0.500", "0.750", "+0.250"] in table.rows
    assert ["full_graph_vp", "tokens", "-", "10.000", "-"] in table.rows
    assert not any("/" in row[1] for row in table.rows)  # per-stage costs only on request
    chosen = compare_tables([("a", run(0.5, {})), ("b", run(0.75, {}))], ["latency_s/react_as_persona"])
    assert [row[1] for row in chosen.rows] == ["latency_s/react_as_persona"]


def test_bar_chart_draws_negative_and_positive_values() -> None:
    image = bar_chart("delta", ["a", "a-very-long-system-name"], [-0.5, 1.0])
    assert image.size == CHART_SIZE
    colours = {image.getpixel((x, y)) for x in range(0, CHART_SIZE[0], 4) for y in range(0, CHART_SIZE[1], 4)}
    assert len(colours) > 3  # bars in two palette colours besides white and the axis


def test_report_of_a_run_in_progress_reads_without_writing_and_loses_no_line(tmp_path: Path) -> None:
    from evals.shards import SampleWriter

    records = _records(tmp_path)
    (tmp_path / "suite.yaml").write_text(json.dumps(SUITE.model_dump(mode="json")))
    with SampleWriter(tmp_path / "samples.jsonl") as writer:  # a single-process run, still appending
        writer.write(records[0])
        summary = load_run(tmp_path, image_scorer=fake_image_scorer)  # `emodir eval report` meanwhile
        assert (summary["n_recorded"], summary["complete"]) == (1, False)
        assert not (tmp_path / "summary.json").exists()  # nothing written under a live run
        for r in records[1:]:
            writer.write(r)
    assert [r.id for r in read_records(tmp_path / "samples.jsonl")] == [r.id for r in records]
    assert load_run(tmp_path, image_scorer=fake_image_scorer)["n_recorded"] == 4  # now it merges


def test_every_suite_scoring_field_maps_onto_the_real_scoring_config() -> None:
    # The stand-in above fixes the call; this pins the mapping to the real ed_diffusion.scoring API.
    from ed_diffusion.scoring import ImageScoringConfig
    from evals.aggregate import image_scoring_config

    real = {f.name: f.default for f in dataclasses.fields(ImageScoringConfig)}
    section = {k: f.default for k, f in ImageScoringSection.model_fields.items()}
    assert section == real
    chosen = ImageScoringSection(emotion_classifier="world_oracle", world_reading="full", batch_size=4)
    assert image_scoring_config(chosen) == ImageScoringConfig(
        emotion_classifier="world_oracle", world_reading="full", batch_size=4
    )
