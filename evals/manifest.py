"""``manifest.json`` of an eval run: what reproduces it (suite and its hash, settings, seeds, models, prompt
files, code version). Written by rank 0 when the run starts, which adds the suite's ``fingerprint`` and the
run's ``identity`` (``suite.run_identity``: the effective settings that decide the samples); ``--resume``
checks both (a manifest from before ``identity`` existed: the fingerprint only)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ed_agents.prompts import PromptLibrary
from ed_common.git_state import git_dirty, package_version
from ed_common.hashing import file_sha256
from ed_common.settings import Settings
from evals.shards import Shard
from evals.suite import Suite
from graphs.tool_node import _git_sha  # one notion of "code version" for generate and eval runs

MANIFEST_VERSION = 1
_SECRET_SETTINGS = ("llm_api_key",)
# What may differ between attempts of one run (the suite's samples may not: see the fingerprint).
_ATTEMPT_KEYS = (
    "created",
    "emodir_version",
    "git_sha",
    "git_dirty",
    "processes",
    "settings",
    "llm",
    "diffusion",
    "prompt_files",
)


def provenance(suite_path: Path | None) -> dict[str, Any]:
    """When, by which code and from which suite file a run (``eval run``, ``pairs build``) was made."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "emodir_version": package_version(),
        "git_sha": _git_sha(),
        "git_dirty": git_dirty(),
        "suite_file": str(suite_path) if suite_path else None,
        "suite_sha256": file_sha256(suite_path) if suite_path else None,
    }


def run_manifest(
    suite: Suite,
    suite_path: Path | None,
    settings: Settings,
    prompts: PromptLibrary,
    *,
    renderer: Any = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """The manifest as a JSON-able dict (secrets redacted)."""
    values = settings.model_dump(mode="json")
    for key in _SECRET_SETTINGS:
        if values.get(key) not in (None, "", "EMPTY"):
            values[key] = "<redacted>"
    describe = getattr(renderer, "describe", None)
    return {
        "manifest_version": MANIFEST_VERSION,
        **provenance(suite_path),
        "suite": suite.model_dump(mode="json"),
        "seeds": suite.seeds,
        "processes": (shard or Shard()).world,
        "settings": values,
        "llm": {"model": settings.llm_model, "base_url": settings.effective_llm_base_url},
        "diffusion": describe() if callable(describe) else None,
        "prompt_files": [{"id": f.id, "version": f.meta.version, "sha256": f.sha256} for f in prompts],
    }


def resumed_manifest(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The first attempt's manifest plus, under ``resumes``, what each resumed attempt ran with."""
    attempt = {k: new[k] for k in _ATTEMPT_KEYS if k in new}
    return {**old, "resumes": [*old.get("resumes", []), attempt]}
