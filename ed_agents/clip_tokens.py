"""Count (and truncate to) CLIP text-encoder tokens without torch.

The diffusion side feeds prompts to a CLIP text encoder whose context is 77 tokens (BOS + 75 content tokens +
EOS); anything past that is silently cut off. The agent side runs in a venv without torch, so it cannot use
``open_clip`` or ``transformers`` to measure prompts. This module re-implements the CLIP byte-level BPE in
pure Python on top of the real CLIP vocabulary file, which this package ships (``ed_agents/data``).
"""

from __future__ import annotations

import functools
import gzip
import html
import itertools
import re
from pathlib import Path

import regex

from ed_common.byte_alphabet import bytes_to_unicode
from ed_common.errors import EmodirError

__all__ = [
    "CLIP_CONTENT_TOKENS",
    "CLIP_CONTEXT_LENGTH",
    "ClipTokenCounter",
    "ClipVocabMissingError",
    "default_counter",
    "default_vocab_path",
]

CLIP_CONTEXT_LENGTH = 77
"""Tokens the CLIP text encoder sees, including BOS and EOS."""

CLIP_CONTENT_TOKENS = 75
"""Tokens left for the prompt itself once BOS and EOS are placed."""

_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
_REINSTALL = "reinstall emotion-director (the file ships in its wheel)"

# The vocab file is a list of merges; CLIP uses exactly the first 49152 - 256 - 2 of them (after the header
# line), so that 256 bytes + 256 end-of-word bytes + merges + 2 specials = 49408 ids.
_N_MERGES = 49152 - 256 - 2

_SPECIAL_TOKENS = ("<start_of_text>", "<end_of_text>")

# Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
_PRETOKENIZE = regex.compile(
    "|".join(_SPECIAL_TOKENS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)

_WORD = re.compile(r"\S+")


class ClipVocabMissingError(EmodirError):
    """The CLIP BPE vocabulary file (shipped in ``ed_agents/data``) is missing or unreadable."""


def default_vocab_path() -> Path:
    """Return the CLIP BPE vocabulary shipped with this package (``ed_agents/data``).

    The file is OpenAI CLIP's ``bpe_simple_vocab_16e6.txt.gz`` as the ``open-clip-torch`` wheel ships it (MIT,
    ``ed_agents/data/LICENSE-open_clip``). It is ours to ship because that wheel cannot be a dependency: it
    requires torchvision, which breaks the pinned CPU torch (docs/design.md).
    """
    return Path(__file__).resolve().parent / "data" / _VOCAB_FILE


# Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
def _get_pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    """Return the set of adjacent symbol pairs in ``word``."""
    return set(itertools.pairwise(word))


# Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
def _clean(text: str) -> str:
    """Normalise text the way CLIP's default 'lower' cleaner does.

    open_clip also runs ``ftfy.fix_text`` first; it is left out here to avoid the dependency, so mojibake that
    ftfy would repair may count slightly differently. For ordinary prompts the result is identical.
    """
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).lower()


