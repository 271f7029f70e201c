"""The cost scorer: LLM latency and tokens per graph stage (from the state's ``trace``), plus wall time.

A stage is a graph node (``understand_request``, ``react_as_persona``, ...; ``single_rewrite`` for the
single-LLM baseline). Latencies are summed over a stage's calls, so the parallel persona calls add up:
this is LLM *work*, not the critical path (``wall_s`` is the sample's wall time, render included).
Trace entries of deterministic decisions (no model) cost nothing and are not counted as calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from evals.records import SampleRecord
from evals.scorers.registry import GroupScore, register_scorer


def trace_costs(trace: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Totals and per-stage costs of one sample's trace entries."""
    calls = [t for t in trace if t.get("model")]
    out: dict[str, float] = {
        "llm_calls": float(len(calls)),
        "llm_failed_calls": float(sum(not t.get("ok", True) for t in calls)),
        "llm_latency_s": sum(float(t.get("latency_s", 0.0)) for t in calls),
        "input_tokens": float(sum(int(t.get("input_tokens", 0)) for t in calls)),
        "output_tokens": float(sum(int(t.get("output_tokens", 0)) for t in calls)),
    }
    out["tokens"] = out["input_tokens"] + out["output_tokens"]
    stage: dict[str, dict[str, float]] = defaultdict(lambda: {"latency_s": 0.0, "tokens": 0.0, "calls": 0.0})
    for t in calls:
        row = stage[str(t.get("node", "?"))]
        row["latency_s"] += float(t.get("latency_s", 0.0))
        row["tokens"] += float(int(t.get("input_tokens", 0)) + int(t.get("output_tokens", 0)))
        row["calls"] += 1
    for node, row in stage.items():
        for key, value in row.items():
            out[f"{key}/{node}"] = value
    return out


@register_scorer("cost")
def score_cost(samples: Sequence[SampleRecord]) -> GroupScore:
    """Per sample: LLM calls, latency and tokens (total and per stage), wall and render time."""
    per_sample = []
    for s in samples:
        row = trace_costs(s.trace) | {"wall_s": s.wall_s}
        if "render_s" in s.timings:
            row["render_s"] = s.timings["render_s"]
        per_sample.append(row)
    return GroupScore(per_sample)
