"""``emodir pairs build``: render K candidates per (prompt, emotion) of a suite, score them, choose pairs.

Layout of a build directory::

    manifest.json            what decides the candidates (suite fingerprint, system, K, seed, model, scorers),
                             versions and git state; after selection also the counts and the selection rule
    candidates/<group>/      the group's K PNGs (and the renderer's contact sheet)
    groups/<group>.json      the group's candidates with their scores (written last: a group is done when
                             this file exists)
    pairs.jsonl              one pair per line: caption, emotion, winner, loser (paths relative to this
                             file, as ``emodir train dpo`` reads them) and the scores
    sheets/<prompt>.png      per prompt: rows = emotions, columns = candidates, W / L marking the pair

A group is rendered into a hidden temp directory, scored, renamed into ``candidates/`` and then recorded in
``groups/``; an interruption leaves at most a temp directory (removed by the next attempt of the same rank)
or an unrecorded candidates directory (redone), never a half-recorded group. Processes share a build like
``eval run`` does (``RANK``/``WORLD_SIZE``: group ``p`` belongs to rank ``p % world``); the process that
finds every group recorded selects the pairs (the selection is a pure function of the group files, so a
second selector writes the same bytes). Selection can be rerun with another rule without rendering
(``emodir pairs select``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ed_common.atomic import write_json_atomic, write_text_atomic
from ed_common.emotions import Emotion
from ed_common.errors import InvalidInputError
from ed_common.render_contract import Renderer, RenderRequest, checked
from evals.manifest import provenance
from evals.pair_select import (
    NUM_EMOTIONS,
    Candidate,
    ScoredGroup,
    Selection,
    SelectOptions,
    select_pairs,
)
from evals.shards import MERGE_LOCK, Shard, merge_lock
from evals.suite import Suite, SystemEntry

log = logging.getLogger(__name__)

PAIRS_VERSION = 1
MANIFEST = "manifest.json"
GROUPS = "groups"
CANDIDATES = "candidates"
PAIRS = "pairs.jsonl"
SHEETS = "sheets"
MAX_CANDIDATES = 64
SHEET_CELL = 96  # contact-sheet cells are at least this many pixels (world images are 32 px)
# The manifest keys a resume must repeat: they decide which images exist and what their scores mean.
IDENTITY_KEYS = (
    "pairs_version",
    "suite_fingerprint",
    "system",
    "candidates",
    "seed",
    "settings",
    "image_scoring",
)
# The settings that decide the images (the LLM's do not: plain systems call none).
PAIRS_SETTINGS = ("preset", "diffusion_model", "dtype")  # bank and adapter: by their hashes ("weights")
_SHARED = {MANIFEST, GROUPS, CANDIDATES, MERGE_LOCK}  # what sibling ranks of a fresh build may have made


class CandidateScorer(Protocol):
    """Scores rendered candidates: the 8 emotion probabilities (EmoSet order) and the content verdict."""

    def __call__(
        self, images: Sequence[Image.Image], contents: Sequence[str | None]
    ) -> list[tuple[tuple[float, ...], bool | None]]:
        """One ``(probs, content_ok)`` per image; ``content_ok`` is ``None`` when no content scorer runs."""
        ...


@dataclass(frozen=True)
class BuildSpec:
    """What decides a build's candidates.

    Attributes:
        suite: the suite (prompts x emotions, render settings, scorers).
        system: the suite's ``plain`` system the candidates are rendered with (template, visual prompts).
        candidates: K images per (prompt, emotion).
        seed: candidate k renders with seed ``seed + k`` in every group, so one prompt's groups share their
            starting noise (an ``other_emotion`` loser then differs from its winner in emotion only).
        batched: render a group's K images in one call (else one call per image; same images up to 1/255).
    """

    suite: Suite
    system: SystemEntry
    candidates: int = 4
    seed: int = 0
    batched: bool = True

    def __post_init__(self) -> None:
        """Check K, the seed and that the system needs no LLM."""
        k = self.candidates
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= MAX_CANDIDATES:
            raise InvalidInputError(f"--candidates {k!r}: allowed an integer from 2 to {MAX_CANDIDATES}")
        if self.system.kind != "plain":
            raise InvalidInputError(
                f"system {self.system.name!r} is {self.system.kind}; pairs build renders `plain` systems "
                "only (the prompt, or its template, as the caption)"
            )
        # The request validates the seed range (names the bound): fail here, before any model loads.
        self.request("x", "fear", Path("."), self.seed)

    def caption(self, prompt: str, emotion: Emotion) -> str:
        """The text the candidates are rendered from: the system's template, filled."""
        return (self.system.template or "{prompt}").format(prompt=prompt, emotion=emotion.value)

    def request(
        self, caption: str, emotion: Emotion | str, out_dir: Path, seed: int, n: int = 0
    ) -> RenderRequest:
        """The render request of ``n`` images (default K) from ``seed`` into ``out_dir``."""
        r, s = self.suite.render, self.system
        return checked(
            RenderRequest,
            prompt=caption,
            emotion=emotion,
            out_dir=out_dir,
            n_images=n or self.candidates,
            seed=seed,
            steps=r.steps,
            guidance=r.guidance,
            width=r.width,
            height=r.height,
            top_k=r.top_k,
            vp_scale=s.vp_scale if s.visual_prompts else 0.0,
            negative_vp=s.negative_vp if s.visual_prompts else "none",
        )


