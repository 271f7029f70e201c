"""The depictability filter: the last step of the chain of concept.

A phrase survives only if a painter could paint it. It is dropped when it names a feeling instead of
showing it ("sadness", "feels lonely"), belongs to another sense ("distant thunder sound", "smell of rain"),
or is an abstraction with no look ("hope", "nostalgia", "the passage of time"). Deterministic on purpose:
it is the guard against the "expressive shortcut" (template-like, undepictable rewrites) and must not
depend on the same model it is guarding.
"""

from __future__ import annotations

import re

from ed_agents.anchors import STOPWORDS, words
from ed_agents.state import VISUAL_CHANNELS

# Emotion names and their common adjective/noun forms: stating the emotion is not showing it.
_EMOTION_WORDS = """amusement amused amusing funny awe awed awesome awestruck contentment content contented
    excitement excited exciting anger angry rage enraged furious fury disgust disgusted disgusting
    fear afraid scared fearful frightened terror terrified sadness sad sorrow sorrowful grief
    grieving unhappy happy happiness joy joyful joyous emotion emotions emotional feeling feelings
    feel feels felt mood moods""".split()
# Other senses: an image has no sound, smell, taste or temperature of its own.
_OTHER_SENSES = """sound sounds noise noisy silence silent quiet loud music musical melody song singing
    hum humming whisper whispers whispering echo echoes voice voices smell smells smelling scent scents odor
    odour aroma taste tastes flavor flavour""".split()
# Abstractions with no visual form.
_ABSTRACT = """hope hopes despair nostalgia nostalgic loneliness lonely memory memories longing meaning
    meaningless freedom destiny fate soul spirit essence idea ideas concept concepts thought
    thoughts atmosphere vibe vibes energy sense passage time eternity infinity truth justice""".split()

NON_DEPICTABLE = frozenset(_EMOTION_WORDS + _OTHER_SENSES + _ABSTRACT)
MAX_PHRASE_WORDS = 8


def is_depictable(phrase: str) -> bool:
    """Whether ``phrase`` names something visible (see the module docstring for the rules)."""
    ws = words(phrase)
    return (
        0 < len(ws) <= MAX_PHRASE_WORDS
        and not any(w in NON_DEPICTABLE for w in ws)
        and not is_degenerate(phrase)
        and any(len(w) >= 3 and w not in STOPWORDS for w in ws)  # "l", "a l": a cut-off token, no picture
    )


# A letter four times in a row, or a "word" longer than any English one a painter would use: a token loop
# inside one word ("iiiiiiiieeeee", "aaaaargh"), which the repeated-word check cannot see.
_STUTTER = re.compile(r"(\w)\1{3,}")
MAX_WORD_CHARS = 22
# Markdown and code debris ("the _*_*", "**bold**", "`x`", "a | b"): nothing a painter paints, and the
# text encoder would read the symbols as words.
_DEBRIS = re.compile(r"[*_#`~|<>{}\[\]\\=^]")


def is_degenerate(phrase: str) -> bool:
    """Whether ``phrase`` is a model's debris: a content word repeats ("red light red red", "foam foam"),
    one word stutters or runs on ("iiiiiiiiieeee"), or it holds markdown or code symbols ("the _*_*")."""
    if _DEBRIS.search(phrase):
        return True
    content = [w for w in words(phrase) if w not in STOPWORDS]
    if any(len(w) > MAX_WORD_CHARS or _STUTTER.search(w) for w in content):
        return True
    return len(set(content)) < len(content)


def filter_depictable(phrases: list[str]) -> tuple[list[str], list[str]]:
    """Split ``phrases`` into (kept, dropped), keeping order and removing duplicates."""
    kept: list[str] = []
    dropped: list[str] = []
    seen: set[str] = set()
    for phrase in phrases:
        clean = " ".join(phrase.split()).strip(" ,.;:")
        key = clean.lower()
        if not clean or key in seen:
            continue
        seen.add(key)
        (kept if is_depictable(clean) else dropped).append(clean)
    return kept, dropped


# Words of the channel names: an item made only of them names a channel instead of filling it (small
# models echo the schema's keys, e.g. "lighting, composition, expression_pose").
_CHANNEL_WORDS = frozenset(w for c in VISUAL_CHANNELS for w in c.split("_")) | {
    "materials",
    "colors",
    "colour",
}


def names_a_channel(item: str) -> bool:
    """Whether ``item`` only names a visual channel ("lighting", "color palette") instead of filling it."""
    content = [w for w in words(item.replace("_", " ")) if w not in STOPWORDS]
    return bool(content) and all(w in _CHANNEL_WORDS for w in content)
