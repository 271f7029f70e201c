"""``evals.pairs``: building, resuming, sharding and reselecting preference pairs, on a fake renderer and
scorer whose scores are known (the image's red channel is the target emotion's probability)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image

from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.render_contract import RenderRequest
from ed_diffusion.training.datasets import load_preference_pairs
from evals.pair_select import SelectOptions
from evals.pairs import (
    CANDIDATES,
    MANIFEST,
    PAIRS,
    BuildSpec,
    build_manifest,
    build_pairs,
    check_out_dir,
    pick_system,
    plan_groups,
    plan_groups_of_manifest,
    select_and_write,
    write_sheets,
)
from evals.shards import Shard
from evals.suite import Suite

SUITE = {
    "name": "toy",
    "prompts": [
        {"text": "a dog", "content": "dog", "emotions": ["fear", "amusement"]},
        {"text": "a cat", "content": "cat", "emotions": ["fear", "awe", "sadness"]},
    ],
    "systems": [
        {"kind": "single_llm"},
        {
            "kind": "plain",
            "name": "named",
            "visual_prompts": False,
            "template": "{prompt}, feeling {emotion}",
        },
    ],
}


def strength(caption: str, emotion: Emotion, seed: int) -> int:
    """The fake image's red value: a fixed function of what was asked (so two builds agree)."""
    return (seed * 67 + emotion.label_index * 29 + len(caption) * 13) % 256


