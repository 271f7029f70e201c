"""The agent-health scorer: what each graph stage did with the LLM's output, where the prompt's phrases came
from, and whether the final prompt leaks schema or instruction text.

A stage writes one deterministic note entry (no model) per run with an ``outcome``: ``used`` (the LLM's
output as written), ``repaired`` (after one repair turn), ``topped_up`` (used, plus deterministic additions to
meet a floor), ``fallback`` (the built-in path) or ``dropped`` (a persona left out). Only the notes of the
sample's last run count (an eval sample is one run; a chat session's history would otherwise mix runs).

Per sample, only what is defined: stage outcome shares and ``llm_written`` for the stages in the trace;
``repair_rate`` when the LLM was called; phrase metrics when the system traces its stages (the graph); the
leak metrics for every final prompt. So ``plain`` gets only ``leaks``/``has_leak`` and ``single_llm`` adds
``repair_rate``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, get_args

from ed_agents.leaks import LeakChecker, leak_checker
from ed_agents.nodes.consensus import MIN_CHANNELS, MIN_DETAILS
from ed_agents.prompts import PromptLibrary
from ed_agents.state import StageOutcome
from ed_common.settings import load_settings
from evals.records import SampleRecord
from evals.scorers.registry import GroupScore, register_scorer

ALL_OUTCOMES: tuple[str, ...] = get_args(StageOutcome)
# The outcomes each stage can write; every one is emitted (0.0 where absent) so means over samples are shares.
STAGE_OUTCOMES: dict[str, tuple[str, ...]] = {
    "extract_anchors": ("used", "repaired", "fallback"),
    "react_as_persona": ("used", "repaired", "dropped"),
    "expand_concepts": ("used", "repaired", "fallback"),
    "write_consensus": ("used", "repaired", "topped_up", "fallback"),
    "repair_prompt": ("used", "repaired", "fallback"),
    "revise_prompt": ("used", "repaired", "fallback"),
}
LLM_WRITTEN: frozenset[str] = frozenset({"used", "repaired"})
TRACED_SOURCES: frozenset[str] = frozenset({"persona", "concepts"})
# The floor a final prompt should meet: the consensus's own (added phrases over distinct channels).
MIN_PHRASES = MIN_DETAILS


@functools.cache
def default_checker() -> LeakChecker:
    """The leak checker of the configured prompt library (loaded once per process)."""
    return leak_checker(PromptLibrary.load(load_settings().prompts_dir))


def _last_run(trace: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    if not trace:
        return []
    last = max(int(t.get("run_index", 0)) for t in trace)
    return [t for t in trace if int(t.get("run_index", 0)) == last]


def stage_health(trace: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``health/<node>/<outcome>`` shares and ``health/llm_written/<node>`` per stage with outcome notes."""
    by_node: dict[str, list[str]] = {}
    for t in _last_run(trace):
        if not t.get("model") and t.get("outcome"):
            by_node.setdefault(str(t.get("node", "?")), []).append(str(t["outcome"]))
    out: dict[str, float] = {}
    for node, outcomes in by_node.items():
        expected = STAGE_OUTCOMES.get(node, ALL_OUTCOMES)
        for outcome in dict.fromkeys([*expected, *outcomes]):
            out[f"health/{node}/{outcome}"] = outcomes.count(outcome) / len(outcomes)
        out[f"health/llm_written/{node}"] = sum(o in LLM_WRITTEN for o in outcomes) / len(outcomes)
    return out


def repair_rate(trace: Sequence[Mapping[str, Any]]) -> float | None:
    """LLM calls that were repair attempts / first attempts; None without LLM calls."""
    calls = [t for t in _last_run(trace) if t.get("model")]
    first = sum(int(t.get("attempt", 1)) == 1 for t in calls)
    return sum(int(t.get("attempt", 1)) == 2 for t in calls) / first if first else None


def phrase_health(phrases: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Added phrases, distinct channels, traced and persona shares, and whether the floor is met."""
    n = len(phrases)
    channels = len({p["channel"] for p in phrases if p.get("channel")})
    out = {
        "added_phrases": float(n),
        "added_channels": float(channels),
        "meets_floor": float(n >= MIN_PHRASES and channels >= MIN_CHANNELS),
    }
    if n:
        out["traced_share"] = sum(p.get("source") in TRACED_SOURCES for p in phrases) / n
        out["persona_share"] = sum(p.get("source") == "persona" for p in phrases) / n
    return out


def count_leaks(final_prompt: str, user_prompt: str, checker: LeakChecker) -> int:
    """Comma-separated clauses of ``final_prompt`` that leak (the user's own words never count)."""
    return len(checker.leaking_clauses(final_prompt, user_prompt))


def sample_health(record: SampleRecord, checker: LeakChecker | None = None) -> dict[str, float]:
    """Every agent-health metric defined for one sample."""
    out = stage_health(record.trace)
    if record.prompt_phrases or out:  # a system that traces its stages also records what it added
        out |= phrase_health(record.prompt_phrases)
    rate = repair_rate(record.trace)
    if rate is not None:
        out["repair_rate"] = rate
    if record.final_prompt is not None:
        leaks = count_leaks(record.final_prompt, record.prompt, checker or default_checker())
        out["leaks"] = float(leaks)
        out["has_leak"] = float(leaks > 0)
    return out


@register_scorer("agent_health")
def score_agent_health(samples: Sequence[SampleRecord]) -> GroupScore:
    """Per sample: stage outcomes, LLM-written shares, repair rate, added-phrase provenance, leaks."""
    return GroupScore([sample_health(s) for s in samples])
