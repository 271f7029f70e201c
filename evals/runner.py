"""Running a suite: this process's samples, concurrently, checkpointed, resumable; the last rank merges.

``run_suite`` never loads a model or reads Settings itself: the caller (``emodir eval run``, or a test)
injects the per-seed Context factory and the renderer, so the same code runs against the real LLM server
and tiny preset, or against fakes.

Resume: the samples that have an ok record in any sample file are skipped; failed and missing ones are run
(again). Interrupt (Ctrl-C, or any exception out of a worker): no new sample starts, the ones in flight
finish and are recorded, then the exception propagates. The last rank to finish (the one that sees every
planned sample recorded and no other rank still writing) merges the shards under a lock; see ``shards``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ed_agents.context import Context
from ed_agents.errors import InvalidInputError
from ed_common.atomic import write_json_atomic, write_text_atomic
from ed_common.text import short_repr
from evals.manifest import resumed_manifest
from evals.records import SampleRecord, SampleSpec
from evals.shards import (
    SampleWriter,
    Shard,
    best_records,
    check_fresh_out_dir,
    merge_lock,
    merge_samples,
    sample_files,
)
from evals.suite import Suite
from evals.systems import ContextFactory, run_sample
from graphs.emotion_director import build_graph

log = logging.getLogger(__name__)

OnSample = Callable[[SampleRecord], None]


@dataclass(frozen=True)
class RunOutcome:
    """What this process did, and whether the run as a whole is now complete and merged."""

    planned: int  # samples in the whole suite
    owned: int  # samples this process is responsible for
    skipped: int  # owned samples already recorded ok (resume)
    ran: int
    failed: int
    complete: bool  # every planned sample has a record (ok or error)
    merged: bool  # this process wrote the merged samples.jsonl


class LockedRenderer:
    """Serialises a renderer's calls: sample threads share one pipeline, whose scale and memory are global."""

    def __init__(self, renderer: Any) -> None:
        """Wrap ``renderer`` (``graphs.tool_node.Renderer``)."""
        self.inner = renderer
        self._lock = threading.Lock()

    def retrieve(self, prompt: str, emotion: str, *, top_k: int = 4, negative_vp: str = "none") -> Any:
        """The inner renderer's retrieval, one call at a time."""
        with self._lock:
            return self.inner.retrieve(prompt, emotion, top_k=top_k, negative_vp=negative_vp)

    def render(self, request: Any) -> Any:
        """The inner renderer's render, one call at a time."""
        with self._lock:
            return self.inner.render(request)


def prepare_out_dir(
    out: Path,
    suite: Suite,
    suite_path: Path | None,
    shard: Shard,
    resume: bool,
    identity: dict[str, Any] | None = None,
) -> None:
    """:func:`check_out_dir`, then create ``out`` (and ``images/``) and copy the suite into it."""
    check_out_dir(out, suite, suite_path, shard, resume, identity)
    _make_out_dir(out, suite_path, shard)


def check_out_dir(
    out: Path,
    suite: Suite,
    suite_path: Path | None,
    shard: Shard,
    resume: bool,
    identity: dict[str, Any] | None = None,
) -> None:
    """Refuse a used ``out`` without ``resume``; with it, refuse a directory that is not a run of ``suite``
    made with the settings ``identity`` (``suite.run_identity``; None = not checked), or whose sample files
    are damaged.

    Writes nothing, so a command calls it before any work starts.

    Raises:
        InvalidInputError: one line naming the directory and what to do.
    """
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; give a run directory")
    if not resume:
        check_fresh_out_dir(out, shard)
    elif not (out / "manifest.json").is_file() and not (out.is_dir() and sample_files(out)):
        # Nothing to continue: only a new or empty directory (or one a sibling shard just started) is fine.
        try:
            check_fresh_out_dir(out, shard)
        except InvalidInputError:
            if _only_a_start(out):
                return
            raise InvalidInputError(
                f"--resume: {out} is not an eval run (it holds files but no manifest.json or samples); "
                "choose a new or empty --out"
            ) from None
    else:
        if (out / "manifest.json").is_file():
            _check_same_run(out, suite, suite_path, identity)
        best_records(sample_files(out))  # a damaged sample file is refused now, not after the models load


def _check_same_run(
    out: Path, suite: Suite, suite_path: Path | None, identity: dict[str, Any] | None
) -> None:
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError:
        raise InvalidInputError(
            f"--resume: {out / 'manifest.json'} is damaged (not a JSON object), so whether the suite "
            "still matches cannot be checked; use a new --out"
        ) from None
    started = manifest.get("fingerprint")
    if started and started != suite.fingerprint():
        raise InvalidInputError(
            f"--resume: {suite_path or 'the suite'} no longer matches the run in {out} (its prompts, "
            "emotions, systems, seeds, images or settings changed); use a new --out"
        )
    before = manifest.get("identity")
    if identity is None or not isinstance(before, dict):
        return  # a manifest written before runs recorded their settings: the fingerprint is all there is
    # Only keys both know: a key a later version adds must not refuse the runs an earlier one made.
    changed = [
        _change(key, before[key], value)
        for key, value in identity.items()
        if key in before and before[key] != value
    ]
    if changed:
        raise InvalidInputError(
            f"--resume: the run in {out} was made with other settings ({'; '.join(changed)}); give the same "
            "flags, EMODIR_* variables and config, or use a new --out"
        )


def _change(key: str, old: Any, new: Any) -> str:
    if isinstance(old, dict) and isinstance(new, dict):  # e.g. prompt_files: id -> sha256
        names = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return f"{key}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''} changed"
    return f"{key} {short_repr(old)} -> {short_repr(new)}"


