"""Sample files: which process runs which samples, checkpointed JSON lines, and merging the shards.

Processes coordinate through files only, no process group: under ``accelerate launch`` (or any launcher that
sets ``RANK``/``WORLD_SIZE``) process ``r`` of ``w`` runs the samples at plan positions ``p % w == r`` and
appends them to ``samples.rank{r}.jsonl``; a single process appends to ``samples.jsonl``. Each line is
written with one ``write`` and ``fsync``ed, so a kill loses at most the line being written; a torn last line
is cut off before appending again and ignored when reading. ``samples.jsonl`` after a merge is the union of
every sample file, one record per id (ok beats error, then the later one), in plan order.

A merge replaces ``samples.jsonl`` by rename, so it must never run while a process appends: a single
process appends to that very file, and its open descriptor would keep writing into the replaced (unlinked)
one. So every open ``SampleWriter`` holds a shared ``flock`` on ``.merge.lock`` and a merge needs the
exclusive one: while any process of the run is still writing, nobody merges (``eval report`` only reads).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ed_common.atomic import write_text_atomic
from ed_common.errors import InvalidInputError
from evals.records import SampleRecord

log = logging.getLogger(__name__)

SAMPLES = "samples.jsonl"
MERGE_LOCK = ".merge.lock"
# What other ranks of the same multi-process run may already have created when this rank starts.
_SHARED_FILES = {"manifest.json", "suite.yaml", "images", MERGE_LOCK}


@dataclass(frozen=True)
class Shard:
    """This process's part of a run."""

    rank: int = 0
    world: int = 1

    def owns(self, position: int) -> bool:
        """Whether the sample at this plan position is ours."""
        return position % self.world == self.rank

    @property
    def samples_file(self) -> str:
        """The file this process appends to."""
        return SAMPLES if self.world == 1 else f"samples.rank{self.rank}.jsonl"


def detect_shard(env: Mapping[str, str] | None = None) -> Shard:
    """``RANK``/``WORLD_SIZE`` as set by ``accelerate launch`` / ``torchrun``; a single process otherwise.

    Raises:
        InvalidInputError: values that are not integers with ``0 <= RANK < WORLD_SIZE``.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return Shard()
    raw_rank, raw_world = env.get("RANK", "0"), env.get("WORLD_SIZE", "1")
    try:
        rank, world = int(raw_rank), int(raw_world)
    except ValueError:
        rank, world = -1, 0
    if not (world >= 1 and 0 <= rank < world):
        raise InvalidInputError(
            f"RANK={raw_rank!r} WORLD_SIZE={raw_world!r}: allowed integers with 0 <= RANK < WORLD_SIZE"
        )
    return Shard(rank, world)


def rank_device(device: str | None, local_rank: str | None, cuda_available: bool) -> str | None:
    """This process's device: one GPU per local rank (``cuda:<LOCAL_RANK>``) unless a device was set."""
    if device not in (None, "cuda") or local_rank is None or not cuda_available:
        return device
    if not local_rank.strip().isdecimal():
        raise InvalidInputError(f"LOCAL_RANK={local_rank!r}; allowed: an integer >= 0")
    return f"cuda:{int(local_rank)}"


def check_fresh_out_dir(out: Path, shard: Shard) -> None:
    """Refuse an output directory that holds an earlier run (only ``--resume`` may continue one).

    Raises:
        InvalidInputError: ``out`` is a file, or holds files this run did not just create.
    """
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"--out {out} is a file; give a new or empty directory")
    if not out.is_dir():
        return
    allowed: set[str] = set()
    if shard.world > 1:
        others = {f"samples.rank{j}.jsonl" for j in range(shard.world) if j != shard.rank}
        allowed = _SHARED_FILES | others
    # Siblings' atomic writes pass through hidden temp files (".suite.yaml.x1y2.tmp") next to their targets.
    hidden_ok = shard.world > 1
    found = sorted(
        p.name for p in out.iterdir() if p.name not in allowed and not (hidden_ok and p.name.startswith("."))
    )
    if found:
        raise InvalidInputError(
            f"--out {out} is not empty ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''}); "
            "pass --resume to continue that run, or choose a new directory"
        )


