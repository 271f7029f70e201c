"""run_suite with a fake LLM, no images: every system, bounded concurrency, failures, interrupt, resume."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import BaseMessage

from ed_agents.clip_tokens import default_counter
from ed_agents.prompts import PromptLibrary
from ed_common.errors import InvalidInputError
from ed_common.settings import Settings
from evals.aggregate import summarize
from evals.records import SampleRecord
from evals.runner import run_suite
from evals.shards import Shard, read_records
from evals.suite import Suite
from evals.systems import ContextFactory, make_context_factory
from tests.fakes.fake_chat import SchemaFakeChatModel

GOOD_REWRITE = json.dumps({"final_prompt": "a dog, cold blue light, low angle", "negative_prompt": "warm"})


def _suite(systems: list[dict[str, Any]], prompts: tuple[str, ...] = ("a dog",), **extra: Any) -> Suite:
    data = {
        "name": "t",
        "emotions": ["fear"],
        "prompts": [{"text": p} for p in prompts],
        "systems": systems,
        "images_per_prompt": 0,
    }
    return Suite.model_validate(data | extra)


@pytest.fixture
def factory(settings: Settings, prompt_library: PromptLibrary) -> Any:
    def make(chat: SchemaFakeChatModel | None = None) -> ContextFactory:
        return make_context_factory(
            settings,
            prompts=prompt_library,
            tokens=default_counter(),
            chat_model=chat or SchemaFakeChatModel(),
        )

    return make


def _ids(path: Path) -> list[str]:
    return [r.id for r in read_records(path)]


def test_every_system_kind_runs_and_is_recorded_in_plan_order(tmp_path: Path, factory: Any) -> None:
    chat = SchemaFakeChatModel()
    suite = _suite(
        [
            {"kind": "full_graph", "personas": ["child", "zen_gardener"]},
            {"kind": "single_llm"},
            {"kind": "plain"},
            {"kind": "emogen_baseline"},
        ],
        prompts=("a birthday cake on a table",),
    )
    outcome = run_suite(suite, tmp_path / "run", context_factory=factory(chat), concurrency=2)
    assert (outcome.planned, outcome.ran, outcome.failed, outcome.complete, outcome.merged) == (
        4,
        4,
        0,
        True,
        True,
    )
    records = {r.system: r for r in read_records(tmp_path / "run" / "samples.jsonl")}
    assert _ids(tmp_path / "run" / "samples.jsonl") == [s.id for s in suite.plan()]
    full = records["full_graph_vp"]
    assert sorted(p.persona_id for p in full.persona_reactions) == ["child", "zen_gardener"]
    assert "birthday cake" in (full.final_prompt or "") and full.anchors
    assert {t["node"] for t in full.trace} >= {"understand_request", "react_as_persona", "write_consensus"}
    single = records["single_llm_vp"]
    assert [t["node"] for t in single.trace if t["model"]] == ["single_rewrite"] and single.final_prompt
    (call,) = chat.calls_for("RevisedPrompt")
    system_msg, *_, user_msg = call["messages"]  # the worked example sits between them
    assert "birthday cake" not in str(system_msg.content)  # user text never in the system part
    assert "birthday cake" in str(user_msg.content)
    assert records["plain_vp"].final_prompt == "a birthday cake on a table" and not records["plain_vp"].trace
    assert records["emogen_baseline_vp"].final_prompt == "an image of fear"


def test_samples_run_concurrently_up_to_the_bound(tmp_path: Path, factory: Any) -> None:
    barrier = threading.Barrier(2, timeout=10)

    def meet(messages: list[BaseMessage]) -> str:
        barrier.wait()  # only returns when two samples are in flight at once
        return GOOD_REWRITE

    chat = SchemaFakeChatModel(script={"RevisedPrompt": meet})
    suite = _suite([{"kind": "single_llm"}], prompts=("a dog", "a cat", "a red car", "a house"))
    outcome = run_suite(suite, tmp_path / "two", context_factory=factory(chat), concurrency=2)
    assert outcome.failed == 0 and chat.max_in_flight == 2
    serial = SchemaFakeChatModel(script={"RevisedPrompt": GOOD_REWRITE})
    run_suite(suite, tmp_path / "one", context_factory=factory(serial), concurrency=1)
    assert serial.max_in_flight == 1 and len(serial.calls) == 4


def test_a_failed_sample_is_recorded_counted_and_redone_on_resume(tmp_path: Path, factory: Any) -> None:
    suite = _suite([{"kind": "single_llm"}, {"kind": "plain"}], prompts=("a dog", "a cat"))
    out = tmp_path / "run"
    broken = SchemaFakeChatModel(script={"RevisedPrompt": "no json here"})
    outcome = run_suite(suite, out, context_factory=factory(broken))
    assert (outcome.failed, outcome.complete) == (2, True)
    records = read_records(out / "samples.jsonl")
    failed = [r for r in records if not r.ok]
    assert {r.system for r in failed} == {"single_llm_vp"}
    assert all("unusable output" in (r.error or "") and r.trace for r in failed)
    summary = summarize(suite, out, records)
    row = summary["systems"]["single_llm_vp"]["all"]
    assert (row["n_failed"], row["n_samples"]) == (2, 0) and "visual_word_share" not in row["metrics"]
    assert summary["systems"]["plain_vp"]["all"]["n"]["visual_word_share"] == 2

    fixed = SchemaFakeChatModel(script={"RevisedPrompt": GOOD_REWRITE})
    again = run_suite(suite, out, context_factory=factory(fixed), resume=True)
    assert (again.skipped, again.ran, again.failed) == (2, 2, 0) and len(fixed.calls) == 2
    final = read_records(out / "samples.jsonl")
    assert [r.id for r in final] == [s.id for s in suite.plan()] and all(r.ok for r in final)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_interrupt_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path, factory: Any, monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    import evals.runner

    suite = _suite([{"kind": "plain"}, {"kind": "emogen_baseline"}], prompts=("a dog", "a cat", "a fox"))
    real = evals.runner.run_sample
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> SampleRecord:
        calls.append(args[0].id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while this sample ran
        return real(*args, **kwargs)

    monkeypatch.setattr(evals.runner, "run_sample", interrupted)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, out, context_factory=factory(), concurrency=concurrency)
    recorded = _ids(out / "samples.jsonl")
    assert 2 <= len(recorded) < 6 and len(set(recorded)) == len(recorded)

    monkeypatch.setattr(evals.runner, "run_sample", real)
    outcome = run_suite(suite, out, context_factory=factory(), resume=True)
    assert outcome.skipped == len(recorded) and outcome.ran == 6 - len(recorded)
    assert _ids(out / "samples.jsonl") == [s.id for s in suite.plan()]


def test_a_torn_last_line_is_redone_on_resume(tmp_path: Path, factory: Any) -> None:
    suite = _suite([{"kind": "plain"}], prompts=("a dog", "a cat", "a fox"))
    out = tmp_path / "run"
    run_suite(suite, out, context_factory=factory())
    path = out / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-1]) + lines[-1][:30])  # killed in the middle of the last write
    outcome = run_suite(suite, out, context_factory=factory(), resume=True)
    assert (outcome.skipped, outcome.ran) == (2, 1)
    assert _ids(path) == [s.id for s in suite.plan()]


def test_used_out_dir_and_changed_suite_are_refused(tmp_path: Path, factory: Any) -> None:
    suite = _suite([{"kind": "plain"}])
    out = tmp_path / "run"
    run_suite(suite, out, context_factory=factory(), manifest={"note": "first"})
    with pytest.raises(InvalidInputError, match=r"is not empty .* pass --resume"):
        run_suite(suite, out, context_factory=factory())
    changed = suite.model_copy(update={"seeds": [0, 1]})
    with pytest.raises(InvalidInputError, match="--resume: the suite no longer matches the run"):
        run_suite(changed, out, context_factory=factory(), resume=True, manifest={"note": "second"})
    run_suite(suite, out, context_factory=factory(), resume=True, manifest={"note": "second", "created": "x"})
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["note"] == "first" and manifest["resumes"] == [{"created": "x"}]
    with pytest.raises(InvalidInputError, match="renders images but no renderer"):
        run_suite(
            suite.model_copy(update={"images_per_prompt": 1}), tmp_path / "x", context_factory=factory()
        )


def test_the_last_shard_to_finish_merges(tmp_path: Path, factory: Any) -> None:
    suite = _suite([{"kind": "plain"}, {"kind": "emogen_baseline"}], prompts=("a dog", "a cat", "a fox"))
    out = tmp_path / "run"
    first = run_suite(suite, out, context_factory=factory(), shard=Shard(1, 2))
    assert (first.owned, first.complete, first.merged) == (3, False, False)
    assert not (out / "samples.jsonl").exists()
    second = run_suite(suite, out, context_factory=factory(), shard=Shard(0, 2))
    assert (second.complete, second.merged) == (True, True)
    plan = [s.id for s in suite.plan()]
    # Each rank ran exactly its positions (in completion order: samples run concurrently).
    assert sorted(_ids(out / "samples.rank0.jsonl")) == sorted(plan[0::2])
    assert sorted(_ids(out / "samples.rank1.jsonl")) == sorted(plan[1::2])
    assert _ids(out / "samples.jsonl") == plan
    assert {r.rank for r in read_records(out / "samples.rank1.jsonl")} == {1}


def test_a_failure_after_the_system_ran_is_an_error_record_not_a_crash(
    tmp_path: Path, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evals.systems

    def lost_manifest(*args: Any) -> dict[str, Any]:
        return {"final_prompt": "a dog", "manifest": str(tmp_path / "gone" / "manifest.json")}

    monkeypatch.setattr(evals.systems, "run_system", lost_manifest)
    suite = _suite([{"kind": "plain"}], prompts=("a dog", "a cat"))
    outcome = run_suite(suite, tmp_path / "run", context_factory=factory())
    assert (outcome.ran, outcome.failed, outcome.complete) == (2, 2, True)
    records = read_records(tmp_path / "run" / "samples.jsonl")
    assert all(r.status == "error" and "FileNotFoundError" in (r.error or "") for r in records)
