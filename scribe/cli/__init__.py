"""The command line (``scribe``): see ``main`` for the verb groups."""

from .main import main

__all__ = ["main"]