def pick_system(suite: Suite, name: str | None) -> SystemEntry:
    """The named system, or the suite's first ``plain`` one with visual prompts (else its first ``plain``).

    Raises:
        InvalidInputError: no such system, or no ``plain`` system in the suite.
    """
    if name is not None:
        try:
            return suite.system(name)
        except KeyError:
            names = ", ".join(s.name for s in suite.systems)
            raise InvalidInputError(
                f"--system {name!r}: suite {suite.name!r} has no such system ({names})"
            ) from None
    plain = [s for s in suite.systems if s.kind == "plain"]
    if plain:  # pairs train the adapter: the first system that renders with it (visual prompts on) wins
        return min(plain, key=lambda s: not s.visual_prompts)
    kinds = ", ".join(f"{s.name} ({s.kind})" for s in suite.systems)
    raise InvalidInputError(f"suite {suite.name!r} has no `plain` system to render candidates with ({kinds})")


def plan_groups(spec: BuildSpec) -> list[ScoredGroup]:
    """Every (prompt, emotion) of the suite as a group without candidates yet, in suite order."""
    groups = []
    for i, p in enumerate(spec.suite.prompts):
        for e in spec.suite.emotions_for(p):
            groups.append(
                ScoredGroup(
                    id=f"p{i:03d}-{e.value}",
                    prompt_index=i,
                    prompt=p.text,
                    caption=spec.caption(p.text, e),
                    content=p.content,
                    emotion=e,
                )
            )
    return groups


