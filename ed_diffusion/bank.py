"""MC-Diffusion's emotion visual-prompt bank: per-emotion K-means of CLIP text features, paired image centres.

``method.md`` §2 "Prompt bank" / "Retrieval": for each emotion e, K-means on the L2-normalised CLIP text
features of its captions gives L text centres F^t_e [L, d_t]; the same cluster labels average the paired image
features into visual centres F^v_e [L, d_v]. A prompt's CLIP text feature q_t retrieves the top-k clusters
of the target emotion by cosine, and their visual centres are the visual-prompt tokens. The negative visual
prompt for DPO (§3) comes from another emotion chosen by ``negative_emotion``.

This module holds data, not parameters: the learnable per-emotion bank and projector (``models/``) are
initialised from a ``VisualPromptBank``.

Decisions (see docs/design.md):
- An emotion with fewer samples (or fewer distinct captions) than ``clusters`` is an error, not a silently
  smaller L: every emotion then has exactly L real clusters, the tensors stay ``[E, L, d]`` with no padding
  or mask, and top-k is valid for every k <= L.
- Every emotion's K-means uses ``torch.Generator().manual_seed(seed)``, so one emotion's clustering does not
  depend on the others' and can be reproduced alone with ``kmeans(features, L, seed=seed)``.
- Clustering runs in float64 (ties and convergence do not flip with summation order); centres are stored
  float32.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ed_common.atomic import write_bytes_atomic
from ed_common.emotions import EMOTION_NAMES, Emotion, parse_emotion
from ed_common.errors import InvalidInputError
from ed_common.image_files import ImageReadError, read_rgb
from ed_diffusion.emotion_datasets import EmotionSample, dataset_fingerprint, group_by_emotion
from ed_diffusion.encoders import FeatureEncoders
from ed_diffusion.errors import BankError
from ed_diffusion.file_kinds import BANK_FORMAT, non_finite, wrong_kind

logger = logging.getLogger(__name__)

BANK_FORMAT_VERSION = 1
_TENSOR_NAMES = ("text_centres", "visual_centres", "counts")

NegativeStrategy = Literal["opposite", "confusable"]
NEGATIVE_STRATEGIES: tuple[str, ...] = get_args(NegativeStrategy)

ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------- K-means


class KMeansResult(NamedTuple):
    """Outcome of ``kmeans``.

    Attributes:
        centres: ``[k, d]`` float64 cluster means (not renormalised).
        labels: ``[N]`` int64 cluster index of each point; every cluster is non-empty.
        iterations: Lloyd iterations run.
        converged: whether the assignment stopped changing before ``max_iter``.
    """

    centres: Tensor
    labels: Tensor
    iterations: int
    converged: bool


def kmeans(x: Tensor, k: int, *, seed: int = 0, max_iter: int = 100) -> KMeansResult:
    """Deterministic K-means: k-means++ initialisation, then Lloyd iterations until the labels stop changing.

    Squared Euclidean distance, float64. An empty cluster is re-seeded with the point farthest from its
    centre (lowest index on ties) taken from a cluster of two or more points, so all k clusters end non-empty.

    Args:
        x: ``[N, d]`` points.
        k: number of clusters, 1 <= k <= number of distinct points.
        seed: seed of the ``torch.Generator`` that draws the k-means++ centres.
        max_iter: maximum Lloyd iterations (>= 1).

    Returns:
        The centres, labels, iteration count and convergence flag.

    Raises:
        InvalidInputError: ``x`` is not 2-D or not finite, ``max_iter`` < 1, or ``k`` is not in
            1..(number of distinct points).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise InvalidInputError(f"kmeans needs a non-empty [N, d] tensor, got shape {tuple(x.shape)}")
    if max_iter < 1:
        raise InvalidInputError(f"max_iter must be >= 1, got {max_iter}")
    x64 = x.detach().to("cpu", torch.float64)  # [N, d]
    if not torch.isfinite(x64).all():
        raise InvalidInputError("kmeans input has NaN or infinite values")
    distinct = torch.unique(x64, dim=0).shape[0]
    if not 1 <= k <= distinct:
        raise InvalidInputError(f"kmeans k={k} is not in 1..{distinct} (the number of distinct points)")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    centres = _kmeans_plus_plus(x64, k, gen)  # [k, d]
    labels = torch.full((x64.shape[0],), -1, dtype=torch.long)  # [N]
    converged = False
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        d2 = _sq_dists(x64, centres)  # [N, k]
        new = _fill_empty(d2, d2.argmin(dim=1), k)  # [N]
        if torch.equal(new, labels):
            converged = True
            break
        labels = new
        centres = _cluster_means(x64, labels, k)  # [k, d]
    return KMeansResult(centres=centres, labels=labels, iterations=iterations, converged=converged)


