"""Eval agent-phase throughput at concurrency 1, 2 and 4 against the LLM server (a benchmark: prints ratios).

One fixed set of samples (2 prompts x 2 emotions x ``--seeds`` seeds, ``full_graph``, ``--n-personas``
personas; 8 samples by default) is run through ``evals.runner.run_suite`` once per concurrency level, each
into a fresh output directory: same samples, same seeds, a fresh per-seed Context factory (so a fresh HTTP
client and LLM semaphore) each time. The suite has ``images_per_prompt: 0``, the runner's agents-only path:
no renderer, torch never imported, so only the agent phase is timed (not scoring or reports either).

Reported per level: wall time of the ``run_suite`` call, samples/s, LLM calls, tokens (prompt + completion,
from the samples' traces), tokens/s and failed samples; then the throughput ratios against the lowest level,
all measured in this one process. Tokens are printed because a real server's replies can differ between
levels (batching changes the numerics, a repair retry adds calls), and with them the work done; the ratio of
tokens/s is the work-normalised ratio. An untimed warm-up pass (at the highest level, by default) comes
first so that no level pays for cold caches (imports, the server's prefix cache, the first connections)
alone. With ``--repeats N`` the levels are run N times in rotated order and the medians are reported.

Run: ``make bench-eval`` (starts the server), or with a server up (``EMODIR_LLM_BASE_URL`` or the settings):
``OMP_NUM_THREADS=1 .venv/bin/python evals/perf/bench_eval.py [--concurrency 1 2 4] [--repeats 1] [--json]``.
Without any LLM: ``... bench_eval.py --fake [--fake-delay 0.05]`` (the in-process fake OpenAI server of
``tests/fakes``, sleeping per request so that concurrency shows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

from ed_agents.anchors import TokenCounter
from ed_agents.errors import EmodirError
from ed_agents.prompts import PromptLibrary
from ed_common.emotions import Emotion
from ed_common.settings import Settings, load_settings
from evals.records import SampleRecord
from evals.scorers.cost import trace_costs
from evals.suite import PromptEntry, Suite, SystemEntry

PROMPTS = (("a birthday cake on a table", "cake"), ("an old dog in the snow", "dog"))  # as in smoke.yaml
EMOTIONS = (Emotion.FEAR, Emotion.CONTENTMENT)


@dataclass(frozen=True)
class LevelResult:
    """One timed ``run_suite`` at one concurrency level."""

    concurrency: int
    wall_s: float
    samples: int
    failed: int
    llm_calls: int
    input_tokens: int
    output_tokens: int
    final_prompts: dict[str, str | None]  # sample id -> final prompt (to compare the levels' outputs)

    @property
    def tokens(self) -> int:
        """Prompt + completion tokens of every LLM call (failed attempts and repairs included)."""
        return self.input_tokens + self.output_tokens

    @property
    def samples_per_s(self) -> float:
        """Throughput in samples (ok or failed) per second of wall time."""
        return self.samples / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        """Throughput in LLM tokens per second of wall time."""
        return self.tokens / self.wall_s


def bench_suite(seeds: int, n_personas: int) -> Suite:
    """The fixed benchmark suite: 2 prompts x 2 emotions x ``seeds`` seeds, ``full_graph``, agents only."""
    return Suite(
        name="bench-eval",
        description="Agent-phase throughput benchmark (evals/perf/bench_eval.py).",
        emotions=list(EMOTIONS),
        prompts=[PromptEntry(text=text, content=content) for text, content in PROMPTS],
        systems=[SystemEntry(kind="full_graph", visual_prompts=False)],
        seeds=list(range(seeds)),
        images_per_prompt=0,  # the runner's agents-only path: no renderer, no torch
        settings={"n_personas": n_personas},
        text_scorers=[],
    )


def run_level(
    suite: Suite,
    settings: Settings,
    prompts: PromptLibrary,
    tokens: TokenCounter,
    out: Path,
    concurrency: int,
) -> LevelResult:
    """Run the whole suite once into the fresh directory ``out`` at ``concurrency``; time the run."""
    from evals.runner import run_suite
    from evals.systems import make_context_factory

    records: list[SampleRecord] = []
    lock = threading.Lock()

    def on_sample(record: SampleRecord) -> None:
        with lock:
            records.append(record)

    t0 = time.perf_counter()
    factory = make_context_factory(settings, prompts=prompts, tokens=tokens)  # a fresh client per level
    outcome = run_suite(suite, out, context_factory=factory, concurrency=concurrency, on_sample=on_sample)
    wall = time.perf_counter() - t0
    if outcome.ran != len(suite.plan()) or len(records) != outcome.ran:
        raise RuntimeError(f"concurrency {concurrency}: ran {outcome.ran} of {len(suite.plan())} samples")
    costs = [trace_costs(r.trace) for r in records]  # the eval's own cost scorer: same calls, same tokens
    return LevelResult(
        concurrency=concurrency,
        wall_s=wall,
        samples=len(records),
        failed=sum(not r.ok for r in records),
        llm_calls=int(sum(c["llm_calls"] for c in costs)),
        input_tokens=int(sum(c["input_tokens"] for c in costs)),
        output_tokens=int(sum(c["output_tokens"] for c in costs)),
        final_prompts={r.id: r.final_prompt for r in records},
    )


def median_result(runs: list[LevelResult]) -> LevelResult:
    """The repeat with the median wall time (a real run, so its numbers belong together)."""
    ordered = sorted(runs, key=lambda r: r.wall_s)
    return ordered[(len(ordered) - 1) // 2]


def same_outputs(a: LevelResult, b: LevelResult) -> int:
    """How many samples got the same final prompt at both levels."""
    return sum(a.final_prompts.get(sid) == fp for sid, fp in b.final_prompts.items())


@contextlib.contextmanager
def llm_endpoint(args: argparse.Namespace) -> Iterator[tuple[str | None, str]]:
    """(base URL override or None for the settings' own, a label): the fake server while in the block."""
    if not args.fake:
        yield args.url, "LLM server"
        return
    from ed_agents.testing.fake_openai_server import FakeOpenAIServer

    model = os.environ.get("EMODIR_LLM_MODEL", "smollm2")
    with FakeOpenAIServer(delay=args.fake_delay, model=model) as server:
        yield server.base_url, f"fake server ({args.fake_delay * 1000:.0f} ms per request)"


Runs = dict[int, list[LevelResult]]


def measure(args: argparse.Namespace, url: str | None) -> tuple[Settings, Suite, Runs]:
    """Check the server, warm up, then run every level ``--repeats`` times; the raw results per level."""
    from ed_agents.clip_tokens import default_counter
    from ed_agents.llm_endpoint import ensure_llm
    from evals.systems import validate_suite

    suite = bench_suite(args.seeds, args.n_personas)
    overrides: dict[str, Any] = {**suite.settings, "llm_base_url": url}
    if args.llm_concurrency is not None:
        overrides["llm_concurrency"] = args.llm_concurrency
    settings = load_settings(**overrides)
    prompts = PromptLibrary.load(settings.prompts_dir)
    tokens = default_counter()
    validate_suite(suite, prompts, tokens, settings)
    ensure_llm(settings, autostart=False)  # one line naming the URL and the fix when nobody answers

    root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-eval-"))
    levels = sorted(set(args.concurrency))
    results: Runs = {c: [] for c in levels}
    try:
        if args.warmup:
            run_level(suite, settings, prompts, tokens, root / "warmup", max(levels))
        for rep in range(args.repeats):
            shift = rep % len(levels)  # rotate the order, so drift over time does not favour one level
            for c in levels[shift:] + levels[:shift]:
                out = root / f"r{rep}-c{c}"
                results[c].append(run_level(suite, settings, prompts, tokens, out, c))
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    return settings, suite, results


def report(
    args: argparse.Namespace, label: str, settings: Settings, suite: Suite, runs: Runs
) -> dict[str, Any]:
    """The medians and ratios as one JSON-able dict."""
    levels = sorted(runs)
    med = {c: median_result(runs[c]) for c in levels}
    base = med[levels[0]]
    return {
        "server": label,
        "url": settings.effective_llm_base_url,
        "model": settings.llm_model,
        "samples": len(suite.plan()),
        "suite": f"{len(PROMPTS)} prompts x {len(EMOTIONS)} emotions x {args.seeds} seeds, full_graph, "
        f"{args.n_personas} personas, no rendering",
        "llm_concurrency": settings.llm_concurrency,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "levels": [
            {
                **{k: v for k, v in asdict(r).items() if k != "final_prompts"},
                "tokens": r.tokens,
                "samples_per_s": r.samples_per_s,
                "tokens_per_s": r.tokens_per_s,
                "wall_s_all": [x.wall_s for x in runs[c]],
                "same_final_prompts_as_base": same_outputs(base, r),
            }
            for c, r in med.items()
        ],
        "ratios": {
            f"c{c}/c{base.concurrency}": {
                "samples_per_s": med[c].samples_per_s / base.samples_per_s,
                "tokens_per_s": med[c].tokens_per_s / base.tokens_per_s if base.tokens else None,
                "ideal": c / base.concurrency,
            }
            for c in levels[1:]
        },
    }


def print_table(data: dict[str, Any]) -> None:
    """The human-readable form of ``report``'s dict."""
    stat = f"median of {data['repeats']}" if data["repeats"] > 1 else "one pass each"
    warm = "after an untimed warm-up pass" if data["warmup"] else "no warm-up: the first level ran cold"
    print(f"[eval agent phase: {data['samples']} samples ({data['suite']}); {stat}, {warm}]")
    print(f"  {data['server']} at {data['url']}, model {data['model']}")
    print(f"  llm_concurrency {data['llm_concurrency']} (LLM requests in flight across all samples)")
    print("  conc   wall s  samples/s  LLM calls   tokens  tokens/s  failed  same prompts as base")
    for lv in data["levels"]:
        print(
            f"  {lv['concurrency']:>4}  {lv['wall_s']:>7.2f}  {lv['samples_per_s']:>9.3f}"
            f"  {lv['llm_calls']:>9}  {lv['tokens']:>7}  {lv['tokens_per_s']:>8.1f}  {lv['failed']:>6}"
            f"  {lv['same_final_prompts_as_base']:>3}/{lv['samples']}"
        )
    for name, r in data["ratios"].items():
        per_token = f"{r['tokens_per_s']:.2f}x" if r["tokens_per_s"] is not None else "n/a"
        print(
            f"  {name} throughput  {r['samples_per_s']:.2f}x samples/s, {per_token} tokens/s   "
            f"(ideal {r['ideal']:.0f}x)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--url",
        default=None,
        help="OpenAI-compatible base URL (default: EMODIR_LLM_BASE_URL, else the settings' embedded server)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 2, 4],
        help="levels (default: 1 2 4); ratios are to the lowest",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="seeds per prompt x emotion (default: %(default)s; 4 x this samples)",
    )
    parser.add_argument(
        "--n-personas", type=int, default=2, help="personas per sample (default: %(default)s)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="passes over all levels (default: %(default)s); medians reported",
    )
    parser.add_argument(
        "--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up pass"
    )
    parser.add_argument(
        "--llm-concurrency",
        type=int,
        default=None,
        help="LLM requests in flight across all samples (default: the settings', 8)",
    )
    parser.add_argument("--out", help="keep the run directories here (default: a temp dir, removed)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--fake", action="store_true", help="use an in-process fake OpenAI server (no LLM)")
    parser.add_argument(
        "--fake-delay", type=float, default=0.05, help="--fake: seconds per request (default: %(default)s)"
    )
    args = parser.parse_args()
    if min(args.concurrency) < 1 or args.seeds < 1 or args.repeats < 1 or args.n_personas < 1:
        parser.error("--concurrency, --seeds, --repeats and --n-personas must be >= 1")
    if args.out and Path(args.out).exists() and any(Path(args.out).iterdir()):
        parser.error(f"--out {args.out}: must be new or empty")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with llm_endpoint(args) as (url, label):
            settings, suite, runs = measure(args, url)
    except EmodirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    data = report(args, label, settings, suite, runs)
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print_table(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
