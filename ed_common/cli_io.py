"""What every `emodir` command group shares: the two consoles and the settings of this invocation."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from ed_common.settings import Settings, load_settings

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    """The settings for this command: ``--config`` (kept on the root context), then ``overrides``."""
    config = (ctx.find_root().obj or {}).get("config")
    return load_settings(config, **overrides)