def _only_a_start(out: Path) -> bool:
    """``out`` holds only what a run writes before its manifest (killed in its first moment)."""
    if not out.is_dir():
        return False
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}  # a killed atomic write's temp
    images = out / "images"
    return names <= {"suite.yaml", "images"} and (not images.is_dir() or not any(images.iterdir()))


def _make_out_dir(out: Path, suite_path: Path | None, shard: Shard) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(exist_ok=True)
    if suite_path is not None and shard.rank == 0:
        # The suite as run, next to its results (report and resume need no path to the original).
        write_text_atomic(out / "suite.yaml", suite_path.read_text(encoding="utf-8"))


def _write_manifest(path: Path, manifest: dict[str, Any], resume: bool) -> None:
    if resume and path.is_file():
        manifest = resumed_manifest(json.loads(path.read_text(encoding="utf-8")), manifest)
    write_json_atomic(path, manifest)


def run_suite(
    suite: Suite,
    out: Path,
    *,
    context_factory: ContextFactory,
    renderer: Any = None,
    concurrency: int = 4,
    resume: bool = False,
    shard: Shard | None = None,
    manifest: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    suite_path: Path | None = None,
    on_sample: OnSample | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> RunOutcome:
    """Run this process's share of ``suite`` into ``out``.

    Args:
        suite: the validated suite.
        out: the run directory (created; must be new or empty unless ``resume``).
        context_factory: seed -> Context (see ``systems.make_context_factory``).
        renderer: a ``graphs.tool_node.Renderer``; required when the suite renders images.
        concurrency: samples in flight at once (threads).
        resume: continue a run in ``out``: skip samples recorded ok, redo failed and missing ones.
        shard: this process's rank and the process count (default: a single process).
        manifest: what to write as ``manifest.json`` (rank 0); the suite fingerprint and ``identity`` are
            added.
        identity: the effective settings that decide the samples (``suite.run_identity``): a resume with
            other values is refused. None: not recorded, not checked.
        suite_path: the suite file, copied into ``out`` as ``suite.yaml``.
        on_sample: called (from worker threads) with each record as it is written.
        on_start: called with (samples to run now, samples owned) before the first one starts.

    Raises:
        InvalidInputError: bad arguments or output directory (before anything runs).
        BaseException: an interrupt, after the samples in flight were recorded.
    """
    shard = shard or Shard()
    if concurrency < 1:
        raise InvalidInputError(f"--concurrency {concurrency}: allowed 1 or more")
    if suite.images_per_prompt and renderer is None:
        raise InvalidInputError(f"suite {suite.name!r} renders images but no renderer was given")
    prepare_out_dir(out, suite, suite_path, shard, resume, identity)
    if manifest is not None and shard.rank == 0:
        stamp = {
            "fingerprint": suite.fingerprint(),
            **({"identity": identity} if identity is not None else {}),
        }
        _write_manifest(out / "manifest.json", {**manifest, **stamp}, resume)

    plan = suite.plan()
    owned = [spec for i, spec in enumerate(plan) if shard.owns(i)]
    done = {sid for sid, r in best_records(sample_files(out)).items() if r.ok} if resume else set()
    todo = [spec for spec in owned if spec.id not in done]
    if on_start is not None:
        on_start(len(todo), len(owned))

    locked = LockedRenderer(renderer) if renderer is not None else None
    contexts: dict[int, Context] = {}
    for seed in {spec.seed for spec in todo}:
        ctx = context_factory(seed)
        contexts[seed] = dataclasses.replace(ctx, renderer=locked) if locked is not None else ctx
    graph = build_graph()  # compiled once; invoking a compiled graph from several threads is safe

    failed = 0
    with SampleWriter(out / shard.samples_file) as writer:

        def work(spec: SampleSpec) -> SampleRecord:
            record = run_sample(spec, suite, contexts[spec.seed], graph, out, rank=shard.rank)
            writer.write(record)
            if on_sample is not None:
                on_sample(record)
            return record

        failed = _run_all(work, todo, concurrency)

    return _finish(suite, out, plan, shard, len(owned), len(owned) - len(todo), len(todo), failed)


def _run_all(work: Callable[[SampleSpec], SampleRecord], todo: list[SampleSpec], concurrency: int) -> int:
    """Run ``work`` over ``todo`` with at most ``concurrency`` in flight; returns the failure count."""
    failed = 0
    pool = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="eval-sample")
    try:
        futures = [pool.submit(work, spec) for spec in todo]
        for future in cf.as_completed(futures):
            failed += not future.result().ok  # re-raises an interrupt raised inside a worker
    except BaseException:
        # Stop taking new samples, let those in flight finish and be recorded, then propagate.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return failed


def _finish(
    suite: Suite,
    out: Path,
    plan: list[SampleSpec],
    shard: Shard,
    owned: int,
    skipped: int,
    ran: int,
    failed: int,
) -> RunOutcome:
    # Every line of ours is on disk before we look at the others', so the last rank to get here sees all.
    ids = [spec.id for spec in plan]
    recorded = best_records(sample_files(out))
    complete = all(sid in recorded for sid in ids)
    merged = False
    if complete:
        with merge_lock(out) as acquired:
            if acquired:
                merge_samples(out, ids)
                merged = True
            else:
                log.info("another process is still writing to or merging %s; it will merge", out)
    return RunOutcome(len(plan), owned, skipped, ran, failed, complete, merged)
