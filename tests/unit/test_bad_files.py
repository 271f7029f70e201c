"""Family: files and values a user hands us (YAML, TOML, images, seeds, run directories, model ids).

Each is refused in one line that names the file or value and what is allowed, before any work starts.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ed_common.errors import InvalidInputError
from ed_common.image_files import ImageReadError, read_rgb
from ed_common.limits import MAX_SEED
from ed_common.render_contract import RenderOptions
from ed_common.safe_yaml import MAX_ALIASES, load_yaml
from tests.cli_helpers import one_line

SMOKE = "evals/suites/smoke.yaml"


# ------------------------------------------------------------------------------------------------- YAML
def _laughs(levels: int) -> str:
    rows = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_laughs(7), "more than 200000 YAML values once its aliases are expanded"),
        (
            "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n",
            f"more than {MAX_ALIASES} YAML aliases",
        ),
        ("x: '" + "y" * 1_000_001 + "'\n", "bytes of YAML; allowed: at most 1000000"),
        ("a: [1, 2\nb: 3\n", "invalid YAML"),
        ("a: &x [*x]\n", "once its aliases are expanded"),  # a list that contains itself
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
    ],
    ids=["billion-laughs", "many-aliases", "too-large", "syntax", "recursive", "deep"],
)
def test_yaml_over_a_limit_is_refused_before_it_is_built(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as info:
        load_yaml(text, where="suite.yaml")
    assert str(info.value).startswith("suite.yaml")


def test_yaml_within_the_limits_keeps_its_anchors() -> None:
    assert load_yaml("e: &e [fear, awe]\nf: *e\n", where="s") == {"e": ["fear", "awe"], "f": ["fear", "awe"]}


def test_a_hostile_suite_gets_a_short_error_not_megabytes(tmp_path: Path, capsys: Any) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(_laughs(5) + "name: x\n")  # 9^5 values: under the limit, but an error must not echo them
    line = one_line(capsys, ["eval", "run", str(suite), "--out", str(tmp_path / "run")])
    assert "Extra inputs are not permitted" in line and len(line) < 1500
    suite.write_text(_laughs(8))
    assert "aliases are expanded" in one_line(
        capsys, ["eval", "run", str(suite), "--out", str(tmp_path / "r")]
    )
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


def test_a_prompt_file_front_matter_uses_the_same_limits(tmp_path: Path) -> None:
    from ed_agents.prompts import parse_prompt_file

    path = tmp_path / "child.md"
    path.write_text("---\n" + _laughs(7) + "---\nYou.\n")
    parsed, problems = parse_prompt_file(path)
    assert parsed is None and any("aliases are expanded" in p.message for p in problems)


# ----------------------------------------------------------------------------------------- config files
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("seed = = 1\n", "invalid TOML"),
        ("nosuchkey = 1\n", "setting nosuchkey=1: Extra inputs are not permitted"),
        ("seed = -1\n", "setting seed=-1: Input should be greater than or equal to 0"),
        ('temperature = "hot"\n', "setting temperature='hot'"),
    ],
)
def test_a_bad_config_file_is_named_in_the_error(
    tmp_path: Path, capsys: Any, text: str, message: str
) -> None:
    config = tmp_path / "mine.toml"
    config.write_text(text)
    line = one_line(capsys, ["--config", str(config), "rewrite", "a dog", "-e", "fear"])
    assert f"config file {config}" in line and message in line


def test_a_bad_environment_value_is_named_as_such(capsys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_LLM_PORT", "99999")
    assert "environment EMODIR_LLM_PORT: setting llm_port" in one_line(
        capsys, ["rewrite", "a dog", "-e", "fear"]
    )


# ---------------------------------------------------------------------------------------------- seeds
@pytest.mark.parametrize(("seed", "n"), [(-1, 1), (MAX_SEED + 1, 1), (MAX_SEED, 2), (2**64, 1)])
def test_a_seed_out_of_range_is_refused_for_the_whole_run(seed: int, n: int) -> None:
    with pytest.raises(ValueError, match="seed"):
        RenderOptions(seed=seed, n_images=n)


def test_the_last_seed_that_fits_is_accepted() -> None:
    assert RenderOptions(seed=MAX_SEED - 3, n_images=4).seed == MAX_SEED - 3


@pytest.mark.parametrize("seed", ["99999999999999999999", "-5"])
def test_generate_with_a_bad_seed_fails_before_any_image(tmp_path: Path, capsys: Any, seed: str) -> None:
    out = tmp_path / "run"
    line = one_line(
        capsys, ["generate", "a dog", "-e", "fear", "--no-agents", "--seed", seed, "--out", str(out)]
    )
    assert "seed" in line and not out.exists()


# --------------------------------------------------------------------------------------------- images
def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb is just such a header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not an image", "cannot read image"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "cannot read image"),
        (_png_claiming(20_000, 20_000), "DecompressionBomb"),  # over PIL's own limit
        (_png_claiming(9_000, 9_000), "is 9000x9000 pixels; allowed: at most 67108864"),  # under it: ours
    ],
    ids=["garbage", "truncated", "bomb", "too-large"],
)
def test_an_image_that_cannot_be_read_is_named_inone_line(
    tmp_path: Path, capsys: Any, content: bytes, message: str
) -> None:
    path = tmp_path / "img.png"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message):
        read_rgb(path)
    line = one_line(capsys, ["world", "check", str(path)])
    assert str(path) in line and message in line


def test_a_truncated_real_image_is_refused_too(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:60])
    assert read_rgb(whole).size == (64, 64)
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_rgb(cut)


# ----------------------------------------------------------------------------------- run directories
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("thesis.txt", "precious", "is not an eval run"),
        ("manifest.json", "{torn", "manifest.json is damaged"),
    ],
)
def test_resume_into_a_directory_that_is_not_a_run_is_refused(
    tmp_path: Path, capsys: Any, name: str, content: str, message: str
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / name).write_text(content)
    line = one_line(capsys, ["eval", "run", SMOKE, "--out", str(mine), "--resume", "--agents-only"])
    assert message in line
    assert [p.name for p in mine.iterdir()] == [name] and (mine / name).read_text() == content


# ------------------------------------------------------------------------------------- model sources
@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("nosuch/model-x", "is not in the local Hugging Face cache"),
        ("not a model id", "neither an existing directory nor a hub id"),
        ("{tmp}", "missing model_index.json, unet, vae"),
    ],
)
def test_a_train_config_with_an_unknown_model_fails_before_training(
    tmp_path: Path, capsys: Any, pretrained: str, message: str
) -> None:
    (tmp_path / "b.safetensors").write_bytes(b"")
    config = tmp_path / "t.toml"
    config.write_text(
        f'pretrained = "{pretrained.format(tmp=tmp_path)}"\noutput_dir = "{tmp_path / "out"}"\n'
        f'bank = "{tmp_path / "b.safetensors"}"\ndata = "{tmp_path}"\n'
    )
    line = one_line(capsys, ["train", "sft", str(config)])
    assert line.startswith(f"error: {config}: pretrained") and message in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "nosuch/model-x"], "--model 'nosuch/model-x' is not in the local Hugging Face cache"),
        (["--bank", "/no/such/bank.safetensors"], "--bank '/no/such/bank.safetensors' is not a file"),
        (["--adapter", "/no/such/a.safetensors"], "--adapter '/no/such/a.safetensors' is not a file"),
    ],
)
def test_generate_checks_its_model_files_before_the_agents_run(
    tmp_path: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str
) -> None:
    # No LLM server anywhere: the model error must come first, not "cannot reach the LLM server".
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    argv = ["generate", "a dog", "-e", "fear", "--no-autostart", "--out", str(tmp_path / "r"), *flags]
    assert message in one_line(capsys, argv)


# ---------------------------------------------------------------------------- more files and values
@pytest.mark.parametrize("char", ["\x1b", "\x00", "\x07"])
def test_yaml_with_a_control_character_is_one_line(tmp_path: Path, capsys: Any, char: str) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: x{char}[31m\nemotions: [fear]\n")
    line = one_line(capsys, ["eval", "run", str(suite), "--out", str(tmp_path / "r")])
    assert "invalid YAML" in line and str(suite) in line


def test_a_prompt_file_with_a_control_character_in_its_front_matter_is_a_problem(tmp_path: Path) -> None:
    from ed_agents.prompts import parse_prompt_file

    path = tmp_path / "ctl.md"
    path.write_text("---\nid: ctl\x1b[31m\nkind: persona\nversion: 1\ndescription: d\n---\nYou.\n")
    parsed, problems = parse_prompt_file(path)
    assert parsed is None and any("invalid YAML" in p.message for p in problems)


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as f:  # a big file without writing its bytes
        f.truncate(size)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: _sparse(t / "big.toml", 50_000_000), "is over 1000000 bytes"),
        (lambda t: (t / "cfgdir").mkdir() or t / "cfgdir", "is a directory; give a file"),
        (lambda t: Path("/dev/zero"), "is not a regular file"),
        (lambda t: t / "none.toml", "does not exist"),
        (
            lambda t: (t / "deep.toml").write_text("a = " + "[" * 50_000 + "]" * 50_000) and t / "deep.toml",
            "nested",
        ),
        (lambda t: (t / "bin.toml").write_bytes(b"a = '\xff'\n") and t / "bin.toml", "is not UTF-8 text"),
    ],
    ids=["huge", "directory", "device", "missing", "deep", "binary"],
)
def test_a_config_file_is_checked_before_it_is_read(
    tmp_path: Path, capsys: Any, make: Any, message: str
) -> None:
    path = make(tmp_path)
    line = one_line(capsys, ["--config", str(path), "rewrite", "a dog", "-e", "fear"])
    assert f"config file {path}" in line and message in line


def test_an_oversized_prompt_file_is_a_problem_not_a_slow_read(tmp_path: Path) -> None:
    from ed_agents.prompts import MAX_PROMPT_FILE_BYTES, check_prompt_dir

    (tmp_path / "personas").mkdir()
    _sparse(tmp_path / "personas" / "huge.md", 100 * MAX_PROMPT_FILE_BYTES)
    _, problems = check_prompt_dir(tmp_path, require={})
    assert any(f"is over {MAX_PROMPT_FILE_BYTES} bytes" in p.message for p in problems)
    _, problems = check_prompt_dir(tmp_path / "personas" / "huge.md", require={})
    assert [p.message for p in problems] == ["is a file, not a prompts directory"]


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("EMODIR_LLM_BASE_URL", "http://256.1.1.1:99999/v1", "not a URL"),
        ("EMODIR_LLM_BASE_URL", "http://127.0.0.1:8765/\x1b[31mv1", "not a URL"),
        ("EMODIR_LLM_BASE_URL", "ftp://example.org/v1", "allowed: an http(s) URL"),
        ("EMODIR_DEVICE", "tpu", "allowed: cpu, cuda, cuda:N or mps"),
    ],
)
def test_a_bad_server_url_or_device_is_a_settings_error(
    capsys: Any, monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    for argv in (["llm", "status"], ["rewrite", "a dog", "-e", "fear", "--no-autostart"]):
        line = one_line(capsys, argv)
        assert f"environment {env}" in line and message in line and "\x1b[" not in line


def test_a_gpu_this_machine_lacks_is_named_before_any_work(
    capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from ed_diffusion.pipeline import pick_device

    missing = f"cuda:{torch.cuda.device_count() + 3}"
    with pytest.raises(InvalidInputError, match=f"device '{missing}' is not available"):
        pick_device(missing)
    monkeypatch.setenv("EMODIR_DEVICE", missing)
    monkeypatch.setenv("EMODIR_LLM_BASE_URL", "http://127.0.0.1:9/v1")  # never reached
    line = one_line(capsys, ["generate", "a dog", "-e", "fear", "--no-autostart", "--out", "/tmp/never-made"])
    assert f"device '{missing}' is not available" in line and not Path("/tmp/never-made").exists()
