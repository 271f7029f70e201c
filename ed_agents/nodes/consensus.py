"""Stage 3: consensus. The user's words, unchanged, plus visual details chosen from the personas and concepts.

The personas' and the chain's phrases that are usable (depictable, new to the user's words, leak-free) are
sorted into slots by channel (palette, light, pose, setting, texture, two telling details); the model picks
one option per slot, and the server enforces the pick (each slot is an ``enum`` of its options). So the
consensus integrates the personas' own ideas, as the method asks, and a 135M model can no longer write
junk, copy the worked example or leave the emotion out. A consensus must carry the emotion: with fewer
than ``MIN_DETAILS`` details over ``MIN_CHANNELS`` channels it is topped up from the same phrases, and the
stage's outcome says so (``topped_up``), as it says ``fallback`` when the call failed outright.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.runtime import Runtime

from ed_agents.channels import channel_of
from ed_agents.context import Context, context_of
from ed_agents.depictability import is_depictable, names_a_channel
from ed_agents.errors import AllPersonasFailedError
from ed_agents.leaks import LeakChecker, leak_checker
from ed_agents.lexicon import NEGATIVE_HINT, VISUAL
from ed_agents.llm import LLMCallError, reply_schema
from ed_agents.nodes.common import current_reactions, note
from ed_agents.provenance import Candidate, candidates, content, phrase_key, trace_phrase
from ed_agents.state import ConceptChain, ConsensusReply, PersonaReaction, StageOutcome, State
from ed_common.emotions import Emotion

MIN_DETAILS = 4
MIN_CHANNELS = 3

# Consensus slot -> the channels whose phrases it offers; a phrase of no known channel is a detail. Two
# detail slots: a small model's personas mostly write whole images no channel word classifies.
SLOT_CHANNELS: dict[str, tuple[str, ...]] = {
    "palette": ("color_palette",),
    "light": ("lighting",),
    "pose": ("expression_pose",),
    "setting": ("environment", "composition"),
    "texture": ("material_texture",),
    "detail": ("symbolic_objects",),
    "extra": ("symbolic_objects",),
}
# Options per slot: enough to choose from, few enough that the prompt stays short.
MAX_CHOICES = 5
# Content-word overlap (Jaccard) at which two phrases are one option: a small model's chain repeats a
# phrase with one word changed across channels, and offering both fills two slots with one idea.
NEAR = 0.6


def usable_details(
    items: Sequence[str], user_prompt: str, checker: LeakChecker
) -> tuple[list[str], list[str]]:
    """Split proposed details into (kept, dropped): kept ones are depictable, new and leak nothing."""
    kept: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    user = content(user_prompt)
    for item in items:
        clean = " ".join(item.replace(",", " ").split()).strip(" .;:")
        key = phrase_key(clean)
        if not key or key in seen:
            continue
        seen.add(key)
        bad = (
            not is_depictable(clean)
            or names_a_channel(clean)
            or content(clean) <= user
            or bool(checker.leaks(clean, [user_prompt]))
        )
        (dropped if bad else kept).append(clean)
    return kept, dropped


def chain_labels(chain: ConceptChain | None) -> dict[str, str]:
    """Phrase key -> channel of every concept-chain phrase (the chain labels its own phrases)."""
    if chain is None:
        return {}
    return {phrase_key(t): c for c, items in chain.visual.channel_items().items() for t in items}


def channels_of(details: Sequence[str], labels: Mapping[str, str]) -> set[str]:
    """The channels ``details`` fill: a labelled phrase's own channel, else the one its words name."""
    found = {labels.get(phrase_key(d)) or channel_of(d) for d in details}
    return {c for c in found if c}


