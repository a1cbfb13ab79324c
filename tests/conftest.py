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
    """A folder with timbre.pt and melody.pt: small seeded (untrained) encoders saved as real checkpoints,
    so index/ranking tests exercise the checkpoint format and sha256 checks without the shipped weights."""
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
    # an unfitted voice profile head (seeded random weights) that reads this timbre encoder's vectors
    from encoders.checkpoint import file_sha256
    from encoders.profile import FrameNetConfig, ProfileConfig, VoiceProfile, voice_feature_names

    params = ("tessitura", "breath", "vib_rate")
    pcfg = ProfileConfig(params=params, voice_dim=len(voice_feature_names()) + len(params),  # + frame networks'
                         timbre_dim=tcfg.emb_dim, timbre_sha256=file_sha256(folder / "timbre.pt"), kernel_landmarks=8,
                         frame_net=asdict(FrameNetConfig(hidden=16, n_frames=50)))
    torch.manual_seed(0)
    head = VoiceProfile(pcfg)  # its frame networks: seeded random weights
    head.weight.normal_(0.0, 0.1)
    head.x_scale.fill_(100.0)
    head.landmarks.normal_(0.0, 0.05)  # a kernel part, so that index and ranking tests run its code path; it moves
    # the estimates ~25x less than the linear part (tests/test_profile.py checks what a fitted one computes)
    head.k_weight.normal_(0.0, 1.0)
    save_checkpoint(folder / "profile.pt", kind="profile", model=head, config=asdict(pcfg),
                    features=DEFAULT_FEATURES)
    return folder


@pytest.fixture(scope="session")
def tiny_encoders(tiny_checkpoints):
    """{"timbre", "melody", "profile"} loaded from :func:`tiny_checkpoints`."""
    from encoders.checkpoint import load_default_encoders, load_profile_head

    encs = load_default_encoders(tiny_checkpoints)
    encs["profile"] = load_profile_head(tiny_checkpoints, encs["timbre"])
    return encs


@pytest.fixture(scope="session")
def tiny_index(tiny_catalogue, tiny_encoders, tmp_path_factory):
    """A finished index directory of the tiny catalogue (read-only: copy it before changing anything)."""
    from index.build import build_catalogue_index

    out = tmp_path_factory.mktemp("tiny_index") / "index"
    build_catalogue_index(tiny_catalogue, out, encoders=tiny_encoders, progress=False)
    return out
