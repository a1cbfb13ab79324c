"""Voice attributes (encoders/voice.py): the sung range against known notes, voice types, the gender classifier."""
from __future__ import annotations

import numpy as np
import pytest

from data.errors import SingrecError
from encoders.voice import (GenderClassifier, GenderConfig, f0_track, leave_one_singer_out, note_name,
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
    low = sung_range(_sing([45], 1.0))
    assert low.dtype == np.float32 and abs(low[1] - 45) < 0.3


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
    clf = GenderClassifier.fit(x, y, GenderConfig(speaker_key="abc"))
    p = clf.predict_proba(x)
    assert p.dtype == np.float32 and np.mean((p > 0.5) == y) == 1.0
    path = save_checkpoint(tmp_path / "gender.pt", kind="gender", model=clf.module(), config=clf.config(),
                           features=DEFAULT_FEATURES)
    back = load_encoder(path, kind="gender")
    assert back.cfg.speaker_key == "abc"
    assert np.allclose(back.predict_proba(x), p, atol=1e-5)
    singers = np.repeat([f"s{i}" for i in range(8)], 10)  # 4 female, 4 male singers of 10 songs
    assert leave_one_singer_out(x, y, singers) == 1.0


def test_one_class_only_is_a_clear_error():
    x, _ = _clusters(5)
    with pytest.raises(SingrecError, match="one class only"):
        GenderClassifier.fit(x, np.ones(10, bool))


def test_train_gender_on_a_synthetic_catalogue(tiny_catalogue, tmp_path):
    from encoders.checkpoint import load_encoder, read_checkpoint
    from encoders.train import train
    from encoders.voice import gender_labels

    assert list(gender_labels(["F", "male", " w ", "x", None])) == ["f", "m", "f", None, None]
    path = train(tiny_catalogue, tmp_path, encoder="gender", progress=False, command="pytest")["gender"]
    ckpt = read_checkpoint(path)
    assert ckpt["kind"] == "gender" and ckpt["metrics"]["songs"] == 12 and ckpt["metrics"]["singers"] == 4
    assert ckpt["config"]["speaker_key"].endswith("dBFS:24")
    assert 0.0 <= ckpt["metrics"]["train_song_accuracy"] <= 1.0
    assert isinstance(load_encoder(path), GenderClassifier)


# ------------------------------------------------------------------ in the index (index/attributes.py)
def test_index_has_typed_attribute_columns_and_keeps_the_catalogue_gender(tiny_index, tiny_catalogue):
    import pandas as pd

    from index.attributes import ATTRIBUTE_COLUMNS

    from index.store import current_snapshot

    snap = current_snapshot(tiny_index)
    songs, singers = pd.read_parquet(snap / "songs.parquet"), pd.read_parquet(snap / "singers.parquet")
    own = pd.read_csv(tiny_catalogue).set_index("singer")["gender"].groupby(level=0).first()
    for table in (songs, singers):
        assert set(ATTRIBUTE_COLUMNS) <= set(table.columns)
        assert table["gender_p"].dtype == np.float32 and table["gender_p"].between(0, 1).all()
        assert set(table["gender_pred"]) <= {"f", "m"} and set(table["gender_source"]) == {"predicted"}
        assert all(table[c].dtype == np.float32 for c in ("range_low_midi", "range_centre_midi", "range_high_midi"))
        assert (table["range_low_midi"] <= table["range_high_midi"]).all()
        assert table["range_low"].map(lambda n: n == note_name(float("nan")) or n[-1].isdigit()).all()
        assert set(table["voice_type_pred"]) <= {"soprano", "mezzo", "alto", "tenor", "baritone", "bass"}
        assert (table["singer"].map(own) == table["gender"]).all()  # the catalogue's own column, untouched
    # a singer's probability pools its songs' own probabilities, and every song carries its singer's
    from encoders.checkpoint import CHECKPOINT_DIR, load_encoder
    from encoders.voice import speaker_part

    own_p = load_encoder(CHECKPOINT_DIR / "gender.pt").predict_proba(
        speaker_part(np.load(snap / "embeddings" / "songs_timbre.npy")))
    pooled = pd.Series(own_p).groupby(songs["singer"].to_numpy()).mean()
    assert pooled.nunique() > 1  # the singers differ: pooling is tested on something
    np.testing.assert_allclose(singers.set_index("singer")["gender_p"].loc[pooled.index], pooled, atol=1e-6)
    np.testing.assert_allclose(songs["gender_p"], songs["singer"].map(pooled), atol=1e-6)
    assert (songs.groupby("singer")["gender_pred"].nunique() == 1).all()


def test_the_build_measures_the_range_from_the_audio_it_decodes_for_the_encoders(tiny_catalogue, tiny_encoders,
                                                                                  tmp_path, monkeypatch):
    import pandas as pd

    import index.attributes
    from data.audio import load_audio
    from index.build import build_catalogue_index
    from index.store import current_snapshot

    man = pd.read_csv(tiny_catalogue)
    man["path"] = [str(tiny_catalogue.parent / p) for p in man["path"]]
    man.iloc[:4].to_csv(tmp_path / "four.csv", index=False)
    monkeypatch.setattr(index.attributes, "load_audio", lambda *a, **k: pytest.fail("audio decoded a second time"))
    build_catalogue_index(tmp_path / "four.csv", tmp_path / "idx", encoders=tiny_encoders, progress=False)
    songs = pd.read_parquet(current_snapshot(tmp_path / "idx") / "songs.parquet").set_index("path")
    for path in man["path"].iloc[:4]:
        want = sung_range(load_audio(path))
        np.testing.assert_allclose(songs.loc[path, ["range_low_midi", "range_centre_midi", "range_high_midi"]]
                                   .to_numpy(np.float32), want, rtol=0, atol=1e-4)


def test_fit_gender_refits_on_labels_and_one_class_fails_before_embedding(tiny_catalogue, tiny_encoders, tmp_path):
    import pandas as pd

    from index.build import build_catalogue_index

    man = pd.read_csv(tiny_catalogue)
    man["path"] = [str(tiny_catalogue.parent / p) for p in man["path"]]
    singers = sorted(man["singer"].unique())
    one = man.assign(sex=np.where(man["singer"] == singers[0], "F", None))
    one.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(SingrecError, match="none labelled m"):
        build_catalogue_index(tmp_path / "one.csv", tmp_path / "idx-one", fit_gender="sex", progress=False)
    assert not (tmp_path / "idx-one" / "build").exists()  # failed before any embedding (no plan, no chunk)
    with pytest.raises(SingrecError, match="no column 'nope'"):
        build_catalogue_index(tmp_path / "one.csv", tmp_path / "idx-one", fit_gender="nope", progress=False)
    # three of the four singers labelled (both genders): the fourth is predicted; the labels are kept as given
    g = man.groupby("singer")["gender"].first()
    assert g.nunique() == 2, g.to_dict()
    g = g.loc[[s for s in g.index if s != g[g == g.mode()[0]].index[0]] + [g[g == g.mode()[0]].index[0]]]
    labelled = man.assign(sex=np.where(man["singer"].isin(g.index[:3]), man["gender"], None))
    labelled.to_csv(tmp_path / "three.csv", index=False)
    out = tmp_path / "idx"
    report = build_catalogue_index(tmp_path / "three.csv", out, encoders=tiny_encoders, fit_gender="sex",
                                   progress=False)
    assert "fitted on the 3 singers labelled in 'sex'" in report.summary()
    from index.store import current_snapshot

    table = pd.read_parquet(current_snapshot(out) / "singers.parquet").set_index("singer")
    assert (table.loc[g.index[:3], "gender_source"] == "label").all()
    assert (table.loc[g.index[:3], "gender_pred"] == g.iloc[:3].str.lower()).all()
    assert table.loc[g.index[3], "gender_source"] == "predicted"


def test_filters_on_predicted_gender_in_the_api_the_cli_and_the_page(tiny_index, monkeypatch):
    import json

    from typer.testing import CliRunner

    from app import explorer
    from app.cli import app
    from recsys.rank import Recommender

    rec = Recommender.load(tiny_index)
    query = rec.singers["singer"].iloc[0]
    for want in ("f", "m"):
        got = rec.similar_singers(query, k=10, filters={"gender_pred": want})
        expected = set(rec.singers.loc[rec.singers["gender_pred"] == want, "singer"]) - {query}
        assert set(got["singer"]) == expected
    out = CliRunner().invoke(app, ["similar", str(tiny_index), "--singer", query, "--where", "gender_pred=m",
                                   "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert rows and {r["gender_pred"] for r in rows} == {"m"}
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv(explorer.ENV_VAR, str(tiny_index))
    from pathlib import Path

    page = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "streamlit_app.py"),
                             default_timeout=60).run()
    page.multiselect(key="filter_gender_pred").select("f")
    page.run()
    assert not page.exception, [e.value for e in page.exception]
    table = next(d.value for d in page.dataframe if "timbre_score" in d.value.columns)
    assert set(table["gender_pred"]) <= {"f"}
