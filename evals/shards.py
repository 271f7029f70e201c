"""Sample files: which process runs which samples, checkpointed JSON lines, and merging the shards.

Processes coordinate through files only, no process group: under ``accelerate launch`` (or any launcher that
sets ``RANK``/``WORLD_SIZE``) process ``r`` of ``w`` runs the samples at plan positions ``p % w == r`` and
appends them to ``samples.rank{r}.jsonl``; a single process appends to ``samples.jsonl``. Each line is
written with one ``write`` and ``fsync``ed, so a kill leaves at most a torn last line (no trailing newline):
it is ignored when reading, and set aside in ``<file>.torn`` before the file is appended to or rewritten, so
no byte is ever deleted. An unparseable line anywhere else is damage, not a crash: reading refuses the file.
``samples.jsonl`` after a merge is the union of every sample file, one record per id (ok beats error, then
the later one), in plan order.

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
from typing import BinaryIO

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
    """The records of one file; a torn last line (no trailing newline) is skipped with a warning.

    Raises:
        InvalidInputError: any other line is not a sample record (the file is damaged, not interrupted).
    """
    records = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(SampleRecord.model_validate_json(line))
            except ValidationError:
                if line.endswith("\n"):  # a whole line: no crash mid-write leaves that, so it is damage
                    raise InvalidInputError(
                        f"{path}:{number}: not a sample record (only a torn last line is tolerated): the "
                        "file is damaged; repair or remove that line (nothing was changed)"
                    ) from None
                log.warning(
                    "%s:%d: a torn last line (interrupted write); that sample will be redone", path, number
                )
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
def torn_file(path: Path) -> Path:
    """Where the torn last lines of ``path`` are set aside (``samples.jsonl.torn``; not a sample file)."""
    return path.with_name(path.name + ".torn")


def repair_tail(path: Path, *, block: int = 1 << 16) -> None:
    """End ``path`` with a whole line, so the next append (or a rewrite) starts a fresh one.

    A torn last line (no trailing newline) is appended to :func:`torn_file` and fsynced before it is cut, so
    nothing is lost; a last line that is a whole record missing only its newline gets the newline (reading
    counts it as done, so cutting it would lose a finished sample).
    """
    if not path.is_file():
        return
    with open(path, "r+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        keep = _torn_start(fh, size, block)
        if keep == size:
            return  # empty, or ends with a whole line
        fh.seek(keep)
        tail = fh.read()
        if _is_record(tail):
            fh.write(b"\n")
        else:
            _set_aside(path, tail)
            log.warning(
                "%s: moved a torn last line (%d bytes) left by an interrupted run to %s",
                path,
                size - keep,
                torn_file(path),
            )
            fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())


def _torn_start(fh: BinaryIO, size: int, block: int) -> int:
    """The offset after the last newline (``size`` when the file ends with one or is empty).

    Reads backwards from the end in ``block``-byte steps: a long run's file is not read whole to find it.
    """
    keep = size
    while keep > 0:
        start = max(0, keep - block)
        fh.seek(start)
        chunk = fh.read(keep - start)
        if keep == size and chunk.endswith(b"\n"):
            return size
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        keep = start
    return 0


def _is_record(data: bytes) -> bool:
    try:  # decoded as read_records decodes, so both agree on what counts as a record
        SampleRecord.model_validate_json(data.decode("utf-8", errors="replace"))
    except ValidationError:
        return False
    return True


def _set_aside(path: Path, tail: bytes) -> None:
    # Appended (one line per torn tail) and fsynced before the caller cuts it: a crash in between keeps both.
    with open(torn_file(path), "ab") as fh:
        fh.write(tail + b"\n")
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

    Shard files are kept: a rank still writing (see ``runner``) never loses a line to a merge. A torn last
    line of ``samples.jsonl`` itself is set aside first (see :func:`repair_tail`).

    Raises:
        InvalidInputError: a sample file is damaged (see :func:`read_records`); nothing is written then.
    """
    best = best_records(sample_files(out))
    repair_tail(out / SAMPLES)
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