# ------------------------------------------------------------------------------------------ manifest
def build_manifest(
    spec: BuildSpec,
    suite_path: Path | None,
    *,
    settings: dict[str, Any],
    image_scoring: dict[str, Any],
    renderer: Any,
    shard: Shard,
) -> dict[str, Any]:
    """The manifest of a new build (JSON-able)."""
    describe = getattr(renderer, "describe", None)
    described = describe() if callable(describe) else None
    return {
        "pairs_version": PAIRS_VERSION,
        **provenance(suite_path),
        "suite_fingerprint": spec.suite.fingerprint(),
        "suite": spec.suite.model_dump(mode="json"),
        "system": spec.system.model_dump(mode="json"),
        "candidates": spec.candidates,
        "seed": spec.seed,
        "batched": spec.batched,
        "settings": settings,
        "image_scoring": image_scoring,
        "diffusion": described,
        "weights": None
        if described is None
        else {k: v for k, v in described.items() if k.endswith("sha256")},
        "processes": shard.world,
    }


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The build's manifest, or ``None`` when there is none.

    Raises:
        InvalidInputError: the file is not a JSON object.
    """
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{path}: not a readable manifest ({exc}); nothing was changed") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path}: not a build manifest (a JSON object); nothing was changed")
    return data


def _identity_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    changed = [k for k in IDENTITY_KEYS if old.get(k) != new.get(k)]
    # The weights by content, once both sides know them (the CLI checks before loading, then again after):
    # a retrained adapter at the same path must not mix with the old one's candidates.
    a, b = old.get("weights"), new.get("weights")
    if a is not None and b is not None and a != b:
        changed.append("bank/adapter weights")
    return changed


def check_out_dir(out: Path, manifest: dict[str, Any], shard: Shard, resume: bool) -> None:
    """Refuse an output directory this build may not write into.

    A fresh build needs a new or empty directory (on several processes, the shared files of *this* build's
    sibling ranks are allowed: a manifest there must agree); ``--resume`` needs the earlier build's manifest
    to agree on every :data:`IDENTITY_KEYS` value and on the weights' hashes.

    Raises:
        InvalidInputError: ``out`` is a file, holds something else, or the identity changes.
    """
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; give a new or empty directory")
    old = read_manifest(out) if out.is_dir() else None
    if old is not None and (resume or shard.world > 1):
        changed = _identity_changes(old, manifest)
        if changed:
            raise InvalidInputError(
                f"{out} was built with other {', '.join(changed)}; a build and its resume must repeat them "
                "(the candidates would mix), so choose a new --out"
            )
    if not out.is_dir() or (resume and old is not None):
        return
    # A fresh build, or a resume of a build no rank has started: only siblings' shared files may be there.
    allowed = _SHARED if shard.world > 1 else set()
    found = sorted(
        p.name
        for p in out.iterdir()
        if p.name not in allowed and not (shard.world > 1 and p.name.startswith("."))
    )
    if found:
        hint = "it is not a pairs build" if resume else "pass --resume to continue that build"
        raise InvalidInputError(
            f"--out {out} is not empty ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); "
            f"{hint}, or choose a new directory"
        )


# ------------------------------------------------------------------------------------------ groups
def group_file(out: Path, group_id: str) -> Path:
    """Where a finished group is recorded."""
    return out / GROUPS / f"{group_id}.json"


def read_groups(out: Path, planned: Sequence[ScoredGroup] | None = None) -> dict[str, ScoredGroup]:
    """The recorded groups of a build (only the planned ids when ``planned`` is given).

    Raises:
        InvalidInputError: a group file that is not a group record, or records another group than its name.
    """
    wanted = None if planned is None else {g.id for g in planned}
    found: dict[str, ScoredGroup] = {}
    for path in sorted((out / GROUPS).glob("*.json")):
        if wanted is not None and path.stem not in wanted:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(
                f"{path}: not a readable group record ({exc}); remove it to redo that group"
            ) from None
        group = ScoredGroup.from_json(data, str(path))
        if group.id != path.stem:
            raise InvalidInputError(f"{path}: records group {group.id!r}, not {path.stem!r}")
        found[group.id] = group
    return found


def _tmp_dir(out: Path, group_id: str, shard: Shard) -> Path:
    return out / CANDIDATES / f".{group_id}.rank{shard.rank}.tmp"


def _render_group(
    spec: BuildSpec, group: ScoredGroup, renderer: Renderer, scorer: CandidateScorer, out: Path, shard: Shard
) -> ScoredGroup:
    tmp = _tmp_dir(out, group.id, shard)
    final = out / CANDIDATES / group.id
    # Interrupted attempts (of any rank count) and a group renamed but never recorded are redone.
    for stale in [*(out / CANDIDATES).glob(f".{group.id}.rank*.tmp"), final]:
        if stale.exists():
            shutil.rmtree(stale)
    seeds = [spec.seed + k for k in range(spec.candidates)]
    if spec.batched:
        paths = list(renderer.render(spec.request(group.caption, group.emotion, tmp, spec.seed)).images)
    else:
        paths = [
            p
            for s in seeds
            for p in renderer.render(spec.request(group.caption, group.emotion, tmp, s, n=1)).images
        ]
    if len(paths) != spec.candidates or any(Path(p).parent != tmp for p in paths):
        raise InvalidInputError(
            f"the renderer returned {len(paths)} image(s) for {spec.candidates} candidates of {group.id}, "
            f"expected them all in {tmp}"
        )
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    scores = scorer(images, [group.content] * len(images))
    if len(scores) != len(images) or any(len(probs) != NUM_EMOTIONS for probs, _ in scores):
        raise InvalidInputError(
            f"the candidate scorer returned {len(scores)} rows for {len(images)} images (each must have "
            f"{NUM_EMOTIONS} probabilities)"
        )
    os.replace(tmp, final)
    candidates = tuple(
        Candidate(
            image=f"{CANDIDATES}/{group.id}/{Path(p).name}",
            seed=s,
            probs=tuple(round(float(x), 6) for x in probs),
            content_ok=ok,
        )
        for p, s, (probs, ok) in zip(paths, seeds, scores, strict=True)
    )
    done = dataclasses.replace(group, candidates=candidates)
    write_json_atomic(group_file(out, group.id), done.to_json(), default=None)
    return done


@dataclass(frozen=True)
class BuildOutcome:
    """What this process did, and whether the build is complete and its pairs chosen."""

    planned: int
    owned: int
    skipped: int  # owned groups already recorded (resume)
    rendered: int
    seconds: float  # rendering and scoring, this process
    selected: dict[str, Any] | None  # the selection summary when this process selected


def build_pairs(
    spec: BuildSpec,
    out: Path,
    *,
    renderer: Renderer,
    scorer: CandidateScorer,
    options: SelectOptions,
    manifest: dict[str, Any],
    shard: Shard | None = None,
    resume: bool = False,
    on_start: Callable[[int], None] | None = None,
    on_group: Callable[[ScoredGroup], None] | None = None,
) -> BuildOutcome:
    """Render and score this process's missing groups; select the pairs if the build is then complete.

    Raises:
        InvalidInputError: the output directory refuses this build (see :func:`check_out_dir`), or a group
            file is damaged.
    """
    shard = shard or Shard()
    check_out_dir(out, manifest, shard, resume)
    (out / GROUPS).mkdir(parents=True, exist_ok=True)
    (out / CANDIDATES).mkdir(parents=True, exist_ok=True)
    if shard.rank == 0 and read_manifest(out) is None:
        write_json_atomic(out / MANIFEST, manifest)
    planned = plan_groups(spec)
    done = read_groups(out, planned)
    owned = [g for p, g in enumerate(planned) if p % shard.world == shard.rank]
    todo = [g for g in owned if g.id not in done]
    if on_start is not None:
        on_start(len(todo))
    start = time.perf_counter()
    for group in todo:
        finished = _render_group(spec, group, renderer, scorer, out, shard)
        if on_group is not None:
            on_group(finished)
    seconds = time.perf_counter() - start
    selected = None
    # A resumed build with nothing left to do keeps the pairs it has (perhaps chosen by `pairs select`).
    fresh = bool(todo) or not (out / PAIRS).is_file()
    if fresh and len(read_groups(out, planned)) == len(planned):
        with merge_lock(out) as mine:
            if mine:
                selected = select_and_write(out, options)
    return BuildOutcome(len(planned), len(owned), len(owned) - len(todo), len(todo), seconds, selected)


def plan_groups_of_manifest(out: Path) -> list[str]:
    """The ids of the groups a build's manifest plans that are not recorded yet.

    Raises:
        InvalidInputError: no manifest, or one whose suite or system does not validate.
    """
    manifest = read_manifest(out)
    if manifest is None:
        raise InvalidInputError(f"{out} holds no {MANIFEST}; it is not a pairs build")
    try:
        suite = Suite.model_validate(manifest["suite"])
        system = SystemEntry.model_validate(manifest["system"])
        spec = BuildSpec(suite, system, int(manifest["candidates"]), int(manifest["seed"]))
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise InvalidInputError(f"{out / MANIFEST}: not a pairs-build manifest ({exc})") from None
    planned = plan_groups(spec)
    done = read_groups(out, planned)
    return [g.id for g in planned if g.id not in done]


# ------------------------------------------------------------------------------------------ selection
def select_and_write(out: Path, options: SelectOptions) -> dict[str, Any]:
    """Choose the pairs of a complete build; write ``pairs.jsonl``, the sheets and the manifest's result.

    Raises:
        InvalidInputError: no manifest, or groups missing (the build is not complete).
    """
    manifest = read_manifest(out)
    if manifest is None:
        raise InvalidInputError(f"{out} holds no {MANIFEST}; it is not a pairs build")
    groups = _ordered_groups(out)
    selection = select_pairs(groups, options)
    write_text_atomic(out / PAIRS, "".join(json.dumps(p.to_row()) + "\n" for p in selection.pairs))
    sheets = write_sheets(out, groups, selection)
    summary = {
        "groups": len(groups),
        "candidates": sum(len(g.candidates) for g in groups),
        "pairs": len(selection.pairs),
        "skipped": dict(sorted(selection.skipped.items())),
        "mean_margin": round(sum(p.margin for p in selection.pairs) / len(selection.pairs), 4)
        if selection.pairs
        else None,
        "pairs_file": PAIRS,
        "sheets": [str(s.relative_to(out)) for s in sheets],
        "selection": {"loser": options.loser, "min_margin": options.min_margin},
        "selected": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(out / MANIFEST, {**manifest, "result": summary})
    return summary


def _ordered_groups(out: Path) -> list[ScoredGroup]:
    groups = read_groups(out)
    if not groups:
        raise InvalidInputError(f"{out}: no recorded groups in {GROUPS}/; run `emodir pairs build` first")
    return sorted(groups.values(), key=lambda g: (g.prompt_index, g.emotion.label_index))


def _slug(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:40] or "prompt"


def write_sheets(out: Path, groups: Sequence[ScoredGroup], selection: Selection) -> list[Path]:
    """One contact sheet per prompt: a row per emotion, a column per candidate, the pair marked W / L."""
    from ed_diffusion.images import contact_sheet  # PIL only; no torch

    marks: dict[str, str] = {}  # "W", "L", or "WL" (an other_emotion winner may be another pair's loser)
    for p in selection.pairs:
        marks[p.winner.image] = "W" + marks.get(p.winner.image, "").replace("W", "")
    for p in selection.pairs:
        if "L" not in marks.get(p.loser.image, ""):
            marks[p.loser.image] = marks.get(p.loser.image, "") + "L"
    by_prompt: dict[int, list[ScoredGroup]] = {}
    for g in groups:
        by_prompt.setdefault(g.prompt_index, []).append(g)
    written = []
    for index, members in sorted(by_prompt.items()):
        images, labels = [], []
        for g in members:
            for c in g.candidates:
                with Image.open(out / c.image) as im:
                    images.append(im.convert("RGB"))
                guard = "" if c.content_ok is None else (" c" if c.content_ok else " x")
                mark = f" {marks[c.image]}" if c.image in marks else ""
                labels.append(f"{g.emotion.value[:5]} {c.prob(g.emotion):.2f}{guard}{mark}")
        sheet = contact_sheet(images, labels, cols=len(members[0].candidates), min_side=SHEET_CELL)
        path = out / SHEETS / f"{index:03d}-{_slug(members[0].prompt)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)  # a re-selection replaces its own sheet (derived from the group files)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------ scoring
class SuiteScorer:
    """The suite's ``image_scoring`` emotion classifier and content scorer, loaded once (needs torch).

    Raises (at construction, before any rendering):
        InvalidInputError: no emotion classifier configured, a prompt without the ``content`` the content
            scorer needs, or a content outside its vocabulary.
    """

    def __init__(self, suite: Suite) -> None:
        """Validate the section against the suite's prompts, then load the models."""
        from ed_diffusion.scoring import build_scorers
        from ed_diffusion.scoring.build import vocabulary_for
        from evals.aggregate import image_scoring_config

        config = image_scoring_config(suite.image_scoring)
        if config.emotion_classifier == "none":
            raise InvalidInputError(
                f"suite {suite.name!r}: pairs build needs image_scoring.emotion_classifier (world_oracle, "
                "clip_probe or clip_zero_shot) to rank the candidates"
            )
        prompts = suite.prompts
        vocabulary = vocabulary_for(
            [p.content for p in prompts], config, lambda i: f"prompt {prompts[i].text!r}"
        )
        if config.content_scorer == "none":
            log.warning("no content scorer: every candidate counts as keeping its content")
        self.config = config
        self.scorers = build_scorers(config, vocabulary)

    def __call__(
        self, images: Sequence[Image.Image], contents: Sequence[str | None]
    ) -> list[tuple[tuple[float, ...], bool | None]]:
        """Probabilities and content verdicts of ``images``, in batches of the section's ``batch_size``."""
        rows: list[tuple[tuple[float, ...], bool | None]] = []
        step = self.config.batch_size
        for start in range(0, len(images), step):
            batch, wanted = list(images[start : start + step]), list(contents[start : start + step])
            assert self.scorers.emotion is not None
            probs = self.scorers.emotion.probs(batch)  # [b, 8]
            hits: list[bool | None] = [None] * len(batch)
            if self.scorers.content is not None:
                hits = [bool(h) for h in self.scorers.content.matches(batch, [c or "" for c in wanted])]
            rows += [(tuple(float(x) for x in p), h) for p, h in zip(probs, hits, strict=True)]
        return rows
