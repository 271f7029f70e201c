"""Pluggable scorers (``registry``): text diversity and visual-word shares (``text``), cost (``cost``).

Image scorers live in ``ed_diffusion.scoring`` (torch) and are called by ``evals.aggregate`` lazily.
"""

# The built-in scorers register themselves on import. Python imports this package before any of its modules,
# so whoever imports the registry also has them, and the registry itself imports none of them (no cycle).
from evals.scorers import cost, health, text  # noqa: F401
from evals.scorers.registry import (
    DEFAULT_SCORERS,
    GroupScore,
    Scorer,
    get_scorer,
    register_scorer,
    scorer_names,
)

__all__ = ["DEFAULT_SCORERS", "GroupScore", "Scorer", "get_scorer", "register_scorer", "scorer_names"]
