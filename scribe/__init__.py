"""scribe — local-first ambient clinical documentation."""

__version__ = "0.1.0"
