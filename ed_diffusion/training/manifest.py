"""``manifest.json`` of a training run: what produced the checkpoints next to it, and how the run ended.

Rank 0 writes it (atomically) when the run starts and rewrites it when the run ends: the kind (sft or dpo),
the package version, the git commit and whether the work tree was dirty, the config, the sha256 of the
input files (bank, adapter_init, data or pairs where they are files), the UTC start and finish times, the
last step and checkpoint, and the status (``running`` while it trains, then ``finished``, ``interrupted``
or ``failed``).
A resume keeps the first attempt's fields and appends what it ran with to ``resumes``; a run that restarts
from step 0 (no checkpoint survived) gets a new manifest, as its earlier attempt left nothing to describe.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ed_common.atomic import write_json_atomic
from ed_common.errors import error_line
from ed_common.git_state import git_dirty, git_sha, package_version
from ed_common.hashing import file_sha256
from ed_diffusion.training.config import DPOTrainConfig, TrainConfig

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
Status = Literal["running", "finished", "interrupted", "failed"]


def run_kind(cfg: TrainConfig) -> str:
    """``dpo`` for a ``DPOTrainConfig``, else ``sft`` (the loop trains any other config with the SFT loss)."""
    return "dpo" if isinstance(cfg, DPOTrainConfig) else "sft"


def input_files(paths: Mapping[str, str | None]) -> dict[str, dict[str, Any]]:
    """``{name: {"path", "sha256"}}`` for each given path; sha256 is None where it is not a file (a dataset
    root directory, say): a resume with edited inputs is then visible in the manifest."""
    files: dict[str, dict[str, Any]] = {}
    for name, value in paths.items():
        if value is None:
            continue
        path = Path(value).expanduser()
        files[name] = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
    return files


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunManifest:
    """The manifest of one attempt of a run: ``start`` writes it, ``end`` records how the attempt ended."""

    def __init__(self, path: Path, data: dict[str, Any], attempt: dict[str, Any] | None) -> None:
        self.path, self.data, self.attempt = path, data, attempt

    @classmethod
    def start(
        cls, out: Path, cfg: TrainConfig, inputs: Mapping[str, str | None], start_step: int
    ) -> RunManifest:
        """Write the manifest of an attempt that starts at ``start_step`` (0: a new run, else a resume)."""
        path = out / MANIFEST_FILE
        # JSON's view of the config (tuples become lists), so a resume compares like with like.
        now, config = _now(), json.loads(json.dumps(asdict(cfg)))
        attempt: dict[str, Any] = {
            "emodir_version": package_version(),
            "git_sha": git_sha(),
            "git_dirty": git_dirty(),  # True: the checkpoints come from uncommitted code
            "inputs": input_files(inputs),
        }
        old = _read(path) if start_step > 0 else None
        if old is None:
            data: dict[str, Any] = {
                "manifest_version": MANIFEST_VERSION,
                "kind": run_kind(cfg),
                **attempt,
                "config": config,
                "started": now,
                "from_step": start_step,  # > 0: resumed a run whose manifest was lost
                "finished": None,
                "step": start_step,
                "last_checkpoint": None,
                "status": "running",
                "error": None,
                "resumes": [],
            }
            manifest = cls(path, data, None)
        else:
            first = old.get("config")
            first = first if isinstance(first, dict) else {}
            changed = {k: [first.get(k), v] for k, v in config.items() if first.get(k) != v}
            resume = {"started": now, "from_step": start_step, **attempt, "config_changes": changed}
            resume |= {"finished": None, "step": start_step, "status": "running"}
            resumes = old.get("resumes")
            resumes = resumes if isinstance(resumes, list) else []
            old |= {"finished": None, "step": start_step, "status": "running", "error": None}
            old["resumes"] = [*resumes, resume]
            manifest = cls(path, old, resume)
        manifest._write()
        return manifest

    def end(
        self, status: Status, step: int, checkpoint: Path | None, exc: BaseException | None = None
    ) -> None:
        """Record how this attempt ended: its last step, the checkpoint a resume would start from, and the
        error of a failed one. A failed write is logged, never raised over the run's own error."""
        error = error_line(exc, with_type=True) if exc is not None and status == "failed" else None
        ended = {
            "finished": _now(),
            "step": step,
            "last_checkpoint": checkpoint.name if checkpoint is not None else None,
            "status": status,
        }
        self.data |= ended | {"error": error}
        if self.attempt is not None:
            self.attempt |= ended
        try:
            self._write()
        except OSError as write_exc:
            log.warning("could not update %s (%s)", self.path, write_exc)

    def _write(self) -> None:
        write_json_atomic(self.path, self.data)


def _read(path: Path) -> dict[str, Any] | None:
    """The earlier attempts' manifest, or None (with a warning when one is there but unreadable)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        log.warning("%s is unreadable (%s); writing a new one", path, type(exc).__name__)
        return None
    if not isinstance(data, dict):
        log.warning("%s is not a JSON object; writing a new one", path)
        return None
    return data