# ------------------------------------------------------------------------------------------ reading
def sample_files(out: Path) -> list[Path]:
    """``samples.jsonl`` and every shard file that exists, in a fixed order."""
    files = [out / SAMPLES] if (out / SAMPLES).is_file() else []
    return files + sorted(out.glob("samples.rank*.jsonl"))


def read_records(path: Path) -> list[SampleRecord]:
    """The records of one file; unparseable lines (a torn last line) are skipped with a warning."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(SampleRecord.model_validate_json(line))
            except ValidationError:
                log.warning("%s:%d: not a complete sample record; that sample will be redone", path, number)
    return records


def _better(new: SampleRecord, old: SampleRecord) -> bool:
    # A success beats a failure (a retried sample); otherwise the later record wins.
    if new.ok != old.ok:
        return new.ok
    return new.finished >= old.finished


def best_records(files: Iterable[Path]) -> dict[str, SampleRecord]:
    """One record per sample id over ``files``."""
    best: dict[str, SampleRecord] = {}
    for path in files:
        for record in read_records(path):
            old = best.get(record.id)
            if old is None or _better(record, old):
                best[record.id] = record
    return best


# ------------------------------------------------------------------------------------------ writing
def repair_tail(path: Path, *, block: int = 1 << 16) -> None:
    """Cut a torn last line (no trailing newline) so the next append starts a fresh line.

    Reads backwards from the end in ``block``-byte steps until the last newline: a long run's file is not
    read whole to repair a few bytes.
    """
    if not path.is_file():
        return
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = size
        while keep > 0:
            start = max(0, keep - block)
            fh.seek(start)
            chunk = fh.read(keep - start)
            if keep == size and chunk.endswith(b"\n"):
                return  # the file ends with a whole line
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            keep = start
        if keep == size:
            return  # empty file
        log.warning("%s: dropping a torn last line (%d bytes) left by an interrupted run", path, size - keep)
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


class SampleWriter:
    """Appends records to one file, one ``write`` + ``fsync`` per line, safe to share between threads."""

    def __init__(self, path: Path) -> None:
        """Open ``path`` for appending (created if missing), after cutting a torn last line.

        Holds a shared lock on the run's merge lock until closed (waiting for a merge in progress), so no
        merge replaces a sample file while it is appended to (see the module docstring).
        """
        self._lock_fd = os.open(path.parent / MERGE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_SH)
            repair_tail(path)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            os.close(self._lock_fd)  # closing releases the lock
            raise
        self.path = path
        self._lock = threading.Lock()

    def write(self, record: SampleRecord) -> None:
        """Append one record durably."""
        data = (record.to_line() + "\n").encode("utf-8")
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                os.close(self._lock_fd)  # releases the shared lock: a merge may run now

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_samples(out: Path, order: list[str]) -> list[SampleRecord]:
    """Rewrite ``samples.jsonl`` as the union of all sample files, in ``order`` (planned ids).

    Shard files are kept: a rank still writing (see ``runner``) never loses a line to a merge.
    """
    best = best_records(sample_files(out))
    position = {sid: i for i, sid in enumerate(order)}
    stray = sorted(set(best) - set(position))
    if stray:
        log.warning("%s: %d record(s) of samples this suite does not plan were left out", out, len(stray))
    records = sorted((r for r in best.values() if r.id in position), key=lambda r: position[r.id])
    write_text_atomic(out / SAMPLES, "".join(r.to_line() + "\n" for r in records))
    return records


@contextlib.contextmanager
def merge_lock(out: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on the run's merge; yields False if another process merges or any
    process still appends to a sample file (an open ``SampleWriter``).

    ``flock`` is released by the kernel when its holder dies, so a killed merge never blocks a later one.
    """
    fd = os.open(out / MERGE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
