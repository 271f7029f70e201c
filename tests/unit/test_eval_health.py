"""The agent-health scorer on hand-built samples whose answers are known, and its way into the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ed_common.emotions import Emotion
from evals.records import SampleRecord
from evals.report import markdown_report
from evals.report_html import html_report
from evals.scorers import DEFAULT_SCORERS, get_scorer, scorer_names
from evals.scorers.health import default_checker, sample_health
from evals.tables import build_tables

USER = "a dog on a porch"


def _call(node: str, attempt: int = 1, persona: str | None = None, ok: bool = True) -> dict[str, Any]:
    return {
        "run_index": 0,
        "node": node,
        "persona_id": persona,
        "model": "m",
        "attempt": attempt,
        "ok": ok,
        "latency_s": 1.0,
    }


def _note(node: str, outcome: str, persona: str | None = None, run: int = 0) -> dict[str, Any]:
    return {
        "run_index": run,
        "node": node,
        "persona_id": persona,
        "model": None,
        "note": outcome,
        "outcome": outcome,
    }


def _phrase(phrase: str, channel: str | None, source: str, persona: str | None = None) -> dict[str, Any]:
    return {"phrase": phrase, "channel": channel, "source": source, "persona_id": persona}


def _record(
    final: str,
    trace: list[dict[str, Any]] = (),  # type: ignore[assignment]
    phrases: list[dict[str, Any]] = (),  # type: ignore[assignment]
    system: str = "full_graph_vp",
    kind: str = "full_graph",
) -> SampleRecord:
    return SampleRecord(
        id=final[:8],
        system=system,
        kind=kind,
        visual_prompts=True,
        prompt=USER,
        emotion=Emotion.FEAR,
        seed=0,
        status="ok",
        final_prompt=final,
        trace=list(trace),
        prompt_phrases=list(phrases),
    )


GOOD_PROMPT = f"{USER}, cold blue light, hunched trembling shoulders, rain-soaked empty street, rusted chain"
GOOD_PHRASES = [
    _phrase("cold blue light", "lighting", "persona", "child"),
    _phrase("hunched trembling shoulders", "expression_pose", "persona", "elder"),
    _phrase("rain-soaked empty street", "environment", "concepts"),
    _phrase("rusted chain", "symbolic_objects", "consensus"),
]


def _good() -> SampleRecord:
    trace = [
        _call("extract_anchors"),
        _note("extract_anchors", "used"),
        *[
            x
            for p in ("child", "elder")
            for x in (_call("react_as_persona", persona=p), _note("react_as_persona", "used", p))
        ],
        _call("expand_concepts"),
        _note("expand_concepts", "used"),
        _call("write_consensus"),
        _note("write_consensus", "used"),
    ]
    return _record(GOOD_PROMPT, trace, GOOD_PHRASES)


def _bad() -> SampleRecord:
    # 4 personas: 3 used, 1 dropped (its call and its repair failed); the chain fell back to the lexicon;
    # consensus had to be topped up; the prompt adds 2 phrases over 1 channel, one of them from the lexicon.
    trace = [_note("extract_anchors", "fallback")]
    for p in ("a", "b", "c"):
        trace += [_call("react_as_persona", persona=p), _note("react_as_persona", "used", p)]
    trace += [
        _call("react_as_persona", persona="d", ok=False),
        _call("react_as_persona", 2, "d", ok=False),
        _note("react_as_persona", "dropped", "d"),
        _call("expand_concepts", ok=False),
        _note("expand_concepts", "fallback"),
        _call("write_consensus"),
        _note("write_consensus", "topped_up"),
    ]
    phrases = [
        _phrase("dark shadows", "lighting", "lexicon"),
        _phrase("deep shadow", "lighting", "consensus"),
    ]
    return _record(f"{USER}, dark shadows, deep shadow", trace, phrases)


def test_health_of_a_fully_used_sample() -> None:
    h = sample_health(_good())
    assert h["health/react_as_persona/used"] == 1.0
    assert h["health/react_as_persona/dropped"] == 0.0 and h["health/react_as_persona/repaired"] == 0.0
    assert h["health/expand_concepts/used"] == 1.0 and h["health/expand_concepts/fallback"] == 0.0
    assert h["health/write_consensus/used"] == 1.0
    assert h["health/write_consensus/topped_up"] == 0.0 and h["health/write_consensus/fallback"] == 0.0
    for node in ("extract_anchors", "react_as_persona", "expand_concepts", "write_consensus"):
        assert h[f"health/llm_written/{node}"] == 1.0
    assert h["repair_rate"] == 0.0
    assert h["added_phrases"] == 4 and h["added_channels"] == 4 and h["meets_floor"] == 1.0
    assert h["traced_share"] == 0.75 and h["persona_share"] == 0.5
    assert h["leaks"] == 0.0 and h["has_leak"] == 0.0
    assert not any(k.startswith("health/repair_prompt") for k in h)  # a stage that did not run is undefined


def test_health_counts_dropped_personas_lexicon_fallback_and_topped_up_consensus() -> None:
    h = sample_health(_bad())
    assert h["health/react_as_persona/used"] == 0.75 and h["health/react_as_persona/dropped"] == 0.25
    assert h["health/llm_written/react_as_persona"] == 0.75
    assert h["health/expand_concepts/fallback"] == 1.0 and h["health/llm_written/expand_concepts"] == 0.0
    assert h["health/write_consensus/topped_up"] == 1.0 and h["health/write_consensus/used"] == 0.0
    assert h["health/llm_written/write_consensus"] == 0.0  # topped up is not the LLM's output alone
    assert h["health/extract_anchors/fallback"] == 1.0 and h["health/llm_written/extract_anchors"] == 0.0
    assert h["repair_rate"] == pytest.approx(1 / 6)  # 6 first attempts, 1 repair attempt
    assert h["added_phrases"] == 2 and h["added_channels"] == 1 and h["meets_floor"] == 0.0
    assert h["traced_share"] == 0.0 and h["persona_share"] == 0.0


def test_health_counts_a_repair() -> None:
    trace = [
        _call("write_consensus"),
        _call("write_consensus", attempt=2),
        _note("write_consensus", "repaired"),
        _call("expand_concepts"),
        _note("expand_concepts", "used"),
    ]
    h = sample_health(_record(GOOD_PROMPT, trace, GOOD_PHRASES))
    assert h["repair_rate"] == 0.5
    assert h["health/write_consensus/repaired"] == 1.0 and h["health/llm_written/write_consensus"] == 1.0


def test_health_reads_only_the_last_run_of_a_session() -> None:
    trace = [_note("write_consensus", "fallback", run=0), _note("write_consensus", "used", run=1)]
    assert sample_health(_record(GOOD_PROMPT, trace))["health/write_consensus/used"] == 1.0


def test_health_flags_a_leaking_prompt_and_passes_a_clean_one() -> None:
    leaking = sample_health(_record("a dog, feeling_trigger: red, what_i_see: [fog]"))
    assert leaking["leaks"] == 2.0 and leaking["has_leak"] == 1.0
    clean = sample_health(_record(GOOD_PROMPT))
    assert clean["leaks"] == 0.0 and clean["has_leak"] == 0.0
    assert default_checker() is default_checker()  # the library is loaded once


def test_users_own_words_never_count_as_a_leak() -> None:
    record = _record("a json file on a desk, cold light").model_copy(
        update={"prompt": "a json file on a desk"}
    )
    assert sample_health(record)["leaks"] == 0.0


def test_plain_system_gets_only_the_leak_metrics() -> None:
    h = sample_health(_record(USER, system="plain_vp", kind="plain"))
    assert h == {"leaks": 0.0, "has_leak": 0.0}
    single = sample_health(
        _record(GOOD_PROMPT, [_call("single_rewrite"), _call("single_rewrite", 2)], kind="single_llm")
    )
    assert single == {"repair_rate": 1.0, "leaks": 0.0, "has_leak": 0.0}


def test_health_separates_good_from_bad_samples() -> None:
    good, bad = sample_health(_good()), sample_health(_bad())
    for key in (
        "health/llm_written/react_as_persona",
        "health/llm_written/expand_concepts",
        "health/llm_written/write_consensus",
        "traced_share",
        "persona_share",
        "meets_floor",
        "added_channels",
    ):
        assert good[key] > bad[key], key
    assert good["repair_rate"] < bad["repair_rate"]


def test_agent_health_is_a_default_scorer() -> None:
    assert "agent_health" in scorer_names() and "agent_health" in DEFAULT_SCORERS
    scored = get_scorer("agent_health")([_good(), _bad()])
    assert [row["meets_floor"] for row in scored.per_sample] == [1.0, 0.0] and scored.group == {}


def _summary(metrics: dict[str, dict[str, float]]) -> dict[str, Any]:
    def row(m: dict[str, float]) -> dict[str, Any]:
        n = {k: 2 for k in m}
        base = {"n_planned": 2, "n_samples": 2, "n_failed": 0, "n_missing": 0, "n_images": 0}
        return base | {"metrics": m, "n": n, "errors": []}

    return {
        "suite": "t",
        "created": "now",
        "n_recorded": 4,
        "n_planned": 4,
        "n_failed": 0,
        "complete": True,
        "systems": {
            name: {"kind": name, "visual_prompts": False, "all": row(m), "emotions": {"fear": row(m)}}
            for name, m in metrics.items()
        },
    }


def test_reports_show_an_agent_health_table_per_system(tmp_path: Path) -> None:
    good, bad = sample_health(_good()), sample_health(_bad())
    mean = {k: (good[k] + bad[k]) / 2 for k in good.keys() & bad.keys()}
    summary = _summary({"full_graph": mean, "plain": {"leaks": 1.0, "has_leak": 0.5}})
    table = next(t for t in build_tables(summary) if t.title.startswith("Agent health"))
    assert table.header[:4] == ["system", "persona used", "persona dropped", "concepts LLM-written"]
    graph = dict(zip(table.header, table.rows[0], strict=True))
    assert graph["persona used"] == "0.875" and graph["consensus topped up"] == "0.500"
    assert graph["traced share"] == "0.375" and graph["leak rate"] == "0.000"
    plain = dict(zip(table.header, table.rows[1], strict=True))
    assert plain["leak rate"] == "0.500" and plain["persona used"] == "-"
    assert "## Agent health" in markdown_report(summary)
    assert "<h2>Agent health" in html_report(summary, [], tmp_path, {})
    assert not any(
        t.title.startswith("Agent health") for t in build_tables(_summary({"plain": {"wall_s": 1.0}}))
    )
