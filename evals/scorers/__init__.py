"""Pluggable scorers (``registry``): text diversity and visual-word shares (``text``), cost (``cost``).

Image scorers live in ``ed_diffusion.scoring`` (torch) and are called by ``evals.aggregate`` lazily.
"""

from evals.scorers.registry import (
    DEFAULT_SCORERS,
    GroupScore,
    Scorer,
    get_scorer,
    register_scorer,
    scorer_names,
)

__all__ = ["DEFAULT_SCORERS", "GroupScore", "Scorer", "get_scorer", "register_scorer", "scorer_names"]
