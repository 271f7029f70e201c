"""`emodir eval run|report` against a fake OpenAI-compatible server (agents only: no images, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app, main
from ed_agents.testing.fake_openai_server import FakeOpenAIServer
from evals.shards import read_records

runner = CliRunner()
SUITE = """name: cli
emotions: [fear]
prompts: [{text: an old dog in the snow, content: dog}, {text: a lighthouse}]
systems: [{kind: full_graph, personas: [child]}, {kind: plain, visual_prompts: false}]
images_per_prompt: 0
settings: {n_personas: 1}
"""


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.fixture
def suite_file(tmp_path: Path) -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(SUITE)
    return path


def test_eval_run_then_resume_then_report(
    tmp_path: Path, suite_file: Path, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "run", str(suite_file), "--out", str(out), "--concurrency", "2"])
    assert result.exit_code == 0, result.output
    assert "4 sample(s) run, 0 already done, 0 failed" in result.output
    for name in ("samples.jsonl", "summary.json", "report.md", "report.html", "manifest.json", "suite.yaml"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["n_personas"] == 1 and manifest["seeds"] == [0]  # the suite's settings won
    assert {f["id"] for f in manifest["prompt_files"]} >= {"consensus", "single_rewrite"}
    assert len(manifest["suite_sha256"]) == 64 and manifest["llm"]["base_url"] == fake_server.base_url
    assert len(read_records(out / "samples.jsonl")) == 4

    again = runner.invoke(app, ["eval", "run", str(suite_file), "--out", str(out), "--resume"])
    assert again.exit_code == 0 and "0 sample(s) run, 4 already done" in again.output

    report = runner.invoke(app, ["eval", "report", str(out)])
    assert report.exit_code == 0 and "full_graph_vp" in report.output and "Overview" in report.output
    other = tmp_path / "other" / "run"  # same directory name: the columns get numbered
    runner.invoke(app, ["eval", "run", str(suite_file), "--out", str(other)])
    table = tmp_path / "cmp.md"
    compared = runner.invoke(app, ["eval", "report", str(out), str(other), "--out", str(table)])
    assert compared.exit_code == 0, compared.output
    text = table.read_text()
    assert "| system | metric | 1:run | 2:run | Δ 2:run |" in text and "| full_graph_vp | tokens |" in text
    picked = runner.invoke(app, ["eval", "report", str(out), str(other), "--metrics", "tokens"])
    assert picked.exit_code == 0 and "tokens" in picked.output and "latency" not in picked.output
    assert (
        main(["eval", "report", str(out), "--metrics", "tokens,tokenz"]) == 1
    )  # a typo is not an empty table


def test_report_of_runs_that_differ_warns_and_writes_html(
    tmp_path: Path,
    suite_file: Path,
    fake_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    other_suite = tmp_path / "seeds.yaml"
    other_suite.write_text(
        SUITE.replace("settings: {n_personas: 1}", "settings: {n_personas: 1}\nseeds: [3]")
    )
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for suite, out in ((suite_file, a), (suite_file, b), (other_suite, c)):
        assert main(["eval", "run", str(suite), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "report", str(a), str(b), "--out", str(tmp_path / "same.md")]) == 0
    assert "warning" not in capsys.readouterr().err  # the same suite and settings: nothing to say
    assert main(["eval", "report", str(a), str(c), "--out", str(tmp_path / "cmp.html")]) == 0
    err = capsys.readouterr().err
    assert "warning: c differs from a in suite.seeds: [3] vs [0]" in " ".join(err.split())
    page = (tmp_path / "cmp.html").read_text()
    assert page.startswith("<!doctype html>") and "Runs differ" in page and "suite.seeds" in page
    assert "<table>" in page and "full_graph_vp" in page
    assert main(["eval", "report", str(a), str(c), "--out", str(tmp_path / "cmp.md")]) == 0
    assert (tmp_path / "cmp.md").read_text().startswith("> **Runs differ:** c differs from a in suite.seeds")
    capsys.readouterr()
    assert "allowed a .md (Markdown) or .html file" in _one_line_error(
        capsys, ["eval", "report", str(a), "--out", str(tmp_path / "cmp.txt")]
    )


def test_eval_run_refuses_a_used_out_dir_in_one_line(
    tmp_path: Path, suite_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    line = _one_line_error(capsys, ["eval", "run", str(suite_file), "--out", str(tmp_path / "run")])
    assert "is not empty (notes.txt); pass --resume" in line
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("edit", "argv", "needle"),
    [
        (("images_per_prompt: 0", "images_per_prompt: 0\nprompt: x"), [], "cli.yaml: prompt: Extra inputs"),
        (("settings: {n_personas: 1}", "settings: {preset: huge}"), [], "cli.yaml: setting preset='huge'"),
        (("kind: plain,", "kind: plain, vp_scale: 99,"), [], "systems.1.vp_scale: Input should be less"),
        (None, ["--concurrency", "0"], "--concurrency 0: allowed 1 or more"),
    ],
)
def test_eval_run_bad_input_is_one_line(
    tmp_path: Path,
    suite_file: Path,
    capsys: pytest.CaptureFixture[str],
    edit: tuple[str, str] | None,
    argv: list[str],
    needle: str,
) -> None:
    if edit is not None:
        suite_file.write_text(SUITE.replace(*edit))
    line = _one_line_error(capsys, ["eval", "run", str(suite_file), "--out", str(tmp_path / "r"), *argv])
    assert needle in line


def test_eval_run_without_a_server_is_one_line(
    tmp_path: Path, suite_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMODIR_LLM_PORT", "9")  # nothing listens on the discard port
    argv = ["eval", "run", str(suite_file), "--out", str(tmp_path / "r"), "--no-autostart"]
    assert "cannot reach the LLM server at http://127.0.0.1:9/v1" in _one_line_error(capsys, argv)
    assert not (tmp_path / "r").exists()  # nothing was created before the checks passed


def test_eval_report_on_a_non_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not an eval run directory" in _one_line_error(capsys, ["eval", "report", str(tmp_path)])


def test_an_interrupted_run_says_how_to_resume(
    tmp_path: Path,
    suite_file: Path,
    capsys: pytest.CaptureFixture[str],
    fake_server: FakeOpenAIServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import evals.runner

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    monkeypatch.setattr(evals.runner, "run_suite", interrupted)
    assert main(["eval", "run", str(suite_file), "--out", str(tmp_path / "r")]) == 130
    assert f"--out {tmp_path / 'r'} --resume" in capsys.readouterr().err


def test_rich_tables_escape_markup_in_run_labels() -> None:
    from rich.console import Console

    from evals.cli_eval import _rich_table
    from evals.tables import TableData

    console = Console(width=120, record=True)
    console.print(_rich_table(TableData("Comparison", ["metric", "runs[/]", "[red]b"], [["x", "1", "2"]])))
    text = console.export_text()
    assert "runs[/]" in text and "[red]b" in text


def test_eval_run_agents_only_renders_nothing_and_reports_agent_health(
    tmp_path: Path, suite_file: Path, fake_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", fake_server.base_url)
    with_images = suite_file.read_text().replace("images_per_prompt: 0", "images_per_prompt: 2")
    suite_file.write_text(with_images)
    out = tmp_path / "run"
    result = runner.invoke(app, ["eval", "run", str(suite_file), "--out", str(out), "--agents-only"])
    assert result.exit_code == 0, result.output
    records = read_records(out / "samples.jsonl")
    assert records and all(not r.images for r in records)
    summary = json.dumps(json.loads((out / "summary.json").read_text()))
    assert "health/llm_written/write_consensus" in summary
    assert "Agent health" in (out / "report.md").read_text()
    # The run's identity includes the flag: a resume without it is a different run.
    again = runner.invoke(app, ["eval", "run", str(suite_file), "--out", str(out), "--resume"])
    assert again.exit_code != 0


def test_eval_run_that_mostly_fails_says_so_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nemotions: [fear]\nprompts: [{text: a dog}, {text: a cat}]\n"
        "systems: [{kind: single_llm}]\nimages_per_prompt: 0\n"
    )
    with FakeOpenAIServer(fail_json_first=1000) as server:  # every reply is broken JSON
        monkeypatch.setenv("EMODIR_LLM_BASE_URL", server.base_url)
        assert main(["eval", "run", str(suite), "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("error:")]
    assert "2 of 2 samples failed (over --max-failed 0.1)" in line and "most often (2x)" in line
    assert "no JSON object found in the reply" in line and "Traceback" not in err
    assert (tmp_path / "run" / "report.md").is_file()  # the report is still written
    assert main(["eval", "run", str(suite), "--out", str(tmp_path / "x"), "--max-failed", "2"]) == 1