def top_up(
    details: list[str],
    user_prompt: str,
    reactions: Sequence[PersonaReaction],
    chain: ConceptChain | None,
    checker: LeakChecker,
    labels: dict[str, str],
    emotion: Emotion,
) -> list[str]:
    """Details added from the inputs until the floors hold: missing channels first, personas first; then,
    when the inputs cannot meet them, the built-in lexicon."""
    pool, _ = usable_details([c.text for c in candidates(reactions, chain)], user_prompt, checker)
    pool = [p for p in pool if phrase_key(p) not in {phrase_key(d) for d in details}]
    added: list[str] = []
    while pool and len(channels_of(details + added, labels)) < MIN_CHANNELS:
        have = channels_of(details + added, labels)
        new = next((p for p in pool if channels_of([p], labels) - have), None)
        if new is None:
            break
        pool.remove(new)
        added.append(new)
    while pool and len(details) + len(added) < MIN_DETAILS:
        added.append(pool.pop(0))
    so_far = details + added
    if len(channels_of(so_far, labels)) < MIN_CHANNELS or len(so_far) < MIN_DETAILS:
        added += _from_lexicon(so_far, user_prompt, emotion, checker, labels)
    return added


def _from_lexicon(
    have: list[str], user_prompt: str, emotion: Emotion, checker: LeakChecker, labels: dict[str, str]
) -> list[str]:
    """Built-in phrases, missing channels first, until both floors hold.

    The last resort of the floor: a prompt must carry the emotion in ``MIN_DETAILS`` phrases over
    ``MIN_CHANNELS`` channels even when every persona wrote whole images and the chain's phrases were
    unusable. They are traced as ``lexicon``.
    """
    added: list[str] = []
    by_channel = VISUAL[emotion].channel_items()

    words = [content(h) for h in have]

    def usable(channel: str) -> str | None:
        kept, _ = usable_details(by_channel[channel], user_prompt, checker)
        return next((p for p in kept if not any(_near(content(p), w) for w in words)), None)

    def add(channel: str, phrase: str) -> None:
        labels[phrase_key(phrase)] = channel
        words.append(content(phrase))
        added.append(phrase)

    for channel in by_channel:  # missing channels first
        if len(channels_of(have + added, labels)) >= MIN_CHANNELS:
            break
        if channel not in channels_of(have + added, labels) and (phrase := usable(channel)):
            add(channel, phrase)
    for channel in by_channel:  # then any channel, until there are enough phrases
        if len(have) + len(added) >= MIN_DETAILS:
            break
        if phrase := usable(channel):
            add(channel, phrase)
    return added


