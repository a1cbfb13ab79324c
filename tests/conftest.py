"""Shared pytest fixtures: tiny generated catalogues (session-scoped, generated once per test run)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory):
    """Manifest path of a tiny synthetic catalogue: 4 singers x 3 songs x 4 s, seed 0 (read-only: copy it
    before changing anything)."""
    from data.synth import synthesize_catalogue

    return synthesize_catalogue(tmp_path_factory.mktemp("tiny_catalogue"), singers=4, songs=3, seconds=4, seed=0)
