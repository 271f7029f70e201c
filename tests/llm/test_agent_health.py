"""Agent health on the embedded model: the LLM's own output must be what the rewrite is made of.

A few counter-stereotype prompts run through the real graph against the real server; the test fails when
the share of LLM output that is used drops under floors set from measurements on SmolLM2-135M
(`docs/agent-health.md`). The floors sit below the measured rates by about the sampling noise of this
small a run, so a regression (fallbacks everywhere, as before the agent was designed for this model)
fails, and an unlucky draw does not.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from ed_agents.anchors import missing_anchors
from graphs.emotion_director import build_graph

pytestmark = pytest.mark.llm

PAIRS = [
    ("a dog sitting on a porch", "anger"),
    ("a birthday cake on a kitchen table", "fear"),
    ("a graveyard at the edge of town", "amusement"),
    ("a field of sunflowers", "sadness"),
    ("a garbage dump outside a city", "awe"),
    ("a bus stop in the rain", "excitement"),
]
# Floors (share of runs or calls), from the measured rates minus noise; see docs/agent-health.md.
PERSONAS_USED = 0.90
CHAIN_BY_LLM = 0.80
CONSENSUS_BY_LLM = 0.66  # used as chosen or repaired (4 of the 6 runs); measured 92.5%, free slots had 27.5%
MIN_ADDED, MIN_CHANNELS = 4, 3


def test_real_agent_uses_its_own_output(real_context: Any) -> None:
    ctx = real_context(n_personas=4, seed=3)
    graph = build_graph()

    def run(pair: tuple[str, str]) -> dict[str, Any]:
        return dict(graph.invoke({"user_prompt": pair[0], "target_emotion": pair[1]}, context=ctx))

    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(run, PAIRS))
    outcomes: Counter[tuple[str, str]] = Counter(
        (t.node, t.outcome) for out in outs for t in out["trace"] if t.outcome
    )

    def share(node: str, good: tuple[str, ...]) -> float:
        total = sum(n for (nd, _), n in outcomes.items() if nd == node)
        return sum(outcomes[(node, g)] for g in good) / total

    report = dict(outcomes)
    assert share("react_as_persona", ("used", "repaired")) >= PERSONAS_USED, report
    assert share("expand_concepts", ("used", "repaired")) >= CHAIN_BY_LLM, report
    assert share("write_consensus", ("used", "repaired")) >= CONSENSUS_BY_LLM, report
    assert outcomes[("write_consensus", "fallback")] <= 1, report  # measured 0 of 40
    for out in outs:
        final = out["final_prompt"]
        assert not missing_anchors(final, out["anchors"]), final
        phrases = out["prompt_phrases"]
        assert len(phrases) >= MIN_ADDED, final  # never the user's words alone
        assert len({p.channel for p in phrases if p.channel}) >= MIN_CHANNELS, final
        # Independent of the stripping finalize did with the same checker: no JSON, no key-like words.
        assert not re.search(r'[{}\[\]"]|\w_\w', final), final
    traced = [p.source in ("persona", "concepts") for out in outs for p in out["prompt_phrases"]]
    assert sum(traced) / len(traced) >= 0.5  # most phrases are the personas' or the LLM chain's