def slot_choices(
    pool: Sequence[Candidate], user_prompt: str, checker: LeakChecker
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The options of each slot (slots without any left out), and the channel of each option by key.

    Each usable phrase goes to one slot only, personas' phrases first, so no two slots offer the same one.
    """
    usable, _ = usable_details([c.text for c in pool], user_prompt, checker)
    clean = {phrase_key(u): u for u in usable}
    choices: dict[str, list[str]] = {slot: [] for slot in SLOT_CHANNELS}
    channels: dict[str, str] = {}
    offered: list[set[str]] = []
    for cand in pool:
        key = phrase_key(cand.text)
        words = content(cand.text)
        if key not in clean or any(_near(words, seen) for seen in offered):
            continue  # "the empty bowl" = "empty bowl"; "fleeting light green blue" ~ "fleeting light blue"
        offered.append(words)
        phrase = clean.pop(key)
        channel = cand.channel or channel_of(phrase)
        # The slots of its channel (two take objects and unclassified images): the one with fewest options.
        slots = [s for s, chs in SLOT_CHANNELS.items() if channel in chs] or ["detail", "extra"]
        slot = min(slots, key=lambda s: len(choices[s]))
        if len(choices[slot]) < MAX_CHOICES:
            choices[slot].append(phrase)
            if channel:
                channels[key] = channel
    return {s: options for s, options in choices.items() if options}, channels


def _near(a: set[str], b: set[str]) -> bool:
    """Two phrases are one option when most of their content words are shared (Jaccard >= NEAR)."""
    return bool(a | b) and len(a & b) / len(a | b) >= NEAR


def choices_schema(choices: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The reply schema with each slot an ``enum`` of its options; slots without options are left out."""
    schema = reply_schema(ConsensusReply)
    props = schema["properties"]
    for slot in SLOT_CHANNELS:
        if slot in choices:
            props[slot] = {"type": "string", "enum": list(choices[slot])}
        else:
            del props[slot]
    schema["required"] = list(props)
    return schema


def format_choices(choices: Mapping[str, Sequence[str]]) -> str:
    """The options as lines for the prompt's user part: ``palette: a | b``."""
    return "\n".join(f"{slot}: {' | '.join(options)}" for slot, options in choices.items())


def write_consensus(state: State, runtime: Runtime[Context]) -> dict[str, Any]:
    """Ask for the details; keep the usable ones, top them up to the floors, or compose them on failure."""
    ctx = context_of(runtime)
    run = state.get("run_index", 0)
    emotion = state["target_emotion"]
    reactions = current_reactions(state)
    chain = state.get("concepts")
    warnings: list[str] = []
    if not reactions:
        errors = [t.error for t in state.get("trace", []) if t.run_index == run and t.error]
        if chain is None:
            raise AllPersonasFailedError(
                f"all {len(state.get('persona_ids', []))} personas failed"
                + (f"; last error: {errors[-1]}" if errors else "")
            )
        warnings.append("every persona was dropped; the consensus uses the chain of concept alone")
    checker = leak_checker(ctx.prompts)
    user_prompt = " ".join(state["user_prompt"].split()).rstrip(",.;")
    pool = candidates(reactions, chain)
    choices, choice_channels = slot_choices(pool, user_prompt, checker)
    variables = {
        "emotion": emotion.value,
        "user_prompt": state["user_prompt"],
        "choices": format_choices(choices),
    }
    labels = chain_labels(chain) | choice_channels
    details: list[str] = []
    dropped: list[str] = []
    avoid: list[str] = []
    outcome: StageOutcome = "fallback"
    try:
        result = ctx.llm.call(
            ctx.prompts.get("tasks/consensus"),
            ConsensusReply,
            node="write_consensus",
            run_index=run,
            repair=ctx.prompts.get("tasks/repair_output"),
            variables=variables,
            json_schema=choices_schema(choices),
        )
    except LLMCallError as exc:
        trace = list(exc.trace)
        warnings.append(f"consensus failed ({exc}); composed the details from the personas and concepts")
    else:
        trace = list(result.trace)
        slots = [(d, c) for d, c in result.value.details() if d]
        details, dropped = usable_details([d for d, _ in slots], user_prompt, checker)
        avoid, _ = usable_details(result.value.avoid, "", checker)
        # A phrase the model wrote itself (a server that does not enforce the options) fills the channel
        # its slot asks for; an offered option keeps its own channel.
        labels |= {phrase_key(d): c for d, c in slots if c and phrase_key(d) not in labels}
        outcome = result.outcome
    added = top_up(details, user_prompt, reactions, chain, checker, labels, emotion)
    if added and outcome != "fallback":
        outcome = "topped_up"
        warnings.append(
            f"the consensus gave {len(details)} usable detail(s) over {len(channels_of(details, labels))} "
            f"channel(s); added {len(added)} from the personas and concepts"
        )
    if not details and not added:
        warnings.append("no usable visual detail from the consensus, the personas or the chain of concept")
    draft = ", ".join([user_prompt, *details, *added])
    trace.append(
        note(run, "write_consensus", f"{outcome}: kept {details}, added {added}, dropped {dropped}", outcome)
    )
    # The built-in phrases last: a phrase the run's own inputs also hold is theirs.
    lexicon = [
        Candidate(t, "lexicon", channel=c)
        for c, items in VISUAL[emotion].channel_items().items()
        for t in items
    ]
    phrases = [trace_phrase(d, [*pool, *lexicon], labels.get(phrase_key(d))) for d in [*details, *added]]
    return {
        "draft_prompt": draft,
        "prompt_phrases": phrases,
        "draft_negative": ", ".join(avoid) or NEGATIVE_HINT[emotion],
        "trace": trace,
        "warnings": warnings,
    }
