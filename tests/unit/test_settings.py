from __future__ import annotations

from pathlib import Path

import pytest

from ed_agents.errors import InvalidInputError
from ed_common.settings import load_settings


def test_settings_precedence_flag_over_env_over_file_over_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "emodir.toml"
    cfg.write_text('llm_model = "from-file"\nseed = 11\nn_personas = 3\ntemperature = 0.3\n')
    assert load_settings().llm_model == "smollm2"  # default
    assert load_settings(cfg).llm_model == "from-file"  # file > default
    assert load_settings(cfg).temperature == 0.3
    monkeypatch.setenv("EMODIR_LLM_MODEL", "from-env")
    monkeypatch.setenv("EMODIR_SEED", "22")
    s = load_settings(cfg)
    assert (s.llm_model, s.seed, s.n_personas) == ("from-env", 22, 3)  # env > file
    s = load_settings(cfg, llm_model="from-flag", seed=None)
    assert (s.llm_model, s.seed) == ("from-flag", 22)  # flag > env; None = flag not given


def test_settings_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("llm_port = 9001\n")
    monkeypatch.setenv("EMODIR_CONFIG", str(cfg))
    s = load_settings()
    assert s.effective_llm_base_url == "http://127.0.0.1:9001/v1"
    assert s.uses_embedded_server


def test_settings_personas_from_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMODIR_PERSONAS", "child, zen_gardener")
    assert load_settings().personas == ("child", "zen_gardener")


def test_settings_missing_config_file_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_bad_value_names_it() -> None:
    with pytest.raises(InvalidInputError, match="n_personas=0"):
        load_settings(n_personas=0)


def test_settings_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("llm_modle = 'typo'\n")
    with pytest.raises(InvalidInputError, match="llm_modle"):
        load_settings(cfg)
