"""Segmentation metrics (being split by concern: this commit only moves the module so its history follows)."""

from .ranking import *  # noqa: F403
from .ranking import __all__  # noqa: F401
