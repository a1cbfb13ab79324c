import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from data.errors import SingrecError
from app.cli import app
from recsys.rank import RESULT_COLUMNS, TIMBRE_WEIGHT, Audio, Mix, Recommender, Song


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
    default = rec.similar_singers(name, k=3)  # timbre_weight: the module default
    np.testing.assert_allclose(default["score"], TIMBRE_WEIGHT * default["timbre_score"]
                               + (1 - TIMBRE_WEIGHT) * default["melody_score"], atol=1e-6)
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
    assert rec.resolve_singer(" " + name.replace("-", " ").title()) == name  # "Ada Holm" finds "ada-holm"


def test_singer_names_that_differ_only_in_punctuation_are_ambiguous(tiny_index):
    rec = Recommender.load(tiny_index)
    name = rec.singers["singer"][0]
    twin = name.replace("-", "_") if "-" in name else name + "_"
    rec._singer_row = {**rec._singer_row, twin: len(rec._singer_row)}  # a second singer with the same key
    assert rec.resolve_singer(twin) == twin and rec.resolve_singer(name) == name  # exact names still work
    with pytest.raises(SingrecError, match="ambiguous"):
        rec.resolve_singer(name.replace("-", " ").upper())


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
    assert metrics["songs"] == 12 and 0.0 <= metrics["ndcg@10"] <= 1.0 and 0.0 <= metrics["ndcg@10_timbre_only"] <= 1.0
    assert 0.0 <= metrics["melody_map_across_singers"] <= 1.0


def _vector_recommender(n_singers: int, songs_per_singer: int, seed: int = 0) -> Recommender:
    """A Recommender over clustered random unit vectors (no audio), exact FAISS indexes."""
    from encoders.base import l2_normalise
    from index.faiss_index import build_index

    rng = np.random.default_rng(seed)
    owner = np.repeat(np.arange(n_singers), songs_per_singer)
    names = np.array([f"s{i:04d}" for i in range(n_singers)])
    vecs, singer_vecs, indexes = {}, {}, {}
    for kind, d in (("timbre", 32), ("melody", 16)):
        centres = rng.standard_normal((n_singers, d)).astype(np.float32)
        vecs[kind] = l2_normalise(centres[owner] + 0.5 * rng.standard_normal((len(owner), d)).astype(np.float32))
        sums = np.zeros((n_singers, d), np.float32)
        np.add.at(sums, owner, vecs[kind])
        singer_vecs[kind] = l2_normalise(sums)
        indexes[kind] = build_index(vecs[kind], "Flat")
    songs = pd.DataFrame({"song_id": [f"{names[o]}/{i}" for i, o in enumerate(owner)], "singer": names[owner]})
    singers = pd.DataFrame({"singer": names, "n_songs": songs_per_singer, "group": np.arange(n_singers) % 3})
    map_df = pd.DataFrame({"kind": "song", "id": songs["song_id"], "singer": songs["singer"], "x": 0.0, "y": 0.0,
                           "cluster": 0})
    return Recommender(None, {}, songs, singers, map_df, vecs, singer_vecs, indexes, pd.DataFrame())


def test_large_catalogue_path_scores_exactly_and_keeps_the_best():
    """Above EXACT_SINGERS only candidates are scored (at most rescore_singers of them, chosen by singer
    vectors); each returned score must equal the exact one, and the top results must mostly agree."""
    rec = _vector_recommender(400, 4)
    queries = rec.singers["singer"].tolist()[:40]
    rec.exact_singers = len(rec.singers)  # the reference: every singer scored exactly
    exact = {q: rec.similar_singers(q, k=10, filters={"group": [0, 1]}) for q in queries}
    rec.exact_singers, rec.rescore_singers = 50, 30
    overlap, top1 = [], []
    for q in queries:
        approx = rec.similar_singers(q, k=10, filters={"group": [0, 1]})
        assert len(approx) == 10 and q not in set(approx["singer"]) and set(approx["group"]) <= {0, 1}
        ref = exact[q].set_index("singer")["score"]
        common = [s for s in approx["singer"] if s in ref.index]
        np.testing.assert_allclose(approx.set_index("singer").loc[common, "score"], ref[common], atol=1e-6)
        overlap.append(len(common) / 10)
        top1.append(approx["singer"][0] == exact[q]["singer"][0])
    assert np.mean(top1) >= 0.95 and np.mean(overlap) >= 0.8, (np.mean(top1), np.mean(overlap))


def test_song_queries_score_song_pairs(rec):
    """For a song (or clip) timbre and melody are averaged over the same best song matches, so the score
    formula holds exactly and the song, kept as a query with its singer, finds that singer first."""
    sid, singer = rec.songs.loc[5, ["song_id", "singer"]]
    res = rec.similar_singers(Song(sid, exclude_singer=False), k=3, timbre_weight=0.6)
    np.testing.assert_allclose(res["score"], 0.6 * res["timbre_score"] + 0.4 * res["melody_score"], atol=1e-6)
    assert res["singer"][0] == singer and res["match_song"][0] == sid
    assert singer not in set(rec.similar_singers(Song(sid), k=3)["singer"])