@functools.cache
def _load_vocab(path: Path) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """Read the merges file once per process and build the token->id and merge->rank tables.

    Args:
        path: The gzipped merges file.

    Returns:
        ``(encoder, bpe_ranks)``.

    Raises:
        ClipVocabMissingError: The file does not exist or cannot be read.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except OSError as exc:
        raise ClipVocabMissingError(
            f"cannot read the CLIP tokenizer vocabulary at {path} ({exc}); {_REINSTALL}"
        ) from exc
    # Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
    merges: list[tuple[str, str]] = []
    for line in lines[1 : _N_MERGES + 1]:
        first, second = line.split()
        merges.append((first, second))
    byte_symbols = list(bytes_to_unicode().values())
    vocab = byte_symbols + [s + "</w>" for s in byte_symbols]
    vocab.extend(a + b for a, b in merges)
    vocab.extend(_SPECIAL_TOKENS)
    encoder = {tok: i for i, tok in enumerate(vocab)}
    bpe_ranks = {pair: i for i, pair in enumerate(merges)}
    return encoder, bpe_ranks


class ClipTokenCounter:
    """Counts CLIP text-encoder tokens exactly as open_clip's ``SimpleTokenizer`` (clean='lower') would.

    Only content tokens are counted: BOS/EOS are never included, so a prompt fits the encoder when
    ``count(prompt) <= CLIP_CONTENT_TOKENS``.
    """

    def __init__(self, vocab_path: Path | None = None) -> None:
        """Load the BPE vocabulary.

        Args:
            vocab_path: The gzipped CLIP merges file; default: the shipped one (``default_vocab_path``).

        Raises:
            ClipVocabMissingError: The file is missing or unreadable.
        """
        path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
        if not path.is_file():
            raise ClipVocabMissingError(
                f"the CLIP tokenizer vocabulary is missing: {path} does not exist; {_REINSTALL}"
            )
        self.vocab_path = path
        self._encoder, self._bpe_ranks = _load_vocab(path.resolve())
        self._byte_encoder = bytes_to_unicode()
        self._cache: dict[str, tuple[str, ...]] = {t: (t,) for t in _SPECIAL_TOKENS}

    # Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
    def _bpe(self, token: str) -> tuple[str, ...]:
        """Split one byte-encoded pre-token into BPE symbols (the last one carries ``</w>``)."""
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = _get_pairs(word)
        if not pairs:
            return (token + "</w>",)
        ranks = self._bpe_ranks
        inf = len(ranks)  # larger than any real rank: "not a merge"
        while True:
            bigram = min(pairs, key=lambda pair: ranks.get(pair, inf))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _get_pairs(word)
        self._cache[token] = word
        return word

    # Adapted from open_clip.tokenizer.SimpleTokenizer (open-clip-torch 3.3.0)
    def encode(self, text: str) -> list[int]:
        """Tokenize ``text`` into CLIP content token ids.

        Args:
            text: Any text; it is cleaned (HTML entities, whitespace, lowercase) like CLIP does.

        Returns:
            The token ids without BOS/EOS and without truncation.
        """
        ids: list[int] = []
        for piece in _PRETOKENIZE.findall(_clean(text)):
            byte_piece = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[sym] for sym in self._bpe(byte_piece))
        return ids

    def count(self, text: str) -> int:
        """Return how many content tokens ``text`` takes (BOS/EOS not included)."""
        return len(self.encode(text))

    def fits(self, text: str, budget: int = CLIP_CONTENT_TOKENS) -> bool:
        """Return whether ``text`` takes at most ``budget`` content tokens."""
        return self.count(text) <= budget

    def truncate(self, text: str, budget: int = CLIP_CONTENT_TOKENS) -> str:
        """Cut ``text`` to the longest prefix of whole words that fits ``budget`` content tokens.

        Args:
            text: The text to shorten; returned unchanged when it already fits.
            budget: The maximum number of content tokens.

        Returns:
            A prefix of ``text`` (original casing and spacing kept) ending at a word boundary; empty when even
            the first word is over budget.
        """
        if self.count(text) <= budget:
            return text
        # CLIP's pre-tokens never span whitespace, so the count is additive over whitespace-separated words:
        # a running sum finds the cut in one pass instead of re-encoding every prefix.
        ends: list[int] = []
        total = 0
        for match in _WORD.finditer(text):
            total += self.count(match.group())
            if total > budget:
                break
            ends.append(match.end())
        # Safety net in case some cleaning step ever breaks additivity: drop words until it really fits.
        while ends and self.count(text[: ends[-1]]) > budget:
            ends.pop()
        return text[: ends[-1]] if ends else ""


@functools.cache
def default_counter() -> ClipTokenCounter:
    """Return the process-wide counter over the shipped vocabulary (loaded on first use)."""
    return ClipTokenCounter()
