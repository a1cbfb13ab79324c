"""The synthetic catalogue: layout, ground truth, determinism, pitch accuracy and audio sanity."""
from __future__ import annotations

import json
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from data.errors import SingrecError
from data.synth import (REST, SINGER_PARAMS, Melody, make_melodies, sample_chain, sample_singers,
                        synthesize_catalogue, synthesize_song)

TINY = dict(singers=4, songs=3, seconds=3.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Folder of a 4 singers x 3 songs x 3 s catalogue, seed 0."""
    out = tmp_path_factory.mktemp("synth") / "cat"
    synthesize_catalogue(out, seed=0, **TINY)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_manifest(tiny):
    manifest = pd.read_csv(tiny / "manifest.csv")
    assert list(manifest.columns) == ["path", "singer", "gender", "voice_type", "genre", "melody_id", "title",
                                      "key", "tempo"]
    assert len(manifest) == 12 and manifest["path"].is_unique
    for rel, singer in zip(manifest["path"], manifest["singer"]):
        assert rel.startswith(f"audio/{singer}/") and rel.endswith(".flac") and "\\" not in rel
        assert (tiny / rel).is_file()
    assert set(manifest["gender"]) <= {"f", "m"}
    assert set(manifest["voice_type"]) <= {"soprano", "mezzo", "alto", "tenor", "baritone", "bass"}
    info = json.loads((tiny / "synth.json").read_text())
    assert info["args"] == {"singers": 4, "songs": 3, "seconds": 3.0, "seed": 0, "sample_rate": 16000}
    assert info["counts"]["songs"] == 12 and info["total_seconds"] == pytest.approx(36.0)
    singers = pd.read_csv(tiny / "ground_truth" / "singers.csv")
    assert list(singers.columns) == ["singer", "gender", "voice_type", "genre"] + [f"p_{k}" for k in SINGER_PARAMS]
    assert singers["singer"].is_unique and set(singers["singer"]) == set(manifest["singer"])
    songs = pd.read_csv(tiny / "ground_truth" / "songs.csv")
    assert list(songs["path"]) == list(manifest["path"])
    assert {"chain_rt60", "chain_snr_db", "chain_eq1_db", "chain_peak_db"} <= set(songs.columns)


def test_ground_truth_consistency(tiny):
    m = pd.read_csv(tiny / "manifest.csv")
    assert (m.groupby("singer").size() == TINY["songs"]).all()
    assert (m.groupby("singer")["melody_id"].nunique() == TINY["songs"]).all()  # different melodies each
    per_melody = m.groupby("melody_id")
    assert (per_melody["singer"].nunique() >= 2).all()  # every melody is sung by an ensemble
    assert (per_melody["key"].nunique() >= 2).all()  # ... in the singers' own keys
    assert (per_melody["tempo"].nunique() >= 2).all()
    # keys follow the singers' ranges: low voices sing lower than high voices
    gt = pd.read_csv(tiny / "ground_truth" / "singers.csv").set_index("singer")
    mean_key = m.groupby("singer")["key"].mean()
    assert np.corrcoef(mean_key, gt.loc[mean_key.index, "p_tessitura"])[0, 1] > 0.8


def test_audio_is_sane(tiny):
    for rel in pd.read_csv(tiny / "manifest.csv")["path"]:
        y, sr = sf.read(tiny / rel, dtype="float32")
        info = sf.info(tiny / rel)
        assert sr == 16000 and y.ndim == 1 and y.size == 3 * 16000
        assert info.format == "FLAC" and info.subtype == "PCM_16"
        assert np.all(np.isfinite(y))
        assert 1e-3 < np.sqrt(np.mean(y ** 2)) and np.max(np.abs(y)) < 0.95  # not silent, not clipping


def test_deterministic_and_independent_of_workers(tiny, tmp_path):
    again = synthesize_catalogue(tmp_path / "again", seed=0, workers=2, **TINY).parent
    assert _files(again) == _files(tiny)
    other = synthesize_catalogue(tmp_path / "other", seed=1, **TINY).parent
    a, b = _files(other), _files(tiny)
    assert a["manifest.csv"] != b["manifest.csv"]
    assert a["ground_truth/singers.csv"] != b["ground_truth/singers.csv"]


def test_rerun_keeps_finished_files(tiny, tmp_path):
    out = tmp_path / "cat"
    synthesize_catalogue(out, seed=0, **TINY)
    audio = sorted((out / "audio").rglob("*.flac"))
    stamps = [p.stat().st_mtime_ns for p in audio]
    audio[0].unlink()  # an interrupted run: one file missing
    synthesize_catalogue(out, seed=0, **TINY)
    assert [p.stat().st_mtime_ns for p in audio[1:]] == stamps[1:]
    assert _files(out) == _files(tiny)


def test_invalid_arguments(tmp_path):
    with pytest.raises(SingrecError):
        synthesize_catalogue(tmp_path / "x", singers=0)
    with pytest.raises(SingrecError):
        synthesize_catalogue(tmp_path / "x", singers=2, songs=1, seconds=0.1)
    (tmp_path / "file").write_text("")
    with pytest.raises(SingrecError):
        synthesize_catalogue(tmp_path / "file", singers=2, songs=1, seconds=2)


def test_singers_are_unique_and_within_bounds():
    df = sample_singers(200, np.random.default_rng(3))
    assert len(df) == 200 and df["singer"].is_unique
    assert df["singer"].str.fullmatch(r"[a-z]+-[a-z]+").all()
    p = df[[f"p_{k}" for k in SINGER_PARAMS]]
    assert np.isfinite(p.to_numpy()).all()
    assert p["p_vib_rate"].between(4.5, 7.0).all()
    # voice types set the range: sopranos sit well above basses
    assert df.loc[df.voice_type == "soprano", "p_tessitura"].min() > df.loc[df.voice_type == "bass",
                                                                             "p_tessitura"].max()


@pytest.mark.parametrize("voice_type, key", [("bass", 45), ("tenor", 55), ("soprano", 69)])
def test_sung_pitch_matches_the_score(voice_type, key):
    """A sustained vowel on the tonic, without recording chain, is sung at the tonic (median f0)."""
    rng = np.random.default_rng(0)
    singers = sample_singers(60, rng)
    singer = singers[singers.voice_type == voice_type].iloc[0]
    melody = Melody("m", "t", "major", (0, REST), (8.0, 1.0), (("", "a"), ("", "")), 120.0)
    y = synthesize_song(singer, melody, key=key, tempo=60.0, chain_params=None, seconds=6.0, sr=16000, rng=rng)
    note = y[int(1.5 * 16000):int(5.0 * 16000)]  # well inside the 8-second note (after the scoop)
    f0 = librosa.yin(note, fmin=60, fmax=1200, sr=16000, frame_length=2048)
    cents = 1200 * np.log2(np.median(f0) / librosa.midi_to_hz(key))
    assert abs(cents) < 30


def test_song_rendering_is_finite_and_varies_with_the_chain():
    rng = np.random.default_rng(1)
    singer = sample_singers(1, rng).iloc[0]
    melody = make_melodies(1, rng)[0]
    dry = synthesize_song(singer, melody, key=60, tempo=100, chain_params=None, seconds=2.0,
                          rng=np.random.default_rng(2))
    wet = synthesize_song(singer, melody, key=60, tempo=100, chain_params=sample_chain(rng), seconds=2.0,
                          rng=np.random.default_rng(2))
    assert dry.dtype == wet.dtype == np.float32 and dry.shape == wet.shape == (32000,)
    assert np.all(np.isfinite(wet)) and np.max(np.abs(wet)) < 1.0
    assert not np.allclose(dry, wet)


def test_mfcc_baseline_on_synthetic_songs(tiny):
    """The MFCC baseline peer: standardisation fitted on the set, the same result from waveforms (at any rate)
    and from log-mels."""
    from data.features import log_mel
    from encoders.baselines import MFCCEmbedder

    waves = [sf.read(tiny / p, dtype="float32")[0] for p in pd.read_csv(tiny / "manifest.csv")["path"]]
    emb = MFCCEmbedder()
    raw = emb.raw_waveforms(waves)
    assert emb.dim == 40 and raw.shape == (12, 40)
    emb.fit(raw)
    z = emb.transform(raw)
    standardised = (raw - emb.mean) / emb.scale
    np.testing.assert_allclose(standardised.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardised.std(0), 1.0, rtol=1e-3)
    import soxr
    raw32 = emb.raw_waveforms([soxr.resample(w, 16000, 32000) for w in waves[:3]], sr=32000)  # resampled back
    np.testing.assert_allclose(raw32, raw[:3], rtol=0.05, atol=0.5)
    np.testing.assert_allclose(emb.embed_logmels([log_mel(w) for w in waves]), z, atol=1e-5)
    with pytest.raises(SingrecError):
        emb.embed_logmels([np.zeros((10, 50))])
