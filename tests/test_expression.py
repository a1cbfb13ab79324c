"""Expression descriptors on generated singing-like tones (seeded; no catalogue needed)."""
import numpy as np
import pytest

from encoders.embed import embed_songs
from encoders.expression import EXPRESSION_FEATURES, ExpressionEmbedder, expression_features

SR = 16000
IDX = {name: i for i, name in enumerate(EXPRESSION_FEATURES)}


def sung_notes(*, vib_rate=5.5, vib_depth=60.0, vib_delay=0.0, scoop=0.0, seconds=1.5, n_notes=4, seed=0,
               decay=0.8, h1_gain=1.0, noise=1e-3):
    """Harmonic tones (8 partials) on a few notes with gaps between them, vibrato of ``vib_depth`` cents
    starting ``vib_delay`` s into each note, and an exponential scoop from ``scoop`` cents below."""
    rng = np.random.default_rng(seed)
    out = []
    for midi in rng.choice([57, 60, 62, 64, 67], n_notes):
        t = np.arange(int(seconds * SR)) / SR
        env = np.clip((t - vib_delay) / 0.1, 0, 1)
        cents = vib_depth * env * np.sin(2 * np.pi * vib_rate * t) - scoop * np.exp(-t / 0.05)
        f0 = 440.0 * 2 ** ((midi - 69) / 12) * 2 ** (cents / 1200)
        phase = 2 * np.pi * np.cumsum(f0) / SR
        note = sum((h1_gain if h == 0 else 1.0) * decay ** h * np.sin((h + 1) * phase) for h in range(12))
        out += [note * np.hanning(len(note)) ** 0.1, np.zeros(int(0.2 * SR))]
    y = np.concatenate(out)
    return (0.3 * y / np.abs(y).max() + noise * rng.standard_normal(len(y))).astype(np.float32)


def test_vibrato_rate_and_depth_are_measured():
    f = expression_features(sung_notes(vib_rate=5.5, vib_depth=60.0))
    assert f[IDX["vibrato_rate_hz"]] == pytest.approx(5.5, abs=0.3)
    assert 40 < f[IDX["vibrato_depth_cents"]] < 100  # sqrt(2) x std of the residual: ~1.3x the amplitude
    half = expression_features(sung_notes(vib_rate=5.5, vib_depth=30.0))
    assert f[IDX["vibrato_depth_cents"]] / half[IDX["vibrato_depth_cents"]] == pytest.approx(2.0, rel=0.2)
    faster = expression_features(sung_notes(vib_rate=6.8, vib_depth=60.0))
    assert faster[IDX["vibrato_rate_hz"]] == pytest.approx(6.8, abs=0.3)
    flat = expression_features(sung_notes(vib_depth=0.0))
    assert flat[IDX["vibrato_depth_cents"]] < 10 and flat[IDX["voiced_share"]] > 0.7


def test_delayed_vibrato_and_scoop_move_their_descriptors():
    early = expression_features(sung_notes(vib_delay=0.0))
    late = expression_features(sung_notes(vib_delay=0.35))
    assert late[IDX["vibrato_onset_cents"]] > early[IDX["vibrato_onset_cents"]] + 10
    plain = expression_features(sung_notes(vib_depth=0.0))
    scooped = expression_features(sung_notes(vib_depth=0.0, scoop=250.0))
    assert scooped[IDX["scoop_cents"]] > plain[IDX["scoop_cents"]] + 50


def test_silence_gives_finite_zeros_and_the_embedder_batches():
    f = expression_features(np.zeros(SR, np.float32))
    assert np.all(np.isfinite(f)) and np.all(f == 0)
    waves = [sung_notes(seed=1), sung_notes(vib_depth=0.0, seed=2)]
    emb = ExpressionEmbedder()
    out = embed_songs(waves, {"expression": emb}, progress=False)["expression"]
    assert out.shape == (2, emb.dim) and out.dtype == np.float32
    np.testing.assert_allclose(out, emb.embed_waveforms(waves), rtol=1e-6)


def test_voice_quality_descriptors_follow_the_source():
    base = expression_features(sung_notes(vib_depth=0.0))
    dark = expression_features(sung_notes(vib_depth=0.0, decay=0.55))  # harmonics fall off faster
    assert dark[IDX["harmonic_tilt_db_per_octave"]] < base[IDX["harmonic_tilt_db_per_octave"]] - 3
    breathy = expression_features(sung_notes(vib_depth=0.0, noise=0.02))  # strong noise between harmonics
    assert breathy[IDX["harmonic_to_trough_db"]] < base[IDX["harmonic_to_trough_db"]] - 5
    assert breathy[IDX["cpp_db"]] < base[IDX["cpp_db"]]
    strong_h1 = expression_features(sung_notes(vib_depth=0.0, h1_gain=3.0))
    assert strong_h1[IDX["h1_h2_db"]] > base[IDX["h1_h2_db"]] + 5