class FakeRenderer:
    """Writes 8x8 PNGs: red = the target emotion's score, green = the emotion's index, blue = 255 unless the
    seed is odd (the fake content guard fails odd seeds)."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.fail_after = fail_after

    def render(self, request: RenderRequest) -> Any:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt
        self.calls.append((request.prompt, request.seed, request.n_images))
        request.out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, seed in enumerate(request.seeds):
            red = strength(request.prompt, request.emotion, seed)
            blue = 0 if seed % 2 else 255
            image = Image.new("RGB", (8, 8), (red, request.emotion.label_index * 30, blue))
            path = request.out_dir / f"image_{i:02d}_seed{seed}.png"
            image.save(path)
            paths.append(path)
        return SimpleNamespace(images=paths)


def fake_scorer(
    images: Sequence[Image.Image], contents: Sequence[str | None]
) -> list[tuple[tuple[float, ...], bool | None]]:
    rows: list[tuple[tuple[float, ...], bool | None]] = []
    for im in images:
        red, green, blue = im.getpixel((0, 0))  # type: ignore[misc]
        p = red / 255
        target = green // 30
        probs = tuple(p if i == target else (1 - p) / 7 for i in range(8))
        rows.append((probs, blue == 255))
    return rows


def spec(**kw: Any) -> BuildSpec:
    suite = Suite.model_validate(SUITE)
    return BuildSpec(suite, pick_system(suite, None), **{"candidates": 4, **kw})


def manifest_of(s: BuildSpec) -> dict[str, Any]:
    return build_manifest(s, None, settings={}, image_scoring={}, renderer=None, shard=Shard())


def build(out: Path, renderer: FakeRenderer | None = None, **kw: Any) -> Any:
    s = kw.pop("spec", None) or spec()
    return build_pairs(
        s,
        out,
        renderer=renderer or FakeRenderer(),
        scorer=fake_scorer,
        options=kw.pop("options", SelectOptions(min_margin=0.05)),
        manifest=kw.pop("manifest", None) or manifest_of(s),
        **kw,
    )


def test_a_build_renders_each_group_once_and_writes_pairs_train_dpo_reads(tmp_path: Path) -> None:
    renderer = FakeRenderer()
    outcome = build(tmp_path / "b", renderer)
    assert (outcome.planned, outcome.rendered, outcome.skipped) == (5, 5, 0)
    # One batched call per group, K images from the build's seed; the caption is the system's template.
    assert renderer.calls[0] == ("a dog, feeling fear", 0, 4) and len(renderer.calls) == 5
    rows = [json.loads(line) for line in (tmp_path / "b" / PAIRS).read_text().splitlines()]
    assert outcome.selected is not None and outcome.selected["pairs"] == len(rows) > 0
    for row in rows:
        group = json.loads((tmp_path / "b" / "groups" / f"{row['group']}.json").read_text())
        kept = [c for c in group["candidates"] if c["content_ok"]]
        target = Emotion(row["emotion"]).label_index
        # The winner is the content-keeping candidate with the highest target score; the loser the lowest.
        assert row["winner_score"] == pytest.approx(max(c["probs"][target] for c in kept))
        assert row["loser_score"] == pytest.approx(min(c["probs"][target] for c in group["candidates"]))
        assert row["winner_seed"] % 2 == 0  # odd seeds lost their content
    pairs, summary = load_preference_pairs(tmp_path / "b" / PAIRS)
    assert len(pairs) == len(rows) and summary.num_skipped == 0
    assert pairs[0].caption == rows[0]["caption"] and pairs[0].winner.is_file()
    sheets = sorted(p.name for p in (tmp_path / "b" / "sheets").iterdir())
    assert sheets == ["000-a-dog.png", "001-a-cat.png"]
    with Image.open(tmp_path / "b" / "sheets" / "001-a-cat.png") as im:
        assert im.size == (4 * 96, 3 * (96 + 14))  # 3 emotions x 4 candidates, cells upscaled to 96 px


def test_one_at_a_time_gives_the_same_scores_with_one_call_per_candidate(tmp_path: Path) -> None:
    batched, single = FakeRenderer(), FakeRenderer()
    build(tmp_path / "a", batched)
    build(tmp_path / "b", single, spec=spec(batched=False))
    assert len(single.calls) == 4 * len(batched.calls)
    a = json.loads((tmp_path / "a" / "groups" / "p001-awe.json").read_text())
    b = json.loads((tmp_path / "b" / "groups" / "p001-awe.json").read_text())
    assert [c["probs"] for c in a["candidates"]] == [c["probs"] for c in b["candidates"]]


def test_an_interrupted_build_resumes_exactly(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    build(whole)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        build(out, FakeRenderer(fail_after=2))
    assert len(list((out / "groups").iterdir())) == 2 and not (out / PAIRS).exists()
    assert plan_groups_of_manifest(out) == ["p001-fear", "p001-awe", "p001-sadness"]
    again = FakeRenderer()
    outcome = build(out, again, resume=True)
    assert (outcome.rendered, outcome.skipped, len(again.calls)) == (3, 2, 3)
    assert (out / PAIRS).read_text() == (whole / PAIRS).read_text()


def test_leftovers_of_an_interrupted_group_are_redone(tmp_path: Path) -> None:
    out = tmp_path / "b"
    (out / CANDIDATES / ".p000-fear.rank0.tmp").mkdir(parents=True)
    (out / CANDIDATES / ".p000-fear.rank0.tmp" / "image_00_seed0.png").write_bytes(b"partial")
    (out / CANDIDATES / "p000-amusement").mkdir()
    (out / CANDIDATES / "p000-amusement" / "image_00_seed0.png").write_bytes(b"never recorded")
    (out / MANIFEST).write_text(json.dumps(manifest_of(spec())))
    outcome = build(out, resume=True)
    assert outcome.rendered == 5
    assert not (out / CANDIDATES / ".p000-fear.rank0.tmp").exists()
    with Image.open(out / CANDIDATES / "p000-amusement" / "image_00_seed0.png") as im:
        assert im.size == (8, 8)


def test_two_shards_give_the_pairs_of_one_process(tmp_path: Path) -> None:
    build(tmp_path / "one")
    out = tmp_path / "two"
    first = build(out, shard=Shard(0, 2))
    assert first.owned == 3 and first.selected is None  # rank 1's groups are missing: no selection yet
    second = build(out, shard=Shard(1, 2))
    assert second.owned == 2 and second.selected is not None
    assert (out / PAIRS).read_text() == (tmp_path / "one" / PAIRS).read_text()


def test_a_resume_must_repeat_the_identity_and_a_fresh_build_needs_an_empty_dir(tmp_path: Path) -> None:
    out = tmp_path / "b"
    build(out)
    with pytest.raises(InvalidInputError, match=r"is not empty .*pass --resume"):
        build(out)
    with pytest.raises(InvalidInputError, match=r"built with other candidates"):
        check_out_dir(out, manifest_of(spec(candidates=3)), Shard(), resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match=r"is a file"):
        check_out_dir(tmp_path / "file", {}, Shard(), resume=False)


def test_reselecting_rewrites_the_pairs_without_rendering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "b"
    build(out)
    lowest = (out / PAIRS).read_text()
    summary = select_and_write(out, SelectOptions(loser="other_emotion", min_margin=0.0))
    rows = [json.loads(line) for line in (out / PAIRS).read_text().splitlines()]
    assert (out / PAIRS).read_text() != lowest and len(rows) == summary["pairs"] == 5
    assert all(r["loser_emotion"] != r["emotion"] for r in rows)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["result"]["selection"] == {"loser": "other_emotion", "min_margin": 0.0}
    from evals.pair_select import select_pairs
    from evals.pairs import read_groups

    groups = sorted(read_groups(out).values(), key=lambda g: g.id)
    labels: list[str] = []
    monkeypatch.setattr(
        "ed_diffusion.images.contact_sheet", lambda ims, labs, **kw: labels.extend(labs) or ims[0]
    )
    write_sheets(out, groups, select_pairs(groups, SelectOptions(loser="other_emotion", min_margin=0.0)))
    winners, losers = {r["winner"] for r in rows}, {r["loser"] for r in rows}
    marked = [lab.split()[-1] for lab in labels if lab.split()[-1] in ("W", "L", "WL")]
    assert marked.count("WL") == len(winners & losers) and marked.count("L") == len(losers - winners)


def test_the_plan_and_the_spec_checks() -> None:
    groups = plan_groups(spec())
    assert [g.id for g in groups] == ["p000-fear", "p000-amusement", "p001-fear", "p001-awe", "p001-sadness"]
    suite = Suite.model_validate(SUITE)
    with pytest.raises(InvalidInputError, match=r"single_llm_vp' is single_llm; pairs build renders `plain`"):
        BuildSpec(suite, suite.systems[0])
    with pytest.raises(InvalidInputError, match=r"--system 'nope': suite 'toy' has no such system"):
        pick_system(suite, "nope")
    with pytest.raises(InvalidInputError, match=r"--candidates 1: allowed an integer from 2 to 64"):
        BuildSpec(suite, suite.systems[1], candidates=1)
    no_plain = Suite.model_validate({**SUITE, "systems": [{"kind": "single_llm"}]})
    with pytest.raises(InvalidInputError, match=r"has no `plain` system"):
        pick_system(no_plain, None)


def test_a_sharded_build_never_continues_another_build(tmp_path: Path) -> None:
    out = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        build(out, FakeRenderer(fail_after=1), spec=spec(candidates=3))
    # Rank 0 of a fresh 2-process build with K = 4 finds the K = 3 build's manifest and groups: refused.
    with pytest.raises(InvalidInputError, match=r"built with other candidates"):
        build(out, shard=Shard(0, 2))
    # A sharded --resume into a directory a sibling rank has just created (no manifest yet) is fine.
    fresh = tmp_path / "f"
    (fresh / "groups").mkdir(parents=True)
    (fresh / CANDIDATES).mkdir()
    assert build(fresh, shard=Shard(1, 2), resume=True).owned == 2


def test_a_resume_with_retrained_weights_at_the_same_path_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "b"
    old = {**manifest_of(spec()), "weights": {"adapter_sha256": "aaa"}}
    build(out, manifest=old)
    with pytest.raises(InvalidInputError, match=r"built with other bank/adapter weights"):
        build(out, manifest={**old, "weights": {"adapter_sha256": "bbb"}}, resume=True)
    assert build(out, manifest=old, resume=True).rendered == 0


def test_the_default_system_renders_with_visual_prompts(tmp_path: Path) -> None:
    suite = Suite.model_validate(
        {
            **SUITE,
            "systems": [
                {"kind": "plain", "name": "text", "visual_prompts": False},
                {"kind": "plain", "name": "vp"},
            ],
        }
    )
    assert pick_system(suite, None).name == "vp"
