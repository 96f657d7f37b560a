"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def isolated_cli(tmp_path, monkeypatch):
    """A command run in its own folder with its own data directory and no site config."""
    monkeypatch.delenv("SCRIBE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SCRIBE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COLUMNS", "200")