def _kmeans_plus_plus(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    n = x.shape[0]
    chosen = [int(torch.randint(n, (1,), generator=gen).item())]
    closest = (x - x[chosen[0]]).pow(2).sum(dim=1)  # [N]
    for _ in range(1, k):
        # Distinct points >= k (checked), so some unchosen point has closest > 0 and the weights are valid.
        nxt = int(torch.multinomial(closest / closest.sum(), 1, generator=gen).item())
        chosen.append(nxt)
        closest = torch.minimum(closest, (x - x[nxt]).pow(2).sum(dim=1))  # [N]
    return x[chosen].clone()  # [k, d]


def _sq_dists(x: Tensor, c: Tensor) -> Tensor:
    # ||x||² - 2 x·c + ||c||² avoids an [N, k, d] intermediate; float64 keeps the cancellation harmless.
    d2 = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ c.T + c.pow(2).sum(1)[None, :]  # [N, k]
    return d2.clamp_min_(0.0)


def _fill_empty(d2: Tensor, labels: Tensor, k: int) -> Tensor:
    labels = labels.clone()
    counts = torch.bincount(labels, minlength=k)  # [k]
    own = d2.gather(1, labels[:, None]).squeeze(1).clone()  # [N] distance to the own centre
    for j in torch.nonzero(counts == 0).flatten().tolist():
        donor_ok = counts[labels] > 1  # [N] never empty another cluster
        cand = torch.where(donor_ok, own, torch.full_like(own, -1.0))  # [N]
        i = int(cand.argmax().item())
        counts[labels[i]] -= 1
        labels[i] = j
        counts[j] += 1
        own[i] = 0.0
    return labels


def _cluster_means(x: Tensor, labels: Tensor, k: int) -> Tensor:
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x)  # [k, d]
    counts = torch.bincount(labels, minlength=k).clamp_min(1).to(x.dtype)  # [k]
    return sums / counts[:, None]  # [k, d]


# ---------------------------------------------------------------------- the bank


@dataclass(frozen=True)
class BankMetadata:
    """Provenance of a bank, stored in the safetensors header.

    Attributes:
        emotions: emotion names in tensor order (must equal ``ed_common.emotions`` order to load).
        clusters: L, clusters per emotion.
        d_t: text feature dim.
        d_v: visual feature dim.
        text_encoder: id/path of the CLIP text encoder.
        image_encoder: id/path of the image encoder.
        image_kind: ``"clip"`` or ``"dino"``.
        dataset_fingerprint: ``data.dataset_fingerprint`` of the samples.
        num_samples: samples clustered.
        seed: K-means seed.
        max_iter: K-means iteration cap.
        format_version: bank file format version.
    """

    emotions: tuple[str, ...]
    clusters: int
    d_t: int
    d_v: int
    text_encoder: str
    image_encoder: str
    image_kind: str
    dataset_fingerprint: str
    num_samples: int
    seed: int
    max_iter: int
    format_version: int = BANK_FORMAT_VERSION

    def resolved_against(self, folder: Path) -> BankMetadata:
        """Encoder ids recorded relative to the bank's folder (a bank shipped beside its encoders) as paths.

        A hub id (``openai/clip-vit-large-patch14``) stays as it is unless that folder exists beside the bank.
        """

        def resolve(value: str) -> str:
            beside = folder / value
            return str(beside) if value and not Path(value).is_absolute() and beside.is_dir() else value

        text, image = resolve(self.text_encoder), resolve(self.image_encoder)
        if (text, image) == (self.text_encoder, self.image_encoder):
            return self
        return replace(self, text_encoder=text, image_encoder=image)

    def to_header(self) -> dict[str, str]:
        """The safetensors metadata: ``format`` plus every field JSON-encoded (safetensors wants strings)."""
        header = {"format": BANK_FORMAT}
        header.update({k: json.dumps(v) for k, v in asdict(self).items()})
        return header

    @classmethod
    def from_header(cls, header: dict[str, str], where: str) -> BankMetadata:
        """Parse ``to_header`` output; ``where`` prefixes error messages.

        Raises:
            BankError: the header is not a bank's, has another format version, or misses/garbles a field.
        """
        if (hint := wrong_kind(header, BANK_FORMAT)) is not None:
            raise BankError(f"{where}: {hint}")
        if header.get("format") != BANK_FORMAT:
            raise BankError(
                f"{where}: not a visual-prompt bank (metadata format={header.get('format')!r}, "
                f"expected {BANK_FORMAT!r})"
            )
        values: dict[str, Any] = {}
        missing = []
        for f in fields(cls):
            if f.name not in header:
                missing.append(f.name)
                continue
            try:
                values[f.name] = json.loads(header[f.name])
            except json.JSONDecodeError:
                raise BankError(f"{where}: metadata field {f.name!r} is not valid JSON") from None
        if missing:
            raise BankError(f"{where}: metadata misses field(s) {', '.join(missing)}")
        if values["format_version"] != BANK_FORMAT_VERSION:
            raise BankError(
                f"{where}: bank format version {values['format_version']!r} is not supported "
                f"(this code reads {BANK_FORMAT_VERSION}); rebuild the bank"
            )
        values["emotions"] = tuple(values["emotions"])
        return cls(**values)


