import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data.errors import SingrecError
from recsys.cli import app
from recsys.rank import RESULT_COLUMNS, Audio, Mix, Recommender, Song


@pytest.fixture(scope="module")
def rec(tiny_index):
    return Recommender.load(tiny_index)


def test_singer_query(rec):
    name = rec.singers["singer"][0]
    res = rec.similar_singers(name, k=3, timbre_weight=0.6)
    assert list(res.columns[:len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert len(res) == 3 and name not in set(res["singer"]) and list(res["rank"]) == [1, 2, 3]
    assert res["score"].is_monotonic_decreasing
    np.testing.assert_allclose(res["score"], 0.6 * res["timbre_score"] + 0.4 * res["melody_score"], atol=1e-6)
    songs = rec.songs.set_index("song_id")["singer"]
    assert all(songs[q] == name for q in res["query_song"])
    assert all(songs[m] == s for m, s in zip(res["match_song"], res["singer"]))
    assert set(rec.metadata_columns) <= set(res.columns)


def test_timbre_weight_one_ranks_by_timbre(rec):
    res = rec.similar_singers(rec.singers["singer"][1], k=3, timbre_weight=1.0)
    assert res["timbre_score"].is_monotonic_decreasing
    np.testing.assert_allclose(res["score"], res["timbre_score"], atol=1e-6)


def test_song_and_audio_queries(rec):
    sid, path, singer = rec.songs.loc[4, ["song_id", "path", "singer"]]
    by_song = rec.similar_singers(Song(sid), k=3)
    assert singer not in set(by_song["singer"]) and set(by_song["query_song"]) == {sid}
    # the same file as an uploaded clip: its own singer is not excluded, comes first, and the reason
    # given is the song itself (the singer's score is the mean of its best TOP_SONGS matches, so below 1)
    by_audio = rec.similar_singers(Audio(path, label="upload.flac"), k=3)
    assert by_audio["singer"][0] == singer and by_audio["match_song"][0] == sid
    assert by_audio["query_song"][0] == "upload.flac" and by_audio["score"][0] > by_song["score"][0]
    assert list(by_audio["singer"][1:]) == list(by_song["singer"][:2])


def test_mix_filters_and_diversity(rec):
    a, b = rec.singers["singer"][:2]
    res = rec.similar_singers(Mix({a: 0.5, b: 0.5}), k=5)
    assert not {a, b} & set(res["singer"]) and len(res) == 2  # 4 singers - 2 in the mix
    gender = rec.singers["gender"].iloc[2]
    filtered = rec.similar_singers(a, k=5, filters={"gender": gender})
    assert len(filtered) >= 1 and set(filtered["gender"]) == {gender}
    diverse = rec.similar_singers(a, k=3, diversity=0.9)
    assert len(diverse) == 3 and diverse["singer"][0] == rec.similar_singers(a, k=3)["singer"][0]


def test_clear_errors(rec, tmp_path):
    name = rec.singers["singer"][0]
    with pytest.raises(SingrecError, match=f"closest: {name}"):
        rec.similar_singers(name[:-1] + "x")
    with pytest.raises(SingrecError, match="unknown song"):
        rec.similar_singers(Song("nope/nothing"))
    with pytest.raises(SingrecError, match="cannot filter on 'colour'"):
        rec.similar_singers(name, filters={"colour": "red"})
    with pytest.raises(SingrecError, match="timbre_weight"):
        rec.similar_singers(name, timbre_weight=2.0)
    bad = tmp_path / "clip.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    with pytest.raises(SingrecError, match="clip.wav"):
        rec.similar_singers(Audio(str(bad)))
    assert rec.resolve_singer(name.upper()) == name


def test_map_and_clusters(rec):
    x, y = rec.place_on_map(rec.embed_clip(rec.songs["path"][0]))
    xy = rec.map[["x", "y"]].to_numpy()
    assert xy[:, 0].min() - 1e-3 <= x <= xy[:, 0].max() + 1e-3 and xy[:, 1].min() - 1e-3 <= y <= xy[:, 1].max() + 1e-3
    cl = rec.clusters()
    assert cl["n_singers"].sum() == 4 and cl["n_songs"].sum() == 12


def test_cli_similar_json_matches_api(rec, tiny_index):
    name = rec.singers["singer"][0]
    out = CliRunner().invoke(app, ["similar", str(tiny_index), "--singer", name, "--k", "2", "--json"])
    assert out.exit_code == 0, out.output
    got = pd.DataFrame(json.loads(out.output))
    want = rec.similar_singers(name, k=2)
    assert list(got["singer"]) == list(want["singer"])
    np.testing.assert_allclose(got["score"], want["score"], atol=1e-6)


def test_cli_errors_and_evaluate(tiny_index):
    runner = CliRunner()
    out = runner.invoke(app, ["similar", str(tiny_index), "--singer", "nobody-at-all"])
    assert out.exit_code == 2 and "unknown singer" in out.output
    out = runner.invoke(app, ["similar", str(tiny_index)])
    assert out.exit_code == 2 and "exactly one" in out.output
    out = runner.invoke(app, ["evaluate", str(tiny_index), "--json"])
    assert out.exit_code == 0, out.output
    metrics = json.loads(out.output)
    assert metrics["songs"] == 12 and 0.0 <= metrics["ndcg@10"] <= 1.0
    assert 0.0 <= metrics["melody_map_across_singers"] <= 1.0
