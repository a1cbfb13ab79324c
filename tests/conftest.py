"""Shared pytest fixtures: tiny generated catalogues (session-scoped, generated once per test run)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory):
    """Manifest path of a tiny synthetic catalogue: 4 singers x 3 songs x 4 s, seed 0 (read-only: copy it
    before changing anything)."""
    from data.synth import synthesize_catalogue

    return synthesize_catalogue(tmp_path_factory.mktemp("tiny_catalogue"), singers=4, songs=3, seconds=4, seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A folder with timbre.pt and melody.pt: small seeded (untrained) encoders saved as real checkpoints, so
    index/ranking tests exercise the checkpoint format and sha256 checks without the shipped weights; plus the
    shipped gender.pt."""
    import torch

    from data.features import DEFAULT_FEATURES
    from dataclasses import asdict
    from encoders.checkpoint import save_checkpoint
    from encoders.melody import TCAE, MelodyConfig
    from encoders.timbre import TimbreConfig, TimbreNet

    folder = tmp_path_factory.mktemp("tiny_checkpoints")
    torch.manual_seed(0)
    tcfg = TimbreConfig()
    save_checkpoint(folder / "timbre.pt", kind="timbre", model=TimbreNet(tcfg), config=asdict(tcfg),
                    features=DEFAULT_FEATURES)
    mcfg = MelodyConfig(channels=16, n_layers=7, latent_dim=8, dec_layers=1)
    save_checkpoint(folder / "melody.pt", kind="melody", model=TCAE(mcfg), config=asdict(mcfg),
                    features=DEFAULT_FEATURES)
    # the shipped gender classifier, so that a build given this folder (checkpoints=...) predicts gender as a
    # build given only the tiny encoders (which reads the shipped folder's gender.pt) does
    import shutil

    from encoders.checkpoint import CHECKPOINT_DIR
    shutil.copy(CHECKPOINT_DIR / "gender.pt", folder / "gender.pt")
    return folder


@pytest.fixture(scope="session")
def tiny_encoders(tiny_checkpoints):
    """{"timbre", "melody"} loaded from :func:`tiny_checkpoints`."""
    from encoders.checkpoint import load_default_encoders

    return load_default_encoders(tiny_checkpoints)


@pytest.fixture(scope="session")
def tiny_index(tiny_catalogue, tiny_encoders, tmp_path_factory):
    """A finished index directory of the tiny catalogue (read-only: copy it before changing anything)."""
    from index.build import build_catalogue_index

    out = tmp_path_factory.mktemp("tiny_index") / "index"
    build_catalogue_index(tiny_catalogue, out, encoders=tiny_encoders, progress=False)
    return out