class Retrieval(NamedTuple):
    """Visual-prompt tokens retrieved for a batch of queries.

    Attributes:
        tokens: ``[B, k, d_v]`` visual centres of the retrieved clusters, best first.
        indices: ``[B, k]`` int64 cluster indices (within the emotion's L clusters).
        scores: ``[B, k]`` cosine similarities of the query to the retrieved text centres.
    """

    tokens: Tensor
    indices: Tensor
    scores: Tensor


class NegativeRetrieval(NamedTuple):
    """Tokens retrieved from each query's negative emotion (``VisualPromptBank.retrieve_negative``).

    Attributes:
        tokens: ``[B, k, d_v]``.
        indices: ``[B, k]`` cluster indices within each row's negative emotion.
        scores: ``[B, k]`` cosine similarities.
        emotions: the negative emotion of each row.
    """

    tokens: Tensor
    indices: Tensor
    scores: Tensor
    emotions: tuple[Emotion, ...]


class VisualPromptBank:
    """Per-emotion text and visual cluster centres, with retrieval by CLIP text feature.

    Attributes:
        text_centres: ``[E, L, d_t]`` float32, L2-normalised cluster means of the caption features.
        visual_centres: ``[E, L, d_v]`` float32 mean image feature of each cluster.
        counts: ``[E, L]`` int64 members per cluster.
        metadata: provenance (encoders, dims, L, emotion order, dataset fingerprint, seed, format version).
    """

    def __init__(
        self, text_centres: Tensor, visual_centres: Tensor, counts: Tensor, metadata: BankMetadata
    ) -> None:
        """Hold the tensors (on the CPU, contiguous) after checking them against ``metadata``.

        Raises:
            BankError: a shape, dtype or emotion set disagrees with the metadata or ``ed_common.emotions``.
        """
        _check_tensors(text_centres, visual_centres, counts, metadata, where="bank")
        self.text_centres = text_centres.detach().to("cpu", torch.float32).contiguous()
        self.visual_centres = visual_centres.detach().to("cpu", torch.float32).contiguous()
        self.counts = counts.detach().to("cpu", torch.int64).contiguous()
        self.metadata = metadata

    @property
    def clusters(self) -> int:
        """L, clusters per emotion."""
        return self.metadata.clusters

    @property
    def d_t(self) -> int:
        """Text feature dim."""
        return self.metadata.d_t

    @property
    def d_v(self) -> int:
        """Visual feature (token) dim."""
        return self.metadata.d_v

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the bank as safetensors with metadata, atomically (temp file in the same dir + os.replace).

        Returns:
            The written path.
        """
        from safetensors.torch import save

        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "text_centres": self.text_centres,
            "visual_centres": self.visual_centres,
            "counts": self.counts,
        }
        # A bank is small (E x L centres): serialise in memory, then one atomic write.
        return write_bytes_atomic(target, save(tensors, metadata=self.metadata.to_header()))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VisualPromptBank:
        """Read a bank written by ``save``.

        Raises:
            BankError: the file is missing, not safetensors, not a bank, of another format version, built for
                another emotion set or order, or misses a tensor; the one-line message names the file.
        """
        from safetensors import SafetensorError, safe_open

        p = Path(path).expanduser()
        if p.is_dir():
            raise BankError(
                f"{p} is a directory; expected a bank file (.safetensors written by `emodir bank build`)"
            )
        if not p.exists():
            raise BankError(f"bank file {p} does not exist")
        if not p.is_file():
            raise BankError(f"{p} is not a regular file; expected a bank file (.safetensors)")
        try:
            with safe_open(str(p), framework="pt", device="cpu") as fh:
                header = fh.metadata() or {}
                names = set(fh.keys())
                missing = [n for n in _TENSOR_NAMES if n not in names]
                metadata = BankMetadata.from_header(header, str(p)).resolved_against(p.resolve().parent)
                if missing:
                    raise BankError(
                        f"{p}: missing tensor(s) {', '.join(missing)}; a bank has {', '.join(_TENSOR_NAMES)}"
                    )
                tensors = {n: fh.get_tensor(n) for n in _TENSOR_NAMES}
        except BankError:
            raise
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            detail = " ".join(str(exc).split())[:200]
            raise BankError(f"{p}: not a readable safetensors bank ({type(exc).__name__}: {detail})") from exc
        _check_tensors(
            tensors["text_centres"], tensors["visual_centres"], tensors["counts"], metadata, str(p)
        )
        return cls(tensors["text_centres"], tensors["visual_centres"], tensors["counts"], metadata)

    # ------------------------------------------------------------------ retrieval

    def retrieve(self, query: Tensor, emotion: Emotion | str, k: int = 4) -> Retrieval:
        """Top-k clusters of ``emotion`` by cosine between ``query`` and the emotion's text centres.

        Args:
            query: CLIP text feature(s) ``[d_t]`` or ``[B, d_t]`` (normalised here; any dtype/device).
            emotion: the target emotion.
            k: clusters to retrieve, 1..L.

        Returns:
            ``Retrieval`` with a batch dim (B = 1 for a 1-D query), on the query's device.

        Raises:
            InvalidInputError: bad query shape, ``k`` out of range, or an unknown emotion.
        """
        q = self._queries(query)  # [B, d_t]
        self._check_k(k)
        e = torch.full((q.shape[0],), parse_emotion(emotion).label_index, dtype=torch.long, device=q.device)
        return self._top_k(q, e, k)

    def negative_emotion(
        self, emotion: Emotion | str, query: Tensor, strategy: NegativeStrategy = "opposite"
    ) -> Emotion:
        """The emotion whose visual prompt contrasts with ``emotion`` for this (single) query.

        Similarity of an emotion to the query is the mean cosine of the query to its L text centres (each
        cluster counts once, so a big cluster of generic captions does not dominate). ``"opposite"``: the most
        similar emotion of the other polarity, i.e. the hardest negative across valence; ``"confusable"``: the
        most similar other emotion, polarity regardless.

        Args:
            emotion: the target (positive-prompt) emotion.
            query: one CLIP text feature, ``[d_t]`` or ``[1, d_t]``.
            strategy: ``"opposite"`` or ``"confusable"``.

        Raises:
            InvalidInputError: a batch of several queries (use ``negative_emotions``), bad shape or strategy.
        """
        q = self._queries(query)  # [B, d_t]
        if q.shape[0] != 1:
            raise InvalidInputError(
                f"negative_emotion takes one query, got {q.shape[0]}; use negative_emotions"
            )
        return self.negative_emotions(emotion, q, strategy)[0]

    def negative_emotions(
        self, emotion: Emotion | str, query: Tensor, strategy: NegativeStrategy = "opposite"
    ) -> tuple[Emotion, ...]:
        """``negative_emotion`` for each row of a ``[B, d_t]`` (or ``[d_t]``) query."""
        q = self._queries(query)  # [B, d_t]
        return tuple(
            Emotion.from_index(int(i)) for i in self._negative_indices(q, parse_emotion(emotion), strategy)
        )

    def retrieve_negative(
        self, query: Tensor, emotion: Emotion | str, k: int = 4, strategy: NegativeStrategy = "opposite"
    ) -> NegativeRetrieval:
        """Retrieve top-k tokens from each query's negative emotion (see ``negative_emotion``).

        Raises:
            InvalidInputError: bad query shape, ``k``, emotion or strategy.
        """
        q = self._queries(query)  # [B, d_t]
        self._check_k(k)
        neg = self._negative_indices(q, parse_emotion(emotion), strategy)  # [B]
        tokens, indices, scores = self._top_k(q, neg, k)
        return NegativeRetrieval(tokens, indices, scores, tuple(Emotion.from_index(int(i)) for i in neg))

    def _queries(self, query: Tensor) -> Tensor:
        if query.ndim not in (1, 2) or query.shape[-1] != self.d_t:
            raise InvalidInputError(
                f"query must be [d_t] or [B, d_t] with d_t={self.d_t} (bank text encoder "
                f"{self.metadata.text_encoder!r}), got shape {tuple(query.shape)}"
            )
        q = query.detach().float().reshape(-1, self.d_t)  # [B, d_t]
        return F.normalize(q, dim=-1)  # [B, d_t]

    def _check_k(self, k: int) -> None:
        if not 1 <= k <= self.clusters:
            raise InvalidInputError(
                f"k={k} is out of range; allowed: 1..{self.clusters} (the bank's clusters)"
            )

    def _all_scores(self, q: Tensor) -> Tensor:
        text = self.text_centres.to(q.device)  # [E, L, d_t]
        return torch.einsum("bd,eld->bel", q, text)  # [B, E, L]

    def _top_k(self, q: Tensor, emotion_idx: Tensor, k: int) -> Retrieval:
        rows = torch.arange(q.shape[0], device=q.device)  # [B]
        scores_all = self._all_scores(q)[rows, emotion_idx]  # [B, L]
        scores, indices = scores_all.topk(k, dim=-1)  # [B, k], [B, k]
        visual = self.visual_centres.to(q.device)  # [E, L, d_v]
        tokens = visual[emotion_idx[:, None], indices]  # [B, k, d_v]
        return Retrieval(tokens, indices, scores)

    def _negative_indices(self, q: Tensor, emotion: Emotion, strategy: str) -> Tensor:
        if strategy not in NEGATIVE_STRATEGIES:
            raise InvalidInputError(
                f"unknown negative strategy {strategy!r}; allowed: {', '.join(NEGATIVE_STRATEGIES)}"
            )
        similarity = self._all_scores(q).mean(dim=-1)  # [B, E]
        if strategy == "opposite":
            allowed = [e.polarity != emotion.polarity for e in Emotion]
        else:
            allowed = [e != emotion for e in Emotion]
        mask = torch.tensor(allowed, device=q.device)  # [E]
        return similarity.masked_fill(~mask, float("-inf")).argmax(dim=-1)  # [B]

    # ------------------------------------------------------------------ reporting

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable description (for ``emodir bank show``)."""
        meta = asdict(self.metadata)
        meta["emotions"] = list(self.metadata.emotions)
        per_emotion = {
            name: {
                "samples": int(self.counts[i].sum()),
                "smallest_cluster": int(self.counts[i].min()),
                "largest_cluster": int(self.counts[i].max()),
            }
            for i, name in enumerate(self.metadata.emotions)
        }
        return meta | {"per_emotion": per_emotion}

    def check_compatible(self, d_v_expected: int, d_t_expected: int | None = None) -> None:
        """Check the bank's dims against a consumer (projector input dim, retrieval text encoder).

        Raises:
            BankError: a dim differs; the message names both.
        """
        if d_v_expected != self.d_v:
            raise BankError(
                f"bank visual dim d_v={self.d_v} (image encoder {self.metadata.image_encoder!r}) does not "
                f"match the expected d_v={d_v_expected}; rebuild the bank or change the input dim"
            )
        if d_t_expected is not None and d_t_expected != self.d_t:
            raise BankError(
                f"bank text dim d_t={self.d_t} (text encoder {self.metadata.text_encoder!r}) does not "
                f"match the expected d_t={d_t_expected}; retrieve with the bank's text encoder"
            )


