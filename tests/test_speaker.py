"""The real-voice front end (encoders/speaker.py) and the fused timbre encoder, on generated audio."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from data.errors import SingrecError
from data.features import DEFAULT_FEATURES, log_mel
from encoders import speaker
from encoders.checkpoint import load_encoder, save_checkpoint
from encoders.speaker import SPEAKER_FEATURES, SpeakerConfig, partial_starts, song_partials, speaker_vectors
from encoders.timbre import TimbreConfig, TimbreEncoder, TimbreNet

SMALL = dict(channels=16, stat_channels=32, emb_dim=24, proj_dim=8, dilations=(1,))


def _voice(f0: float, seconds: float, formant: float, rng: np.random.Generator, sr: int = 16000) -> np.ndarray:
    """A harmonic tone with a formant and a little vibrato and noise."""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))) / sr
    y = sum(np.sin(h * phase) * np.exp(-((h * f0 - formant) / 500.0) ** 2) for h in range(1, 30))
    y = y / np.abs(y).max() + 0.01 * rng.standard_normal(len(t))
    return (0.3 * y).astype(np.float32)


@pytest.fixture(scope="module")
def waves():
    rng = np.random.default_rng(0)
    return [_voice(220, 0.9, 700, rng), _voice(180, 5.0, 900, rng), _voice(300, 23.0, 1200, rng)]


def test_weights_are_found_offline_in_the_installed_package():
    path = speaker.weights_path()
    assert path.is_file() and path.name == "pretrained.pt" and "resemblyzer" in str(path.parent)
    net, sha = speaker.load_ge2e()
    assert len(sha) == 64 and not net.training
    assert not any(p.requires_grad for p in net.parameters())  # frozen


def test_same_network_as_resemblyzers_own(waves):
    """The re-declared network with the package's weights gives Resemblyzer's embeddings."""
    from resemblyzer import VoiceEncoder  # imported here only: singrec itself never imports the package

    theirs = VoiceEncoder(device="cpu", verbose=False)
    parts = song_partials(waves[1], SpeakerConfig())  # (P, 160, 40)
    net, _ = speaker.load_ge2e()
    with torch.no_grad():
        assert torch.allclose(net(parts), theirs(parts), atol=1e-5)


def test_a_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SingrecError, match="pip install resemblyzer"):
        speaker.weights_path()


def test_partials_cover_the_song_and_are_bounded():
    cfg = SpeakerConfig(partial_frames=160, hop_frames=80, max_partials=5)
    assert list(partial_starts(100, cfg)) == [0]
    assert list(partial_starts(400, cfg)) == [0, 80, 160, 240]  # the last flush with the end
    long = partial_starts(10_000, cfg)
    assert len(long) == 5 and long[0] == 0 and long[-1] == 10_000 - 160  # spread over the whole song
    assert np.all(np.diff(long) > 0)


def test_partials_shape_level_and_tiling(waves):
    cfg = SpeakerConfig()
    p = song_partials(waves[1], cfg)  # 5 s: 500 frames
    assert p.shape == (len(partial_starts(SPEAKER_FEATURES.n_frames(len(waves[1])), cfg)), 160, 40)
    quiet = song_partials(waves[1] * 0.05, cfg)  # -26 dB: scaled back to the same level
    assert torch.allclose(quiet, p, rtol=1e-3, atol=1e-6)
    assert song_partials(waves[0], cfg).shape == (1, 160, 40)  # 0.9 s, tiled to one partial
    assert song_partials(waves[2], cfg).shape[0] == cfg.max_partials


def test_speaker_vectors_are_unit_deterministic_and_batch_independent(waves):
    a = speaker_vectors(waves)
    assert a.shape == (3, 256) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(a, speaker_vectors(waves))
    one_by_one = np.concatenate([speaker_vectors([w], SpeakerConfig(batch_partials=1)) for w in waves])
    assert np.allclose(a, one_by_one, atol=1e-5)
    assert speaker_vectors([]).shape == (0, 256)


def test_fused_encoder_is_the_weighted_concatenation(waves):
    torch.manual_seed(0)
    tdnn = TimbreEncoder(TimbreNet(TimbreConfig(**SMALL, speaker=False)))
    fused = TimbreEncoder(TimbreNet(TimbreConfig(**SMALL, tdnn_weight=0.5)))
    fused.model.load_state_dict(tdnn.model.state_dict())
    assert fused.input_kind == "waveform" and tdnn.input_kind == "logmel"
    assert fused.dim == 256 + 24 and fused.frontend["sha256"] == speaker.load_ge2e()[1]
    out = fused.embed_waveforms(waves)
    g, t = speaker_vectors(waves), tdnn.embed_logmels([log_mel(w) for w in waves])
    want = np.hstack([g, 0.5 * t]) / np.sqrt(1 + 0.5 ** 2)
    assert out.shape == (3, 280) and np.allclose(out, want, atol=1e-5)
    with pytest.raises(SingrecError, match="embed_waveforms"):
        fused.embed_logmels([log_mel(waves[0])])


def test_checkpoint_round_trip(tmp_path, waves):
    torch.manual_seed(1)
    cfg = TimbreConfig(**SMALL)
    enc = TimbreEncoder(TimbreNet(cfg))
    from dataclasses import asdict

    path = save_checkpoint(tmp_path / "timbre.pt", kind="timbre", model=enc.model, config=asdict(cfg),
                           features=DEFAULT_FEATURES)
    back = load_encoder(path, kind="timbre")
    assert back.speaker == enc.speaker and back.dim == enc.dim
    assert np.array_equal(back.embed_waveforms(waves), enc.embed_waveforms(waves))
