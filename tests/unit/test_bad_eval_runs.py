"""Family: eval run directories a crash, a person or another setting left behind.

A resume repeats the run it continues (suite and the settings that decide the samples) or is refused naming
what changed; derived files (summary.json) are recomputed when damaged; sample files lose nothing: only a
torn last line is tolerated, and it is set aside, never deleted; a bad --out is named before any work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli import main
from ed_common.errors import InvalidInputError
from ed_common.settings import Settings
from evals.records import SampleRecord
from evals.report import load_run
from evals.runner import check_out_dir
from evals.shards import Shard, read_records, repair_tail, torn_file
from evals.suite import Suite, run_identity
from tests.cli_helpers import one_line

# Plain systems only, no images: no LLM server and no renderer, so a whole CLI run takes a moment.
SUITE = """name: bad
emotions: [fear]
prompts: [{text: an old dog in the snow, content: dog}, {text: a lighthouse}]
systems: [{kind: plain, visual_prompts: false}]
images_per_prompt: 0
"""


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE)
    return path


@pytest.fixture
def run_dir(tmp_path: Path, suite_file: Path, capsys: Any) -> Path:
    """A finished run of SUITE with the default settings (tiny preset)."""
    out = tmp_path / "run"
    assert main(["eval", "run", str(suite_file), "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _line(sid: str) -> str:
    record = SampleRecord(
        id=sid,
        system="plain_text",
        kind="plain",
        visual_prompts=False,
        prompt="a dog",
        emotion="fear",
        seed=0,
        status="ok",
    )
    return record.to_line()


# ------------------------------------------------------------------------------ resume: the run identity
@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"preset": "world"}, "preset 'tiny' -> 'world'"),
        ({"temperature": 0.2}, "temperature 0.7 -> 0.2"),
        ({"personas": ("child",)}, "personas None -> ['child']"),
        ({"diffusion_model": "other/model"}, "diffusion_model None -> 'other/model'"),
        ({"bank": "b.safetensors", "seed": 3}, "bank None -> 'b.safetensors'; seed 0 -> 3"),
        ({"llm_model": "qwen", "max_prompt_tokens": 30}, "llm_model 'smollm2' -> 'qwen'"),
    ],
    ids=["preset", "temperature", "personas", "diffusion-model", "two-keys", "llm-model"],
)
def test_resume_with_other_effective_settings_is_refused_naming_them(
    tmp_path: Path, settings: Settings, change: dict[str, Any], shown: str
) -> None:
    suite = Suite.model_validate(
        {"name": "s", "prompts": [{"text": "a dog"}], "systems": [{"kind": "plain"}], "images_per_prompt": 0}
    )
    out = tmp_path / "run"
    out.mkdir()
    manifest = {"fingerprint": suite.fingerprint(), "identity": run_identity(settings)}
    (out / "manifest.json").write_text(json.dumps(manifest))
    check_out_dir(out, suite, None, Shard(), True, run_identity(settings))  # the same settings: fine
    with pytest.raises(InvalidInputError, match="was made with other settings") as info:
        check_out_dir(out, suite, None, Shard(), True, run_identity(settings.model_copy(update=change)))
    assert shown in str(info.value) and "\n" not in str(info.value)
    # A manifest from before identities were recorded: only the suite can be compared.
    (out / "manifest.json").write_text(json.dumps({"fingerprint": suite.fingerprint()}))
    check_out_dir(out, suite, None, Shard(), True, run_identity(settings.model_copy(update=change)))


@pytest.mark.parametrize(
    ("flags", "env", "shown"),
    [
        (["--preset", "world"], {}, "preset 'tiny' -> 'world'"),
        ([], {"EMODIR_PRESET": "sd15"}, "preset 'tiny' -> 'sd15'"),
        ([], {"EMODIR_TEMPERATURE": "1.5", "EMODIR_N_PERSONAS": "2"}, "temperature 0.7 -> 1.5; n_personas 4"),
    ],
    ids=["flag", "env-preset", "env-two"],
)
def test_eval_resume_with_a_changed_flag_or_env_is_one_line_and_writes_nothing(
    run_dir: Path,
    suite_file: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    env: dict[str, str],
    shown: str,
) -> None:
    before = _snapshot(run_dir)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    line = one_line(capsys, ["eval", "run", str(suite_file), "--out", str(run_dir), "--resume", *flags])
    assert f"--resume: the run in {run_dir} was made with other settings" in line and shown in line
    assert _snapshot(run_dir) == before


def test_eval_resume_with_the_same_settings_or_an_old_manifest_continues(
    run_dir: Path, suite_file: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["identity"]["preset"] == "tiny" and "fingerprint" in manifest
    assert main(["eval", "run", str(suite_file), "--out", str(run_dir), "--resume"]) == 0
    assert "0 sample(s) run, 2 already done" in capsys.readouterr().out
    del manifest["identity"]  # as written before identities existed: the fingerprint is all it has
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("EMODIR_TEMPERATURE", "1.5")
    assert main(["eval", "run", str(suite_file), "--out", str(run_dir), "--resume"]) == 0
    capsys.readouterr()
    suite_file.write_text(SUITE + "seeds: [0, 1]\n")  # a changed suite is still refused
    assert "no longer matches the run" in one_line(
        capsys, ["eval", "run", str(suite_file), "--out", str(run_dir), "--resume"]
    )


def test_resume_into_a_missing_directory_says_it_starts_a_new_run(
    tmp_path: Path, suite_file: Path, capsys: Any
) -> None:
    out = tmp_path / "never-made"
    assert main(["eval", "run", str(suite_file), "--out", str(out), "--resume"]) == 0
    err = capsys.readouterr().err
    assert f"--resume: {out} does not exist; starting a new run" in err
    assert len(read_records(out / "samples.jsonl")) == 2
    assert main(["eval", "run", str(suite_file), "--out", str(out), "--resume"]) == 0
    assert "does not exist" not in capsys.readouterr().err  # a real resume: no notice


# ------------------------------------------------------------------------------ summary.json: derived data
@pytest.mark.parametrize(
    "damage",
    ['{"broken', "", "[1, 2]", "{}", '{"summary_version": 999, "systems": {}}', b"\xff\xfe"],
    ids=["torn", "empty", "a-list", "no-keys", "other-version", "not-utf8"],
)
def test_a_damaged_summary_is_scored_again_from_the_samples(run_dir: Path, capsys: Any, damage: Any) -> None:
    summary = run_dir / "summary.json"
    good = json.loads(summary.read_text())
    if isinstance(damage, bytes):
        summary.write_bytes(damage)
    else:
        summary.write_text(damage)
    assert main(["eval", "report", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "plain_text" in captured.out and "Traceback" not in captured.err
    again = json.loads(summary.read_text())  # rewritten whole
    assert again["systems"] == good["systems"] and again["n_recorded"] == 2
    assert load_run(run_dir)["systems"] == good["systems"]


# ------------------------------------------------------------------------------ samples.jsonl: lose nothing
@pytest.mark.parametrize(
    ("lines", "bad_line"),
    [
        (lambda a, b: a[:40] + "\n" + "garbage\n", 1),  # the probe: a torn first record plus a garbage line
        (lambda a, b: a + "\n" + "{not json}\n" + b + "\n", 2),  # damage in the middle
        (lambda a, b: a + "\n" + b + "\n" + '{"id": "x"}\n', 3),  # a whole last line that is no record
        (lambda a, b: "\x00" * 20 + "\n" + a + "\n" + b[:10], 1),  # damage before a torn tail
    ],
    ids=["torn-first-plus-garbage", "middle", "whole-last-line", "nul-then-torn"],
)
def test_a_damaged_sample_file_is_refused_naming_the_line_and_nothing_is_written(
    run_dir: Path, suite_file: Path, capsys: Any, lines: Any, bad_line: int
) -> None:
    samples = run_dir / "samples.jsonl"
    first, second = samples.read_text().splitlines()
    samples.write_text(lines(first, second))
    (run_dir / "summary.json").unlink()  # so the report must read the samples
    before = _snapshot(run_dir)
    line = one_line(capsys, ["eval", "report", str(run_dir)])
    assert f"{samples}:{bad_line}: not a sample record" in line and "damaged" in line
    assert _snapshot(run_dir) == before
    # A resume reads the same file: refused before any work, the manifest untouched.
    line = one_line(capsys, ["eval", "run", str(suite_file), "--out", str(run_dir), "--resume"])
    assert f"{samples}:{bad_line}: not a sample record" in line
    assert _snapshot(run_dir) == before


def test_a_torn_last_line_is_set_aside_by_the_report_not_deleted(run_dir: Path, capsys: Any) -> None:
    samples = run_dir / "samples.jsonl"
    first, second = samples.read_text().splitlines()
    samples.write_text(first + "\n" + second[:25])  # killed while writing the second record
    assert main(["eval", "report", str(run_dir)]) == 0
    capsys.readouterr()
    assert samples.read_text() == first + "\n"
    assert torn_file(samples).read_text() == second[:25] + "\n"
    assert json.loads((run_dir / "summary.json").read_text())["n_recorded"] == 1


def test_a_torn_shard_line_is_kept_where_it_is_by_a_merge(tmp_path: Path) -> None:
    from evals.shards import merge_samples

    (tmp_path / "samples.rank0.jsonl").write_text(_line("a") + "\n")
    (tmp_path / "samples.rank1.jsonl").write_text(_line("b") + "\n" + _line("c")[:30])
    assert [r.id for r in merge_samples(tmp_path, ["a", "b", "c"])] == ["a", "b"]
    assert (tmp_path / "samples.rank1.jsonl").read_text().endswith(_line("c")[:30])  # shards are kept whole


def test_repair_keeps_every_torn_tail_and_completes_a_whole_record(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text(_line("a") + "\n" + '{"id": "b", "sys')
    repair_tail(path)
    path.write_text(path.read_text() + '{"id": "c"')  # a second crash
    repair_tail(path)
    assert path.read_text() == _line("a") + "\n"
    assert torn_file(path).read_text().splitlines() == ['{"id": "b", "sys', '{"id": "c"']
    path.write_text(path.read_text() + _line("d"))  # whole, but the newline never made it
    repair_tail(path)
    assert [r.id for r in read_records(path)] == ["a", "d"] and path.read_text().endswith("\n")
    assert len(torn_file(path).read_text().splitlines()) == 2


# ------------------------------------------------------------------------------ eval report --out
def test_report_out_in_a_missing_directory_is_created(run_dir: Path, tmp_path: Path, capsys: Any) -> None:
    target = tmp_path / "missing" / "dir" / "r.md"
    assert main(["eval", "report", str(run_dir), "--out", str(target)]) == 0
    assert f"written {target}" in capsys.readouterr().out
    assert "| plain_text |" in target.read_text()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: (t / "f").write_text("x") and t / "f" / "r.md", "is a file, not a directory"),
        (lambda t: (t / "d.md").mkdir() or t / "d.md", "is a directory; give a file path"),
        (lambda t: Path("/proc/emodir/r.md"), "/proc is not writable"),
    ],
    ids=["under-a-file", "a-directory", "read-only"],
)
def test_a_bad_report_out_is_named_before_any_work(
    run_dir: Path, tmp_path: Path, capsys: Any, make: Any, message: str
) -> None:
    (run_dir / "summary.json").unlink()  # the report would have to re-score (and write) first
    before = _snapshot(run_dir)
    target = make(tmp_path)
    line = one_line(capsys, ["eval", "report", str(run_dir), "--out", str(target)])
    assert f"--out {target}" in line and message in line
    assert _snapshot(run_dir) == before


def test_a_report_out_write_that_fails_anyway_names_out_and_prints_no_table(
    run_dir: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import evals.cli_eval

    def full_disk(path: Path, text: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path.parent / ".r.md.x1y2.tmp"))

    monkeypatch.setattr(evals.cli_eval, "write_text_atomic", full_disk)
    target = tmp_path / "r.md"
    assert main(["eval", "report", str(run_dir), "--out", str(target)]) == 1
    captured = capsys.readouterr()
    assert f"--out {target}: cannot write it (No space left on device)" in captured.err
    assert ".tmp" not in captured.err and "plain_text" not in captured.out


def test_resume_after_editing_a_prompt_file_is_refused_naming_it(
    run_dir: Path, suite_file: Path, tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from ed_common.settings import REPO_ROOT

    prompts = tmp_path / "prompts"
    shutil.copytree(REPO_ROOT / "prompts", prompts)
    child = prompts / "personas" / "child.md"
    child.write_text(child.read_text(encoding="utf-8") + "\nYou love puddles.\n", encoding="utf-8")
    monkeypatch.setenv("EMODIR_PROMPTS_DIR", str(prompts))
    line = one_line(capsys, ["eval", "run", str(suite_file), "--out", str(run_dir), "--resume"])
    assert "prompt_files: child changed" in line


def test_resume_into_a_file_is_refused_by_the_library_too(tmp_path: Path, suite_file: Path) -> None:
    from evals.suite import load_suite

    target = tmp_path / "a-file"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="is a file"):
        check_out_dir(target, load_suite(suite_file), suite_file, Shard(), True)


def test_suite_seeds_that_would_pass_the_largest_seed_are_refused_up_front(tmp_path: Path) -> None:
    from ed_common.limits import MAX_SEED
    from evals.suite import load_suite

    path = tmp_path / "s.yaml"
    path.write_text(
        SUITE.replace("images_per_prompt: 0", f"images_per_prompt: 4\nseeds: [0, {MAX_SEED // 2}]")
    )
    with pytest.raises(InvalidInputError, match=rf"seeds \[{MAX_SEED // 2}\] are too large; allowed: 0\.\."):
        load_suite(path)