def _check_tensors(text: Tensor, visual: Tensor, counts: Tensor, meta: BankMetadata, where: str) -> None:
    if meta.emotions != EMOTION_NAMES:
        raise BankError(
            f"{where}: built for emotions [{', '.join(meta.emotions)}], but ed_common.emotions is "
            f"[{', '.join(EMOTION_NAMES)}] (set and order must match); rebuild the bank"
        )
    e, n_l = len(meta.emotions), meta.clusters
    expected = {
        "text_centres": (text, (e, n_l, meta.d_t)),
        "visual_centres": (visual, (e, n_l, meta.d_v)),
        "counts": (counts, (e, n_l)),
    }
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise BankError(f"{where}: tensor {name} has shape {tuple(tensor.shape)}, metadata says {shape}")
    if not text.is_floating_point() or not visual.is_floating_point() or counts.is_floating_point():
        raise BankError(
            f"{where}: centres must be floating point and counts integer, got {text.dtype}, "
            f"{visual.dtype}, {counts.dtype}"
        )
    if (bad := non_finite({"text_centres": text, "visual_centres": visual})) is not None:
        raise BankError(f"{where}: {bad}; the bank is damaged, rebuild it (`emodir bank build`)")


# ---------------------------------------------------------------------- building


def encode_samples(
    samples: Sequence[EmotionSample],
    encoders: FeatureEncoders,
    *,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
) -> tuple[Tensor, Tensor]:
    """Text and image features of every sample, in order.

    Args:
        samples: image-text pairs.
        encoders: the feature encoders.
        batch_size: samples per forward pass.
        progress: called as ``progress(done, total)`` after each batch.

    Returns:
        ``([N, d_t]`` L2-normalised text features, ``[N, d_v]`` image features).

    Raises:
        BankError: an image cannot be decoded.
    """
    total = len(samples)
    text_chunks: list[Tensor] = []
    image_chunks: list[Tensor] = []
    for start in range(0, total, batch_size):
        batch = samples[start : start + batch_size]
        images = [_open_rgb(s.image_path) for s in batch]
        text_chunks.append(
            encoders.encode_text([s.caption for s in batch], batch_size=batch_size)
        )  # [b, d_t]
        image_chunks.append(encoders.encode_images(images, batch_size=batch_size))  # [b, d_v]
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return torch.cat(text_chunks), torch.cat(image_chunks)  # [N, d_t], [N, d_v]


