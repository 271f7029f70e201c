"""evals never imports torch at import time, and an agents-only eval run never imports it at all."""

from __future__ import annotations

import ast
import subprocess
import sys

from ed_common.settings import REPO_ROOT
from tests.conftest import cli_env

TORCH_SIDE = {"torch", "ed_diffusion", "diffusers", "transformers", "accelerate"}


def test_evals_modules_import_the_image_side_only_inside_functions() -> None:
    for path in sorted((REPO_ROOT / "evals").rglob("*.py")):
        if "perf" in path.parts:
            continue  # benchmarks are scripts, run on purpose with the image side
        tree = ast.parse(path.read_text())
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not names & TORCH_SIDE, f"{path.name} imports {names & TORCH_SIDE} at module level"


def test_an_agents_only_run_never_loads_torch(tmp_path: object) -> None:
    code = f"""
import sys
from pathlib import Path
import evals.cli_eval, evals.report_html, evals.manifest
from ed_agents.clip_tokens import default_counter
from ed_agents.prompts import PromptLibrary
from ed_common.settings import load_settings
from evals.report import finalize_run
from evals.runner import run_suite
from evals.shards import read_records
from evals.suite import Suite
from evals.systems import make_context_factory
from tests.fakes.fake_chat import SchemaFakeChatModel

out = Path({str(tmp_path)!r}) / "run"
suite = Suite.model_validate({{"name": "t", "emotions": ["awe"], "prompts": [{{"text": "a dog"}}],
    "systems": [{{"kind": "full_graph", "personas": ["child"]}}, {{"kind": "single_llm"}}],
    "images_per_prompt": 0}})
settings = load_settings(data_dir=out.parent / "d", cache_dir=out.parent / "c")
factory = make_context_factory(settings, prompts=PromptLibrary.load(settings.prompts_dir),
    tokens=default_counter(), chat_model=SchemaFakeChatModel())
assert run_suite(suite, out, context_factory=factory).failed == 0
finalize_run(out, suite, read_records(out / "samples.jsonl"))
bad = sorted(m for m in {sorted(TORCH_SIDE)!r} if m in sys.modules)
print(bad)
sys.exit(1 if bad else 0)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
