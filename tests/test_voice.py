"""Voice attributes (encoders/voice.py): the sung range against known notes, voice types, the gender classifier."""
from __future__ import annotations

import numpy as np
import pytest

from data.errors import SingrecError
from encoders.voice import (GenderClassifier, GenderConfig, RangeMeter, f0_track, leave_one_singer_out, note_name,
                            sung_range, voice_type)

SR = 16000


def _sing(notes_midi, seconds_each: float = 0.6, rng=None) -> np.ndarray:
    """Harmonic tones at the given MIDI notes with a 5.5-Hz vibrato of +-20 cents and a little noise."""
    rng = rng or np.random.default_rng(0)
    out = []
    for m in notes_midi:
        t = np.arange(int(seconds_each * SR)) / SR
        f0 = 440.0 * 2 ** ((m - 69) / 12) * 2 ** (0.2 / 12 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / SR
        y = sum(np.sin(h * phase) / h for h in range(1, 16))
        out.append(y / np.abs(y).max())
    y = np.concatenate(out)
    return (0.3 * y + 0.003 * rng.standard_normal(len(y))).astype(np.float32)


def test_f0_track_finds_a_known_note_and_silence_is_unvoiced():
    midi, voiced = f0_track(_sing([57], 2.0))  # A3, 220 Hz
    assert voiced.mean() > 0.9
    assert abs(np.median(midi[voiced]) - 57) < 0.15
    _, quiet = f0_track(np.zeros(SR, np.float32))
    assert not quiet.any()


def test_sung_range_matches_the_notes_sung():
    lo, centre, hi = sung_range(_sing([48, 52, 55, 60, 64], 0.8))
    assert abs(lo - 48) < 0.5 and abs(hi - 64) < 0.5 and abs(centre - 55) < 0.5
    assert np.isnan(sung_range(np.zeros(SR, np.float32))).all()  # nothing voiced: no range
    rows = RangeMeter().embed_waveforms([_sing([60], 1.0), _sing([45], 1.0)])
    assert rows.shape == (2, 3) and rows.dtype == np.float32 and abs(rows[1, 1] - 45) < 0.3


def test_note_names_and_voice_types():
    assert note_name(45) == "A2" and note_name(64.4) == "E4" and note_name(float("nan")) == ""
    assert voice_type(71, "f") == "soprano" and voice_type(64, "f") == "alto" and voice_type(50, "m") == "bass"
    assert voice_type(62, "m") == "tenor"  # the nearest of the singer's gender, not the nearest overall (alto)
    assert voice_type(62, None) == "alto" and voice_type(float("nan"), "f") == ""


def _clusters(n_per: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centre = rng.standard_normal((2, 256))
    x = np.concatenate([centre[0] + rng.standard_normal((n_per, 256)), centre[1] + rng.standard_normal((n_per, 256))])
    y = np.r_[np.ones(n_per, bool), np.zeros(n_per, bool)]
    return x / np.linalg.norm(x, axis=1, keepdims=True), y


def test_gender_classifier_fits_predicts_and_round_trips(tmp_path):
    from encoders.base import save_checkpoint
    from encoders.checkpoint import load_encoder
    from data.features import DEFAULT_FEATURES

    x, y = _clusters(40)
    clf = GenderClassifier.fit(x, y, GenderConfig(timbre_sha256="abc"))
    p = clf.predict_proba(x)
    assert p.dtype == np.float32 and np.mean((p > 0.5) == y) == 1.0
    path = save_checkpoint(tmp_path / "gender.pt", kind="gender", model=clf.module(), config=clf.config(),
                           features=DEFAULT_FEATURES)
    back = load_encoder(path, kind="gender")
    assert back.cfg.timbre_sha256 == "abc"
    assert np.allclose(back.predict_proba(x), p, atol=1e-5)
    singers = np.repeat([f"s{i}" for i in range(8)], 10)  # 4 female, 4 male singers of 10 songs
    assert leave_one_singer_out(x, y, singers) == 1.0


def test_one_class_only_is_a_clear_error():
    x, _ = _clusters(5)
    with pytest.raises(SingrecError, match="one class only"):
        GenderClassifier.fit(x, np.ones(10, bool))


def test_train_gender_on_a_synthetic_catalogue(tiny_catalogue, tmp_path):
    from encoders.checkpoint import load_encoder, read_checkpoint
    from encoders.train import gender_labels, train

    assert list(gender_labels(["F", "male", " w ", "x", None])) == ["f", "m", "f", None, None]
    path = train(tiny_catalogue, tmp_path, encoder="gender", progress=False, command="pytest")["gender"]
    ckpt = read_checkpoint(path)
    assert ckpt["kind"] == "gender" and ckpt["metrics"]["songs"] == 12 and ckpt["metrics"]["singers"] == 4
    assert ckpt["config"]["timbre_sha256"]
    assert 0.0 <= ckpt["metrics"]["train_song_accuracy"] <= 1.0
    assert isinstance(load_encoder(path), GenderClassifier)