def cluster_centres(
    text_feats: Tensor,
    image_feats: Tensor,
    groups: Mapping[Emotion, Sequence[int] | Tensor],
    *,
    clusters: int,
    seed: int,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per emotion, K-means over its members' text features (``groups``: row indices per emotion).

    Text centre = normalised mean of the members' text features; visual centre = mean of their image
    features; count = members. Shared by ``build_bank`` (CLIP image features) and the synthetic world's bank
    (style features).

    Returns:
        ``text_centres [E, L, d_t]``, ``visual_centres [E, L, d_v]``, ``counts [E, L]``.

    Raises:
        BankError: an emotion K-means cannot cluster (e.g. fewer members than ``clusters``).
    """
    n_e = len(Emotion)
    text_c = torch.empty(n_e, clusters, text_feats.shape[1])  # [E, L, d_t]
    visual_c = torch.empty(n_e, clusters, image_feats.shape[1])  # [E, L, d_v]
    counts = torch.empty(n_e, clusters, dtype=torch.long)  # [E, L]
    for e, idx in groups.items():
        members = torch.as_tensor(idx, dtype=torch.long)  # [N_e]
        try:
            result = kmeans(text_feats[members], clusters, seed=seed, max_iter=max_iter)
        except InvalidInputError as exc:
            raise BankError(f"cannot cluster emotion {e.value!r}: {exc}") from exc
        if not result.converged:
            logger.warning("K-means for %s did not converge in %d iterations", e.value, max_iter)
        for j in range(clusters):
            sel = members[result.labels == j]  # [n_j]
            text_c[e.label_index, j] = F.normalize(text_feats[sel].mean(dim=0), dim=-1)  # [d_t]
            visual_c[e.label_index, j] = image_feats[sel].mean(dim=0)  # [d_v]
            counts[e.label_index, j] = sel.numel()
    return text_c, visual_c, counts


def build_bank(
    samples: Sequence[EmotionSample],
    encoders: FeatureEncoders,
    *,
    clusters: int = 16,
    seed: int = 0,
    batch_size: int = 32,
    max_iter: int = 100,
    progress: ProgressFn | None = None,
) -> VisualPromptBank:
    """Encode the samples and cluster each emotion's text features into ``clusters`` centres.

    Text centre = normalised mean of the members' (normalised) text features; visual centre = mean of the
    members' image features; count = members. Deterministic for a seed (same samples, encoders, batch size).

    Args:
        samples: image-text pairs covering every emotion.
        encoders: CLIP text + image encoders.
        clusters: L, clusters per emotion (the official code's ``prompt_len`` is 16).
        seed: K-means++ seed (the same for every emotion).
        batch_size: samples per encoder forward pass.
        max_iter: Lloyd iteration cap.
        progress: ``progress(done, total)`` over encoded samples.

    Returns:
        The bank, tensors on the CPU.

    Raises:
        InvalidInputError: ``clusters`` or ``batch_size`` < 1.
        BankError: no samples, an emotion with fewer samples or distinct captions than ``clusters``, or an
            undecodable image.
    """
    if clusters < 1:
        raise InvalidInputError(f"clusters must be >= 1, got {clusters}")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
    if not samples:
        raise BankError("cannot build a bank from 0 samples")
    check_cluster_sizes(samples, clusters)
    groups = group_by_emotion(samples)
    text_feats, image_feats = encode_samples(samples, encoders, batch_size=batch_size, progress=progress)
    text_c, visual_c, counts = cluster_centres(
        text_feats, image_feats, groups, clusters=clusters, seed=seed, max_iter=max_iter
    )
    metadata = BankMetadata(
        emotions=EMOTION_NAMES,
        clusters=clusters,
        d_t=encoders.d_t,
        d_v=encoders.d_v,
        text_encoder=encoders.text_id,
        image_encoder=encoders.image_id,
        image_kind=encoders.kind,
        dataset_fingerprint=dataset_fingerprint(samples),
        num_samples=len(samples),
        seed=seed,
        max_iter=max_iter,
    )
    return VisualPromptBank(text_c, visual_c, counts, metadata)


def check_cluster_sizes(samples: Sequence[EmotionSample], clusters: int) -> None:
    """Refuse, before any encoder runs, an emotion that cannot fill ``clusters`` clusters.

    K-means needs at least ``clusters`` distinct points per emotion; identical captions give identical text
    features, so distinct captions are what counts (a sample count alone would pass and fail in K-means).

    Raises:
        BankError: an emotion without samples, or with fewer distinct captions than ``clusters`` (the
            message gives the largest ``clusters`` the samples allow).
    """
    groups = group_by_emotion(samples)
    empty = [e.value for e, idx in groups.items() if not idx]
    if empty:
        raise BankError(
            f"no samples of emotion(s) {', '.join(empty)}; every emotion needs at least clusters={clusters} "
            "samples with distinct captions: add samples of them"
        )
    distinct = {e: len({samples[i].caption for i in idx}) for e, idx in groups.items()}
    short = {e: n for e, n in distinct.items() if n < clusters}
    if short:
        listing = ", ".join(
            f"{e.value}={len(groups[e])}" + (f" ({n} distinct captions)" if n < len(groups[e]) else "")
            for e, n in short.items()
        )
        largest = min(distinct.values())
        raise BankError(
            f"too few samples for clusters={clusters}: {listing}; allowed: clusters <= {largest} (the "
            "fewest distinct captions of an emotion), or add samples"
        )


def _open_rgb(path: Path) -> Image.Image:
    try:
        return read_rgb(path)
    except ImageReadError as exc:
        raise BankError(str(exc)) from None
